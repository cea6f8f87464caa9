package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

func TestMedian(t *testing.T) {
	s := time.Second
	cases := []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{7 * s}, 7 * s},
		{[]time.Duration{9 * s, 1 * s, 5 * s}, 5 * s},
		{[]time.Duration{4 * s, 1 * s, 3 * s, 2 * s}, 2500 * time.Millisecond},
	}
	for _, c := range cases {
		in := fmt.Sprint(c.in)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%s) = %v, want %v", in, got, c.want)
		}
		if fmt.Sprint(c.in) != in {
			t.Errorf("median reordered its input: %s, was %s", fmt.Sprint(c.in), in)
		}
	}
}

func TestPairedRatios(t *testing.T) {
	s := time.Second
	got := pairedRatios([]time.Duration{4 * s, 3 * s, 6 * s}, []time.Duration{2 * s, 3 * s})
	if len(got) != 2 || got[0] != 2 || got[1] != 1 {
		t.Errorf("pairedRatios = %v, want [2 1]: one per run both have", got)
	}
	if got := pairedRatios([]time.Duration{s}, []time.Duration{0}); len(got) != 0 {
		t.Errorf("pairedRatios against a zero = %v, want none", got)
	}
	if got := ratiosList([]float64{1.234, 0.5}); got != "1.23, 0.50" {
		t.Errorf("ratiosList = %q", got)
	}
}

func TestFormat(t *testing.T) {
	if got := ratio(9*time.Second, 3*time.Second); got != "3.00x" {
		t.Errorf("ratio = %q, want 3.00x", got)
	}
	if got := ratio(time.Second, 0); got != "-" {
		t.Errorf("ratio by zero = %q, want -", got)
	}
	if got := secs(12340 * time.Millisecond); got != "12.3 s" {
		t.Errorf("secs = %q", got)
	}
	if got := runsList([]time.Duration{1500 * time.Millisecond, 2 * time.Second}); got != "1.5, 2.0" {
		t.Errorf("runsList = %q", got)
	}
}

func TestIPWatcher(t *testing.T) {
	var out bytes.Buffer
	w := newIPWatcher("fbb-pay1", &out)
	// Split across writes, another machine's line first, then ours twice.
	for _, s := range []string{
		"harness: fbb-pay10: address 10.213.9.5 after 1s\nharness: fbb-pa",
		"y1: address 10.213.4.77 after 1.3s\n",
		"harness: fbb-pay1: address 10.213.4.78 after 2s\n",
	} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ip := <-w.ip:
		if ip != "10.213.4.77" {
			t.Errorf("ip = %q, want 10.213.4.77", ip)
		}
	default:
		t.Fatal("no address handed over")
	}
	select {
	case ip := <-w.ip:
		t.Errorf("a second address was handed over: %q", ip)
	default:
	}
	if !bytes.Contains(out.Bytes(), []byte("fbb-pay10: address 10.213.9.5")) {
		t.Errorf("log not passed through: %q", out.String())
	}
}

func TestParseBlame(t *testing.T) {
	out := `-- Boot Record 01 --
     09.00000s (modules-final/config-scripts-user)

-- Boot Record 02 --
     07.12300s (modules-final/config-package-update-upgrade-install)
     02.51300s (modules-final/config-scripts-user)
     00.00100s (init-network/config-ssh)

2 boot records analyzed
`
	got := parseBlame(out)
	want := map[string]time.Duration{
		"modules-final/config-package-update-upgrade-install": 7123 * time.Millisecond,
		"modules-final/config-scripts-user":                   2513 * time.Millisecond,
		"init-network/config-ssh":                             time.Millisecond,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if d := got[k] - w; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
}

func TestParseDeploySteps(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name, out string
		want      []time.Duration
	}{
		{"flask, a hook: every unit at once", `1795829044.100000 fbb-pay1 wsgi-deploy[301]: deploy of app starts
1795829044.600000 fbb-pay1 wsgi-deploy[301]: release /srv/wsgi/releases/20261128T012800Z-abc
1795829044.700000 fbb-pay1 wsgi-deploy[301]: venv /srv/wsgi/releases/20261128T012800Z-abc/.venv
1795829044.750000 fbb-pay1 wsgi-deploy[301]: no requirements.txt in the release: nothing to install
1795829045.750000 fbb-pay1 wsgi-deploy[301]: units started
1795829046.000000 fbb-pay1 wsgi-deploy[301]: serving through NGINX: http://127.0.0.1:80/healthz answered 200
1795829047.600000 fbb-pay1 wsgi-deploy[301]: deployed /srv/wsgi/releases/20261128T012800Z-abc: 3 units healthy behind NGINX
`, []time.Duration{500 * ms, 100 * ms, 50 * ms, absent, 1000 * ms, 250 * ms, 1600 * ms}},
		{"django with requirements, the gate: the first unit, then the others", `1795829044.100000 h wsgi-deploy[301]: deploy of shop starts
1795829044.200000 h wsgi-deploy[301]: release /srv/wsgi/releases/x
1795829044.300000 h wsgi-deploy[301]: venv /srv/wsgi/releases/x/.venv
1795829044.350000 h wsgi-deploy[301]: installing requirements.txt from the image's wheelhouse /opt/wsgi/wheelhouse (offline)
1795829044.360000 h wsgi-deploy[301]: wsgi@1.service starting behind the gate
1795829047.300000 h wsgi-deploy[301]: requirements installed
1795829050.300000 h wsgi-deploy[301]: django migrate and collectstatic done
1795829050.400000 h wsgi-deploy[301]: first unit started: wsgi@1.service serves; the others start once NGINX answers
1795829050.600000 h wsgi-deploy[301]: serving through NGINX: http://127.0.0.1:80/healthz answered 200
1795829051.300000 h wsgi-deploy[301]: units started
1795829052.300000 h wsgi-deploy[301]: deployed /srv/wsgi/releases/x: 3 units healthy behind NGINX
`, []time.Duration{100 * ms, 100 * ms, 3000 * ms, 3000 * ms, 100 * ms, 200 * ms, 1700 * ms}},
	}
	for _, c := range cases {
		got, first, err := parseDeploySteps(c.out)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(got) != len(c.want) {
			t.Fatalf("%s: got %v, want %v", c.name, got, c.want)
		}
		if first != 1795829044.1 {
			t.Errorf("%s: first line at %f, want 1795829044.1", c.name, first)
		}
		for i := range c.want {
			if d := got[i] - c.want[i]; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("%s: step %d (%s) = %v, want %v", c.name, i, deploySteps[i].title, got[i], c.want[i])
			}
		}
	}
	for _, bad := range []string{
		"1795829044.1 h wsgi-deploy[1]: deploy of app starts\n",
		"1795829044.1 h wsgi-deploy[1]: release /x\n1795829045.1 h wsgi-deploy[1]: deployed /x\n",
	} {
		if _, _, err := parseDeploySteps(bad); err == nil {
			t.Errorf("an incomplete journal was accepted: %q", bad)
		}
	}
}

func TestCPU(t *testing.T) {
	got, err := parseCPULine("cpu  100 5 50 800 40 0 5 0 0 0\n")
	if err != nil || got.total != 1000 || got.idle != 840 {
		t.Errorf("parseCPULine = %+v, %v; want total 1000, idle 840", got, err)
	}
	if _, err := parseCPULine("cpu0 1 2 3 4 5"); err == nil {
		t.Error("a per-core line was taken for the total")
	}
	ms := time.Millisecond
	samples := []cpuSample{{100 * ms, 0.2}, {200 * ms, 1}, {300 * ms, 0.6}, {400 * ms, 0}}
	if b := busyBetween(samples, 100*ms, 300*ms); b != 0.8 {
		t.Errorf("busyBetween(100ms, 300ms] = %v, want 0.8", b)
	}
	if b := busyBetween(samples, time.Second, 2*time.Second); b != -1 {
		t.Errorf("busyBetween with no sample = %v, want -1", b)
	}
	if p := percent([]float64{0.5, 0.9, -1, 0.7}); p != "70 %" {
		t.Errorf("percent = %q, want the median 70 %%", p)
	}
}

func TestSampleCPU(t *testing.T) {
	start := time.Now()
	c := sampleCPU(context.Background(), start)
	time.Sleep(350 * time.Millisecond)
	samples := c.Stop()
	if len(samples) == 0 {
		t.Fatal("no sample of /proc/stat in 350 ms at one per 100 ms")
	}
	for _, s := range samples {
		if s.busy < 0 || s.busy > 1 || s.since <= 0 || s.since > time.Since(start) {
			t.Errorf("sample %+v: want a busy share in [0, 1] taken after the start", s)
		}
	}
	if again := c.Stop(); len(again) != len(samples) {
		t.Errorf("a second Stop returned %d samples, the first %d", len(again), len(samples))
	}
}

func TestParseStages(t *testing.T) {
	out := `{"v1": {"datasource": "DataSourceNoCloud", "init-local": {"errors": [], "finished": 1795829041.5, "recoverable_errors": {}, "start": 1795829041.25},
 "init": {"errors": [], "finished": 1795829043, "start": 1795829042}, "modules-config": {"finished": 1795829043.5, "start": 1795829043.25},
 "modules-final": {"finished": 1795829045, "start": 1795829044}, "stage": null}}`
	got, err := parseStages(out, 1795829040)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]stageSpan{
		"init-local": {1250 * time.Millisecond, 1500 * time.Millisecond}, "init": {2 * time.Second, 3 * time.Second},
		"modules-config": {3250 * time.Millisecond, 3500 * time.Millisecond}, "modules-final": {4 * time.Second, 5 * time.Second},
	}
	for k, w := range want {
		if g := got[k]; g.start-w.start > time.Millisecond || w.start-g.start > time.Millisecond || g.end-w.end > time.Millisecond || w.end-g.end > time.Millisecond {
			t.Errorf("%s = %v, want %v", k, g, w)
		}
	}
	// A stage still running (no finished) or missing is an error, not a zero.
	for _, bad := range []string{`{"v1": {"init-local": {"start": 1, "finished": null}}}`, `{"v1": {}}`, `not json`} {
		if _, err := parseStages(bad, 0); err == nil {
			t.Errorf("parseStages(%q) accepted it", bad)
		}
	}
}

func TestParseGateLog(t *testing.T) {
	const (
		booting  = "1795829044.500000 h gunicorn[40]: [2026-12-02 18:00:00 +0000] [40] [INFO] Booting worker with pid: 40\n"
		imported = "1795829045.100000 h gunicorn[40]: [2026-12-02 18:00:01 +0000] [40] [INFO] app imported in 0.60s; held by first boot's gate /run/wsgi-first-boot.gate until migrate and collectstatic are done\n"
		gone     = "1795829045.400000 h gunicorn[40]: [2026-12-02 18:00:01 +0000] [40] [INFO] first boot's gate gone after 0.30s: serving\n"
	)
	cases := []struct {
		name, out string
		want      gateLog
		fails     bool
	}{
		{"held, then serving", booting + imported + gone, gateLog{true, 1795829045.1, 1795829045.4}, false},
		{"imported after the gate was gone", booting, gateLog{}, false},
		{"held and never released", booting + imported, gateLog{}, true},
	}
	for _, c := range cases {
		got, err := parseGateLog(c.out)
		if (err != nil) != c.fails {
			t.Fatalf("%s: err = %v, want failure %v", c.name, err, c.fails)
		}
		if !c.fails && got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestGateMarksBaked keeps the marks parseGateLog looks for in the worker's lines that the image
// bakes.
func TestGateMarksBaked(t *testing.T) {
	s := image.Default()
	f := image.Render(s).File(s.GunicornConfig())
	if f == nil {
		t.Fatalf("no %s in the bundle", s.GunicornConfig())
	}
	for _, mark := range []string{gateHeldMark, gateGoneMark} {
		if !strings.Contains(string(f.Content), strings.TrimSpace(mark)) {
			t.Errorf("%s logs no %q", s.GunicornConfig(), mark)
		}
	}
}

func TestMigrateDone(t *testing.T) {
	ms := time.Millisecond
	django := sample{deployAt: 3 * time.Second, deploy: []time.Duration{100 * ms, 10 * ms, 5 * ms, 700 * ms, 100 * ms, 200 * ms, ms}}
	if got, want := migrateDone(django), 3815*ms; got != want {
		t.Errorf("migrateDone = %v, want %v", got, want)
	}
	flask := sample{deployAt: 3 * time.Second, deploy: []time.Duration{100 * ms, 10 * ms, 5 * ms, absent, 100 * ms, 200 * ms, ms}}
	if got := migrateDone(flask); got != absent {
		t.Errorf("migrateDone without a Django step = %v, want absent", got)
	}
}
