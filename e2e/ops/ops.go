// Package ops runs the operations a sysadmin performs on a running instance of the golden image
// (restarts, reloads, crashes, an NGINX reload, wsgi-ctl) each under a bounded wrk load, and
// says what the clients saw. The e2e test asserts on it; bench/stackbench prints it.
package ops

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// Op is one operation: Cmd runs in the machine At after the load starts; Cleanup (if any) runs
// after the load ends, to leave the machine as it was.
type Op struct {
	Name    string
	Cmd     string
	Cleanup string
	// ClosesIdleClients: the operation makes NGINX close its idle client keep-alive connections
	// (an NGINX reload: its old workers do so at once). A client that sends its next request on
	// one at that instant sees a read error, which no server setting prevents; those are
	// reported, not counted as failed requests. HTTP errors still are.
	ClosesIdleClients bool
	// ClosesSocket: the operation makes systemd close a unit's socket on purpose (a crash loop
	// ends at the start limit with the socket closed, and wsgi-ctl opens it anew). Every other
	// operation must leave the sockets systemd holds open: requests wait in their backlogs only
	// while they are, and a closed socket resets what was queued and refuses the retries.
	ClosesSocket bool
}

// crashLoop breaks unit 2 (its app cannot be imported) and restarts it: it crash-loops until it
// hits its start limit and systemd closes its socket.
const crashLoop = `mkdir -p /run/systemd/system/wsgi@2.service.d &&
printf '[Service]\nEnvironmentFile=/run/wsgi-ops-broken.env\n' > /run/systemd/system/wsgi@2.service.d/broken.conf &&
echo WSGI_APP=no_such_module:app > /run/wsgi-ops-broken.env && systemctl daemon-reload && systemctl restart wsgi@2.service`

const crashLoopCleanup = `rm -rf /run/systemd/system/wsgi@2.service.d /run/wsgi-ops-broken.env && systemctl daemon-reload && wsgi-ctl restart 2`

// All is every operation of issue 11's table, and wsgi-ctl's.
var All = []Op{
	{Name: "systemctl restart wsgi@1, @2, @3, 5 s apart", Cmd: "systemctl restart wsgi@1; sleep 5; systemctl restart wsgi@2; sleep 5; systemctl restart wsgi@3"},
	{Name: "systemctl restart wsgi@1, @2, @3, 1 s apart", Cmd: "systemctl restart wsgi@1; sleep 1; systemctl restart wsgi@2; sleep 1; systemctl restart wsgi@3"},
	{Name: "systemctl restart wsgi.target", Cmd: "systemctl restart wsgi.target"},
	{Name: "systemctl restart wsgi@1 wsgi@2 wsgi@3", Cmd: "systemctl restart wsgi@1 wsgi@2 wsgi@3"},
	{Name: "systemctl reload wsgi@1 wsgi@2 wsgi@3 (HUP)", Cmd: "systemctl reload wsgi@1 wsgi@2 wsgi@3"},
	{Name: "kill -9 of wsgi@2's Gunicorn master", Cmd: "kill -9 $(systemctl show -P MainPID wsgi@2.service)"},
	{Name: "crash loop of wsgi@2 until its start limit", Cmd: crashLoop, Cleanup: crashLoopCleanup, ClosesSocket: true},
	{Name: "systemctl reload nginx", Cmd: "systemctl reload nginx", ClosesIdleClients: true},
	{Name: "wsgi-ctl restart", Cmd: "wsgi-ctl restart"},
	{Name: "wsgi-ctl reload", Cmd: "wsgi-ctl reload"},
}

// SocketsCmd prints each socket unit of the three units with the time systemd last opened it
// (and its refusals): the output changes only when systemd closes and reopens a socket.
const SocketsCmd = "systemctl show -p Id -p ActiveState -p ActiveEnterTimestampMonotonic -p NRefused wsgi@1.socket wsgi@2.socket wsgi@3.socket"

// Load is the bounded load during an operation.
type Load struct {
	URL         string
	Connections int
	Threads     int
	Duration    time.Duration
	// At is when the operation starts, after the load does.
	At time.Duration
}

// Result is what wrk saw during one operation.
type Result struct {
	Requests      int
	RPS           float64
	Non2xx        int
	Connect, Read int
	Write, Tmo    int
	P50, P99, Max time.Duration
	// OpTook is how long the operation's command ran; OpOutput its output.
	OpTook   time.Duration
	OpOutput string
}

// Failed is the number of requests a client saw fail: an HTTP error or a request lost to a
// socket error or time-out.
func (r Result) Failed() int { return r.Non2xx + r.SocketErrors() }

// FailedFor is Failed, less the read errors op is known to cause (see Op.ClosesIdleClients).
func (r Result) FailedFor(op Op) int {
	if op.ClosesIdleClients {
		return r.Failed() - r.Read
	}
	return r.Failed()
}

// SocketErrors adds wrk's socket error counts.
func (r Result) SocketErrors() int { return r.Connect + r.Read + r.Write + r.Tmo }

// Run runs op under l and returns what the clients saw. An error means the operation or wrk
// itself failed, not that requests did.
func Run(ctx context.Context, m *harness.Machine, op Op, l Load) (Result, error) {
	if l.Threads == 0 {
		l.Threads = 2
	}
	type out struct {
		r   Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		r, err := Wrk(ctx, l)
		done <- out{r, err}
	}()
	select {
	case <-time.After(l.At):
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	start := time.Now()
	stdout, stderr, opErr := m.Exec(ctx, "sh", "-c", op.Cmd)
	took := time.Since(start)
	w := <-done
	if op.Cleanup != "" {
		if _, se, err := m.Exec(ctx, "sh", "-c", op.Cleanup); err != nil {
			return w.r, fmt.Errorf("%s: cleanup: %w: %s", op.Name, err, se)
		}
	}
	if opErr != nil {
		return w.r, fmt.Errorf("%s: %w: %s", op.Name, opErr, stderr)
	}
	if w.err != nil {
		return w.r, w.err
	}
	w.r.OpTook, w.r.OpOutput = took, strings.TrimSpace(stdout+stderr)
	return w.r, nil
}

// Wrk runs one wrk load (--latency) and parses its report.
func Wrk(ctx context.Context, l Load) (Result, error) {
	if l.Threads == 0 {
		l.Threads = 2
	}
	args := []string{fmt.Sprintf("-t%d", l.Threads), fmt.Sprintf("-c%d", l.Connections), "-d" + l.Duration.String(), "--latency", "--timeout", "10s", l.URL}
	ctx, cancel := context.WithTimeout(ctx, l.Duration+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return ParseWrk(string(out))
}

var (
	rpsRe      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	totalRe    = regexp.MustCompile(`([0-9]+) requests in`)
	latencyRe  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	maxRe      = regexp.MustCompile(`(?m)^\s+Latency\s+\S+\s+\S+\s+([0-9.]+)(us|ms|s|m)\s`)
	non2xxRe   = regexp.MustCompile(`Non-2xx or 3xx responses:\s+([0-9]+)`)
	sockErrsRe = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	units      = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}
)

// ParseWrk reads wrk's report (run with --latency).
func ParseWrk(out string) (Result, error) {
	var r Result
	m := rpsRe.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := totalRe.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.Atoi(m[1])
	}
	for _, m := range latencyRe.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		d := time.Duration(v * float64(units[m[3]]))
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if r.Requests == 0 && totalRe.MatchString(out) {
		// Nothing completed within the run (a setup far past its capacity): 0 req/s is the
		// measurement, not a parse failure.
		return r, nil
	}
	if r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("no latency distribution in wrk output (run it with --latency):\n%s", out)
	}
	if m := maxRe.FindStringSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		r.Max = time.Duration(v * float64(units[m[2]]))
	}
	if m := non2xxRe.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.Atoi(m[1])
	}
	if m := sockErrsRe.FindStringSubmatch(out); m != nil {
		n := make([]int, 4)
		for i, s := range m[1:] {
			n[i], _ = strconv.Atoi(s)
		}
		r.Connect, r.Read, r.Write, r.Tmo = n[0], n[1], n[2], n[3]
	}
	return r, nil
}

// MS formats a latency for the tables.
func MS(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return strings.TrimSuffix(strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64), ".0") + " ms"
}

// LoadAvg is the machine's 1-minute load average and runnable processes, from /proc/loadavg,
// to state what else ran during a measurement.
func LoadAvg() string {
	out, err := exec.Command("cat", "/proc/loadavg").Output()
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(out))
	if len(f) < 4 {
		return strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("load average %s (1 min) %s (5 min), runnable/total %s", f[0], f[1], f[3])
}
