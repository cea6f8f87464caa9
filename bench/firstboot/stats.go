package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
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

// blameRE matches a line of `cloud-init analyze blame`: "     02.51300s (modules-final/config-scripts-user)".
var blameRE = regexp.MustCompile(`(?m)^\s*([0-9]+\.[0-9]+)s \(([^)]+)\)\s*$`)

// parseBlame reads the last boot record of `cloud-init analyze blame` (records are in boot
// order): module -> time.
func parseBlame(out string) map[string]time.Duration {
	if i := strings.LastIndex(out, "-- Boot Record "); i >= 0 {
		out = out[i:]
	}
	r := map[string]time.Duration{}
	for _, m := range blameRE.FindAllStringSubmatch(out, -1) {
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		r[m[2]] = time.Duration(f * float64(time.Second))
	}
	return r
}

// deploySteps are the spans between the deploy script's journal lines (internal/image/files/
// deploy.sh.tmpl): each step ends at the line whose text starts with its marker.
var deploySteps = []struct{ title, from, to string }{
	{"preflight, environment, fetch, verify, unpack the release", "deploy of ", "release "},
	{"python -m venv for the release (no requirements.txt in the app)", "release ", "no requirements.txt"},
	{"enable the sockets, start the units, reload NGINX, health checks", "no requirements.txt", "deployed "},
}

// parseDeploySteps reads `journalctl -t wsgi-deploy -o short-unix` ("1795829044.123456 host
// wsgi-deploy[12]: text") and returns the length of each of deploySteps.
func parseDeploySteps(out string) ([]time.Duration, error) {
	at := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		ts, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		_, text, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		for _, st := range deploySteps {
			for _, mark := range []string{st.from, st.to} {
				if _, seen := at[mark]; !seen && strings.HasPrefix(text, mark) {
					at[mark] = ts
				}
			}
		}
	}
	var ds []time.Duration
	for _, st := range deploySteps {
		a, okA := at[st.from]
		b, okB := at[st.to]
		if !okA || !okB {
			return nil, fmt.Errorf("the deploy journal lacks %q or %q:\n%s", st.from, st.to, out)
		}
		ds = append(ds, time.Duration((b-a)*float64(time.Second)))
	}
	return ds, nil
}
