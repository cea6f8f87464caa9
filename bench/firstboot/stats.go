package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sync"
	"time"
)

// median of ds; the mean of the middle two for an even count. Zero for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// secs formats a duration as seconds with one decimal, the precision a 100 ms poll gives.
func secs(d time.Duration) string {
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// ratio formats a/b as "2.35x"; "-" when b is zero.
func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

// runsList formats every run's figure, in run order.
func runsList(ds []time.Duration) string {
	var b bytes.Buffer
	for i, d := range ds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%.1f", d.Seconds())
	}
	return b.String()
}

// addressRE matches the harness's progress line that says a machine got its address, which
// Boot prints as soon as DHCP answered, long before it returns at cloud-init done.
var addressRE = regexp.MustCompile(`^harness: ([a-z0-9-]+): address ([0-9.]+) after `)

// ipWatcher passes the harness's log through to out and hands over the machine's address the
// moment the harness logs it, so the host can poll HTTP while Boot is still waiting.
type ipWatcher struct {
	name string
	out  io.Writer
	ip   chan string

	mu   sync.Mutex
	buf  []byte
	sent bool
}

func newIPWatcher(name string, out io.Writer) *ipWatcher {
	return &ipWatcher{name: name, out: out, ip: make(chan string, 1)}
}

func (w *ipWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if m := addressRE.FindStringSubmatch(line); m != nil && m[1] == w.name && !w.sent {
			w.sent = true
			w.ip <- m[2]
		}
	}
	if w.out == nil {
		return len(p), nil
	}
	return w.out.Write(p)
}
