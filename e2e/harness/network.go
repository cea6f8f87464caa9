package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// StateDir holds the harness's host-wide locks and the state files from
// which a later run reaps what a dead test process left behind.
var StateDir = "/run/wsgi-e2e"

// Each machine gets 10.213.N.0/24 with N from 1 to 254, the host at .1.
// A flock on StateDir/net-N.lock, held while the machine lives, keeps N
// unique across processes; the kernel drops it when its holder dies.
const subnetPrefix = "10.213."

// hostNet is the host side of one machine's veth link.
type hostNet struct {
	index    int
	subnet   netip.Prefix
	gateway  netip.Addr
	lock     *os.File
	ifname   string
	table    string
	leases   string
	dnsmasq  *exec.Cmd
	dnsDone  chan struct{}
	forward  bool // this machine turned ip_forward on
	imdsPort int  // the machine's IMDS on 127.0.0.1
	isReady  bool // rules written; guarded by pubMu
}

// ready reports whether setup has written the machine's nft rules. The
// caller holds pubMu.
func (h *hostNet) ready() bool { return h.isReady }

// ifName is the host side of nspawn's --network-veth link.
func ifName(machine string) string { return "ve-" + machine }

// nftTable is the machine's own nft table: deleting it removes exactly
// the rules this machine added and nothing of anyone else's.
func nftTable(machine string) string {
	return "wsgi_e2e_" + strings.ReplaceAll(machine, "-", "_")
}

// allocSubnet takes the first free 10.213.N.0/24: not locked by another
// machine and not overlapping any address already on the host.
func allocSubnet(machine, workDir string) (*hostNet, error) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("subnet: %w", err)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("subnet: %w", err)
	}
	for n := 1; n <= 254; n++ {
		gw := netip.MustParseAddr(fmt.Sprintf("%s%d.1", subnetPrefix, n))
		if hostUses(addrs, gw) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(StateDir, fmt.Sprintf("net-%d.lock", n)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("subnet: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		return &hostNet{
			index:   n,
			subnet:  netip.PrefixFrom(gw, 24).Masked(),
			gateway: gw,
			lock:    f,
			ifname:  ifName(machine),
			table:   nftTable(machine),
			leases:  filepath.Join(workDir, "dnsmasq.leases"),
		}, nil
	}
	return nil, errors.New("subnet: all of 10.213.1-254.0/24 are in use")
}

func hostUses(addrs []net.Addr, ip netip.Addr) bool {
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.Contains(ip.AsSlice()) {
			return true
		}
	}
	return false
}

// setup configures the host side once nspawn has made the link: address,
// NAT to the outside for apt, and DHCP/DNS from a dnsmasq of its own.
func (h *hostNet) setup(ctx context.Context, workDir string, alive func() bool) error {
	if err := waitLink(ctx, h.ifname, alive); err != nil {
		return err
	}
	if _, err := run(ctx, "ip", "addr", "add", h.gateway.String()+"/24", "dev", h.ifname); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if _, err := run(ctx, "ip", "link", "set", h.ifname, "up"); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	// DNAT to 127.0.0.1 is dropped as martian unless the link allows
	// loopback destinations; the setting goes with the link.
	if err := os.WriteFile(fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/route_localnet", h.ifname), []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("network: route_localnet: %w", err)
	}
	pubMu.Lock()
	defer pubMu.Unlock()
	if err := nftApply(ctx, h.rules(published)); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	h.isReady = true
	if err := h.enableForward(ctx); err != nil {
		return err
	}
	return h.startDnsmasq(workDir)
}

// privateDests are never forwarded from a machine: its only way out is to
// Debian's mirror, and a rewrite that did not happen (ServiceAddr,
// MetadataAddr) must not turn into traffic to a private network.
const privateDests = "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, 100.64.0.0/10"

// rules is the machine's own nft table: the instance metadata address and
// the published services rewritten to the host's loopback; no forwarding
// to private ranges; NAT for the rest (apt reaching the mirror).
func (h *hostNet) rules(ports []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", h.table)
	fmt.Fprintf(&b, "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
	if h.imdsPort > 0 {
		fmt.Fprintf(&b, "\t\tiifname %q ip daddr %s tcp dport 80 dnat to 127.0.0.1:%d\n", h.ifname, MetadataAddr, h.imdsPort)
	}
	for _, p := range ports {
		b.WriteString(h.publishRule(p) + "\n")
	}
	fmt.Fprintf(&b, "\t}\n")
	fmt.Fprintf(&b, "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname %q ip daddr { %s } reject\n\t}\n", h.ifname, privateDests)
	fmt.Fprintf(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
	fmt.Fprintf(&b, "\t\tip saddr %s ip daddr != %s masquerade\n\t}\n}\n", h.subnet, h.subnet)
	return b.String()
}

func (h *hostNet) publishRule(port int) string {
	return fmt.Sprintf("\t\tiifname %q ip daddr %s tcp dport %d dnat to 127.0.0.1:%d", h.ifname, ServiceAddr, port, port)
}

// publish adds one published port to a machine whose rules are written.
// The caller holds pubMu.
func (h *hostNet) publish(ctx context.Context, port int) error {
	return nftApply(ctx, fmt.Sprintf("add rule ip %s prerouting %s\n", h.table, strings.TrimSpace(h.publishRule(port))))
}

func nftApply(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s\n%s", err, out, script)
	}
	return nil
}

func waitLink(ctx context.Context, name string, alive func() bool) error {
	for {
		if _, err := net.InterfaceByName(name); err == nil {
			return nil
		}
		if !alive() {
			return fmt.Errorf("network: systemd-nspawn exited before it made %s", name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("network: waiting for link %s: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startDnsmasq serves DHCP and DNS on the machine's link only. Its lease
// file is new for every machine: a stale lease blocks the new MAC and costs
// 120 s of networkd-wait-online. --no-ping: with a fresh lease file dnsmasq
// would otherwise drop the first request and the guest retry ~3 s later.
func (h *hostNet) startDnsmasq(workDir string) error {
	if err := os.WriteFile(h.leases, nil, 0o644); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	first := h.subnet.Addr().Next().Next() // .2
	args := []string{
		"--keep-in-foreground",
		"--conf-file=/dev/null",
		"--no-hosts",
		"--user=root",
		"--pid-file=",
		"--interface=" + h.ifname,
		"--except-interface=lo",
		"--bind-interfaces",
		"--no-ping",
		fmt.Sprintf("--dhcp-range=%s,%s%d.254,255.255.255.0,12h", first, subnetPrefix, h.index),
		"--dhcp-leasefile=" + h.leases,
		"--dhcp-option=option:router," + h.gateway.String(),
		"--dhcp-option=option:dns-server," + h.gateway.String(),
		"--log-facility=" + filepath.Join(workDir, "dnsmasq.log"),
		"--log-dhcp",
	}
	out, err := os.Create(filepath.Join(workDir, "dnsmasq.out"))
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer out.Close()
	cmd := exec.Command("dnsmasq", args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("network: dnsmasq: %w", err)
	}
	h.dnsmasq = cmd
	h.dnsDone = make(chan struct{})
	go func() { _ = cmd.Wait(); close(h.dnsDone) }()
	return nil
}

// lease returns the address dnsmasq handed out, if any yet. The lease file
// is this machine's own, so its one lease is the machine's.
func (h *hostNet) lease() string {
	b, err := os.ReadFile(h.leases)
	if err != nil {
		return ""
	}
	return parseLease(string(b))
}

// parseLease reads dnsmasq's lease format: expiry mac ip hostname client-id.
func parseLease(s string) string {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 {
			if ip, err := netip.ParseAddr(f[2]); err == nil && ip.Is4() {
				return ip.String()
			}
		}
	}
	return ""
}

// enableForward turns on IPv4 forwarding if it is off and records that a
// harness did it, so the last machine to go can turn it off again.
func (h *hostNet) enableForward(ctx context.Context) error {
	unlock, err := lockFile(ctx, filepath.Join(StateDir, "global.lock"))
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer unlock()
	cur, err := os.ReadFile(forwardPath)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(forwardMarker(), []byte("set by the wsgi e2e harness\n"), 0o644); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := os.WriteFile(forwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("network: ip_forward: %w", err)
	}
	h.forward = true
	return nil
}

const forwardPath = "/proc/sys/net/ipv4/ip_forward"

func forwardMarker() string { return filepath.Join(StateDir, "ip_forward.set") }

// restoreForward turns ip_forward off again if a harness turned it on and
// no machine, in any process, still holds a subnet. except is the caller's
// own subnet lock index (0 for none), which it is about to release.
func restoreForward(except int) error {
	unlock, err := lockFile(context.Background(), filepath.Join(StateDir, "global.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(forwardMarker()); err != nil {
		return nil // not ours to restore
	}
	if subnetsInUse(except) {
		return nil
	}
	if err := os.WriteFile(forwardPath, []byte("0\n"), 0o644); err != nil {
		return fmt.Errorf("ip_forward: %w", err)
	}
	return os.Remove(forwardMarker())
}

// subnetsInUse reports whether any subnet lock other than except is held.
func subnetsInUse(except int) bool {
	locks, _ := filepath.Glob(filepath.Join(StateDir, "net-*.lock"))
	for _, p := range locks {
		if p == filepath.Join(StateDir, fmt.Sprintf("net-%d.lock", except)) {
			continue
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close() // also releases the probe's lock, if it got one
		if err != nil {
			return true
		}
	}
	return false
}

// teardown undoes setup, in reverse, and releases the subnet. It is called
// after the container is gone; every step tolerates "already gone".
func (h *hostNet) teardown(log io.Writer) error {
	var errs []error
	if h.dnsmasq != nil && h.dnsmasq.Process != nil {
		_ = h.dnsmasq.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.dnsDone:
		case <-time.After(5 * time.Second):
			_ = h.dnsmasq.Process.Kill()
			<-h.dnsDone
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if tableExists(ctx, h.table) {
		if _, err := run(ctx, "nft", "delete", "table", "ip", h.table); err != nil {
			errs = append(errs, err)
		}
	}
	// The veth goes with the container's namespace; this only matters
	// if nspawn could not be stopped.
	if _, err := net.InterfaceByName(h.ifname); err == nil {
		if _, err := run(ctx, "ip", "link", "del", h.ifname); err != nil {
			errs = append(errs, err)
		}
	}
	if err := restoreForward(h.index); err != nil {
		errs = append(errs, err)
	}
	if h.lock != nil {
		h.lock.Close()
		h.lock = nil
	}
	if len(errs) > 0 {
		logf(log, "network teardown of %s: %v", h.ifname, errors.Join(errs...))
	}
	return errors.Join(errs...)
}

func tableExists(ctx context.Context, table string) bool {
	return exec.CommandContext(ctx, "nft", "list", "table", "ip", table).Run() == nil
}
