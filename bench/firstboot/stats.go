package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// median of ds; the mean of the middle two for an even count. Zero for none.
func median[T ~int64 | ~float64](ds []T) T {
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

// pairedRatios are a[i]/b[i], run by run, as far as both have runs: a boot against the boot of
// the same run it is compared with, which moves the same way between runs far more than the
// medians of all runs do.
func pairedRatios(a, b []time.Duration) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, float64(a[i])/float64(b[i]))
		}
	}
	return out
}

// ratiosList formats ratios with two decimals, in run order.
func ratiosList(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%.2f", r)
	}
	return strings.Join(parts, ", ")
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

// cloudInitStages are cloud-init's boot stages in their order, as /run/cloud-init/status.json
// names them.
var cloudInitStages = []string{"init-local", "init", "modules-config", "modules-final"}

// uptime is the first field of /proc/uptime: seconds since the kernel booted.
func uptime() (float64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f, _, _ := strings.Cut(string(b), " ")
	return strconv.ParseFloat(f, 64)
}

// stageSpan is when a stage started and finished, from the clock's start.
type stageSpan struct{ start, end time.Duration }

// parseStages reads /run/cloud-init/status.json (its v1 stages carry start and finished as the
// kernel's uptime, /proc/uptime) and returns each stage of cloudInitStages from the clock's start
// at from (uptime seconds; the machine, a container, shares the host's kernel).
func parseStages(out string, from float64) (map[string]stageSpan, error) {
	var st struct {
		V1 map[string]json.RawMessage `json:"v1"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status.json: %w", err)
	}
	at := func(t float64) time.Duration { return time.Duration((t - from) * float64(time.Second)) }
	r := map[string]stageSpan{}
	for _, name := range cloudInitStages {
		var times struct {
			Start    *float64 `json:"start"`
			Finished *float64 `json:"finished"`
		}
		if raw, ok := st.V1[name]; !ok || json.Unmarshal(raw, &times) != nil || times.Start == nil || times.Finished == nil {
			return nil, fmt.Errorf("status.json has no start and finished for stage %s: %s", name, out)
		}
		r[name] = stageSpan{at(*times.Start), at(*times.Finished)}
	}
	return r, nil
}

// deploySteps are the spans between the deploy script's journal lines (internal/image/files/
// deploy.sh.tmpl): each step ends at the first line whose text starts with one of its marks and
// begins where the step before it that the journal has ended (at "deploy of " for the first).
// An optional step the journal lacks (Django's own work in an app of another framework) has no
// time.
var deploySteps = []deployStep{
	{"preflight, environment, fetch, verify, unpack the release", []string{"release "}, false},
	{"the release venv (python -m venv, or the image's baked venv)", []string{"venv "}, false},
	{"requirements (pip, or nothing to install)", []string{"requirements ", "no "}, false},
	{"Django migrate + collectstatic, one process (the app's own work; a plain boot has none; with the gate, the first unit starts meanwhile)", []string{djangoMark}, true},
	{"hooks, the units up (with the gate: the first unit, then the gate removed; without: every unit)", []string{"first unit started", "units started"}, false},
	{"reload NGINX, the health check through NGINX", []string{"serving through NGINX"}, false},
	{"the other units (with the gate), the health check on every unit", []string{"deployed "}, false},
}

// migrateDone is when the deploy's Django step ended (migrate and collectstatic done), from
// the clock's start; absent for a deploy without one.
func migrateDone(s sample) time.Duration {
	at := s.deployAt
	for i, st := range deploySteps {
		if s.deploy[i] == absent {
			continue
		}
		at += s.deploy[i]
		if slices.Contains(st.marks, djangoMark) {
			return at
		}
	}
	return absent
}

type deployStep struct {
	title    string
	marks    []string
	optional bool
}

// djangoMark is the mark of the line that ends the deploy's Django step.
const djangoMark = "django "

// deployStart is the mark of the deploy's first line.
const deployStart = "deploy of "

// absent is the time of an optional step the journal lacks.
const absent = time.Duration(-1)

// journalLine is one line of `journalctl -o short-unix` ("1795829044.123456 host
// wsgi-deploy[12]: text"): its Unix time and its text.
type journalLine struct {
	at   float64
	text string
}

func journalLines(out string) []journalLine {
	var ls []journalLine
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		ts, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		if _, text, ok := strings.Cut(line, ": "); ok {
			ls = append(ls, journalLine{ts, text})
		}
	}
	return ls
}

// gateLog is what the first unit's worker logged behind first boot's gate (post_worker_init in
// gunicorn.conf.py): when it had imported the app and when the gate let it serve, as Unix times.
// A worker that imported the app after the gate was gone logs neither: held is false.
type gateLog struct {
	held               bool
	imported, released float64
}

// The marks of the worker's two lines.
const (
	gateHeldMark = "; held by first boot's gate "
	gateGoneMark = "first boot's gate gone after "
)

// parseGateLog reads `journalctl -u wsgi@1.service -o short-unix`; a held worker's lines must be
// both there.
func parseGateLog(out string) (gateLog, error) {
	var g gateLog
	var gone bool
	for _, l := range journalLines(out) {
		switch {
		case !g.held && strings.Contains(l.text, gateHeldMark):
			g.held, g.imported = true, l.at
		case g.held && !gone && strings.Contains(l.text, gateGoneMark):
			gone, g.released = true, l.at
		}
	}
	if g.held && !gone {
		return g, fmt.Errorf("the first unit's worker was held by the gate and never logged %q:\n%s", gateGoneMark, out)
	}
	return g, nil
}

// parseDeploySteps reads `journalctl -t wsgi-deploy -o short-unix` ("1795829044.123456 host
// wsgi-deploy[12]: text") and returns the length of each of deploySteps, absent for an optional
// step the journal lacks, and the Unix time of the deploy's first line.
func parseDeploySteps(out string) ([]time.Duration, float64, error) {
	at := map[string]float64{}
	var marks []string
	marks = append(marks, deployStart)
	for _, st := range deploySteps {
		marks = append(marks, st.marks...)
	}
	for _, l := range journalLines(out) {
		for _, mark := range marks {
			if _, seen := at[mark]; !seen && strings.HasPrefix(l.text, mark) {
				at[mark] = l.at
			}
		}
	}
	from, ok := at[deployStart]
	if !ok {
		return nil, 0, fmt.Errorf("the deploy journal lacks %q:\n%s", deployStart, out)
	}
	first := from
	var ds []time.Duration
	for _, st := range deploySteps {
		end, found := 0.0, false
		for _, m := range st.marks {
			if t, ok := at[m]; ok {
				end, found = t, true
				break
			}
		}
		switch {
		case found:
			ds = append(ds, time.Duration((end-from)*float64(time.Second)))
			from = end
		case st.optional:
			ds = append(ds, absent)
		default:
			return nil, 0, fmt.Errorf("the deploy journal lacks a line starting with %q:\n%s", strings.Join(st.marks, `" or "`), out)
		}
	}
	return ds, first, nil
}

// figures is one figure of each run.
func figures[T any](runs []sample, f func(sample) T) []T {
	var out []T
	for _, s := range runs {
		out = append(out, f(s))
	}
	return out
}

// picker returns, for a variant's key, one figure of each of its runs.
func picker(samples map[string][]sample) func(key string, f func(sample) time.Duration) []time.Duration {
	return func(key string, f func(sample) time.Duration) []time.Duration { return figures(samples[key], f) }
}

// The figures of a run that the reports take medians of.
func byFirst200(s sample) time.Duration  { return s.first200 }
func byCloudInit(s sample) time.Duration { return s.cloudInit }
func byRunning(s sample) time.Duration   { return s.running }
