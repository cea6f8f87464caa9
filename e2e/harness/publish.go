package harness

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// ServiceAddr is where a machine reaches the servers a test publishes with
// Publish. It is on no interface: 10.213.0.0/24 is never given to a machine,
// and each machine's nft table rewrites its traffic to ServiceAddr:PORT into
// 127.0.0.1:PORT on the host (DNAT, with route_localnet on the machine's
// veth), so one URL works from every machine and nothing leaves the host.
const ServiceAddr = subnetPrefix + "0.1"

var (
	pubMu     sync.Mutex
	published []int // loopback TCP ports, in the order published
)

// Publish makes a server on the host's loopback (http://127.0.0.1:PORT/…,
// e.g. moto's URL) reachable from every machine of this process, running
// or booted later, and returns the URL the machines use for it: the same
// URL with its host replaced by ServiceAddr. Only loopback servers can be
// published, so a machine's requests stay on this host.
func Publish(loopbackURL string) (string, error) {
	u, err := url.Parse(loopbackURL)
	if err != nil {
		return "", fmt.Errorf("publish %q: %w", loopbackURL, err)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return "", fmt.Errorf("publish %q: host must be an IPv4 loopback address such as 127.0.0.1", loopbackURL)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil || port < 1 || port > 65535 {
		return "", fmt.Errorf("publish %q: needs an explicit port", loopbackURL)
	}
	if ip.String() != "127.0.0.1" {
		return "", fmt.Errorf("publish %q: the DNAT goes to 127.0.0.1; listen there", loopbackURL)
	}
	// Held throughout: a machine's setup reads the list and writes its
	// rules under the same lock, so no machine misses a port.
	pubMu.Lock()
	defer pubMu.Unlock()
	if !slices.Contains(published, port) {
		published = append(published, port)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, m := range liveMachines() {
			m.mu.Lock()
			hn := m.net
			m.mu.Unlock()
			if hn == nil || !hn.ready() {
				continue // its setup reads the list itself
			}
			if err := hn.publish(ctx, port); err != nil {
				return "", fmt.Errorf("publish %q on %s: %w", loopbackURL, m.name, err)
			}
		}
	}
	u.Host = net.JoinHostPort(ServiceAddr, strconv.Itoa(port))
	return u.String(), nil
}
