// Command stackbench measures the golden image on a running instance: every operation a
// sysadmin runs (restarts, reloads, a crash loop, kill -9, an NGINX reload, wsgi-ctl) under a
// bounded load, with what the clients saw, for the default and the cpu profile; and serving
// throughput and latency at several concurrencies side by side in the same machine and run with
// an Elastic Beanstalk-style setup (with and without an upstream keepalive pool) and a
// hand-tuned sync setup (three plain units, one sync worker each).
//
// It needs root and the e2e host tools (make deps). Run it with `make bench-stack`; it prints
// Markdown tables for docs/BENCHMARKS.md, each with the machine's load average during its run.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	goldenimg "github.com/wsgi-ami/packer-plugin-wsgi/bench/internal/golden"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/ops"
)

//go:embed benchapp.py
var benchApp string

// ebUnit is the Elastic Beanstalk Python platform's default process: `gunicorn --bind :8000
// --workers 3 --threads 2`, behind NGINX.
const ebUnit = `[Unit]
Description=EB-style Gunicorn for comparison
[Service]
User=wsgi
Group=wsgi
WorkingDirectory=/srv/wsgi/current
ExecStart=/opt/wsgi/venv/bin/python -m gunicorn --bind 127.0.0.1:8000 --workers 3 --threads 2 --worker-class gthread ${APP}
EnvironmentFile=/etc/wsgi/bench.env
`

// handUnit is the hand-tuned sync setup: plain units without a sandbox, one sync worker each,
// on their own UNIX sockets.
const handUnit = `[Unit]
Description=hand-tuned sync Gunicorn %i for comparison
[Service]
User=wsgi
Group=wsgi
WorkingDirectory=/srv/wsgi/current
RuntimeDirectory=hand-%i
ExecStart=/opt/wsgi/venv/bin/python -m gunicorn --bind unix:/run/hand-%i/app.sock --workers 1 --worker-class sync ${APP}
EnvironmentFile=/etc/wsgi/bench.env
`

// benchSites: 8080 is EB-style as it was measured before (a new TCP connection to Gunicorn per
// request), 8082 the same Gunicorn through an upstream keepalive pool, 8081 the hand-tuned units.
// They log every request as the stack's site does (the http-level buffered access_log of the
// stack's nginx.conf): a production setup logs, and a comparison without it measured the log.
const benchSites = `server {
    listen 8080;
    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
upstream eb_keepalive {
    server 127.0.0.1:8000;
    keepalive 64;
}
server {
    listen 8082;
    location / {
        proxy_pass http://eb_keepalive;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
    }
}
upstream hand_sync {
    least_conn;
    server unix:/run/hand-1/app.sock;
    server unix:/run/hand-2/app.sock;
    server unix:/run/hand-3/app.sock;
    keepalive 16;
}
server {
    listen 8081;
    location / {
        proxy_pass http://hand_sync;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
    }
}
`

type options struct {
	golden   string
	duration time.Duration
	conns    string
	rounds   int
	skipOps  bool
	skipServ bool
}

func main() {
	var o options
	flag.StringVar(&o.golden, "golden", "", "golden image tarball (default: build one with packer and wsgi-stack)")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "length of each serving wrk run")
	flag.StringVar(&o.conns, "connections", "16,64,256,2000", "wrk connections of the serving runs")
	flag.IntVar(&o.rounds, "rounds", 2, "serving rounds; each cell shows the mean req/s and the worst p50 and p99 of its rounds")
	flag.BoolVar(&o.skipOps, "skip-operations", false, "skip the operations table")
	flag.BoolVar(&o.skipServ, "skip-serving", false, "skip the serving table")
	flag.Parse()
	// Ctrl-C and SIGTERM cancel the run, so that its defers remove the machines and files.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stackbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (systemd-nspawn, ip, nft)")
	}
	defer harness.CloseAll()
	log := os.Stderr
	repo, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "stackbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	golden := o.golden
	if golden == "" {
		start := time.Now()
		base, err := harness.BaseImage(ctx, harness.DefaultRelease, log)
		if err != nil {
			return err
		}
		golden = filepath.Join(work, "golden.tar.zst")
		if err := goldenimg.Bake(ctx, goldenimg.Options{Repo: repo, Base: base, Work: work, Out: golden, Name: "bench-bake", Log: log}); err != nil {
			return err
		}
		fmt.Printf("packer build with wsgi-stack on the local machine: %s\n\n", time.Since(start).Round(100*time.Millisecond))
	}
	m, err := harness.Boot(ctx, harness.BootOptions{Image: golden, InstanceID: "i-bench", Log: log})
	if err != nil {
		return err
	}
	defer m.Close()
	if err := setup(ctx, m); err != nil {
		return err
	}
	profiles, err := gunicornProfiles()
	if err != nil {
		return err
	}
	if !o.skipServ {
		if err := serving(ctx, o, m, profiles); err != nil {
			return err
		}
	}
	if !o.skipOps {
		return operations(ctx, m, profiles[:2])
	}
	return nil
}

// setup places a release of the bench app the way first boot does, and the comparison setups.
func setup(ctx context.Context, m *harness.Machine) error {
	root := m.Root()
	rel := "/srv/wsgi/releases/20260101T000000Z-bench"
	if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
		return err
	}
	files := map[string]string{
		rel + "/benchapp.py":                      benchApp,
		"/etc/systemd/system/eb-gunicorn.service": ebUnit,
		"/etc/systemd/system/hand@.service":       handUnit,
		"/etc/nginx/conf.d/bench.conf":            benchSites,
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return execAll(ctx, m,
		"ln -sfn "+rel+" /srv/wsgi/current",
		"systemctl daemon-reload",
		"systemctl enable --now wsgi.target",
		"systemctl reload nginx",
	)
}

// useApp switches every setup to one callable of the bench app and one stack profile, restarts
// them and warms them up, so no measurement includes a Gunicorn start.
func useApp(ctx context.Context, m *harness.Machine, app string, p profile) error {
	root := m.Root()
	if err := os.WriteFile(filepath.Join(root, "etc/wsgi/gunicorn.conf.py"), p.conf, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/wsgi/wsgi.env"), []byte("WSGI_APP=benchapp:"+app+"\n"), 0o640); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/wsgi/bench.env"), []byte("APP=benchapp:"+app+"\n"), 0o644); err != nil {
		return err
	}
	if err := execAll(ctx, m,
		"systemctl restart eb-gunicorn.service hand@1 hand@2 hand@3",
		"wsgi-ctl restart",
	); err != nil {
		return err
	}
	for _, s := range []string{"default", "eb", "ebka", "hand"} {
		if _, err := ops.Wrk(ctx, ops.Load{URL: target(m, s), Connections: 32, Duration: 2 * time.Second}); err != nil {
			return fmt.Errorf("warm-up of %s: %w\n%s", s, err, diagnose(ctx, m))
		}
	}
	return nil
}

// target is the URL of a setup: the stack (any profile) on 80, the comparisons beside it.
func target(m *harness.Machine, setup string) string {
	port := map[string]string{"eb": ":8080", "hand": ":8081", "ebka": ":8082"}[setup]
	return "http://" + m.IP() + port + "/"
}

func serving(ctx context.Context, o options, m *harness.Machine, profiles []profile) error {
	var conns []int
	for _, c := range strings.Split(o.conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil {
			return fmt.Errorf("-connections: %q is not a number", c)
		}
		conns = append(conns, n)
	}
	fmt.Printf("Serving: wrk -t2 -d%s --latency from the host into the machine, each setup in turn at each concurrency.\n\n", o.duration)
	for _, s := range append(profileNames(profiles), "eb", "ebka", "hand") {
		fmt.Printf("- %s: %s\n", s, setupTitle(s))
	}
	fmt.Println()
	for _, app := range []string{"hello", "io"} {
		res := map[string]map[int][]ops.Result{}
		fmt.Fprintf(os.Stderr, "serving %s: %s\n", app, ops.LoadAvg())
		for round := 0; round < o.rounds; round++ {
			for pi, p := range profiles {
				if err := useApp(ctx, m, app, p); err != nil {
					return err
				}
				setups := []string{p.name}
				if pi == 0 {
					setups = append(setups, "eb", "ebka", "hand")
				}
				for _, c := range conns {
					for _, s := range setups {
						r, err := ops.Wrk(ctx, ops.Load{URL: target(m, s), Connections: c, Duration: o.duration})
						if err != nil {
							return err
						}
						if res[s] == nil {
							res[s] = map[int][]ops.Result{}
						}
						res[s][c] = append(res[s][c], r)
					}
				}
			}
		}
		fmt.Printf("App %s (%d rounds; %s at its end):\n\n", app, o.rounds, ops.LoadAvg())
		fmt.Println("| c | setup | req/s (mean) | each round | p50 (worst) | p99 (worst) | errors | vs EB-style | vs EB-style + keepalive | vs hand-tuned sync |")
		fmt.Println("| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, c := range conns {
			eb, ebka, hand := summarize(res["eb"][c]), summarize(res["ebka"][c]), summarize(res["hand"][c])
			for _, s := range append(profileNames(profiles), "eb", "ebka", "hand") {
				r := summarize(res[s][c])
				fmt.Printf("| %d | %s | %.0f | %s | %s | %s | %d | %s | %s | %s |\n", c, s, r.rps, r.each, ops.MS(r.p50), ops.MS(r.p99), r.failed,
					ratio(r.rps, eb.rps), ratio(r.rps, ebka.rps), ratio(r.rps, hand.rps))
			}
		}
		fmt.Println()
	}
	return nil
}

// cell is one setup at one concurrency over the rounds: the mean throughput (rounds alternate
// with the other setups, so a noisy moment lowers one round, not the cell), the worst p50 and p99.
type cell struct {
	rps      float64
	each     string
	p50, p99 time.Duration
	failed   int
}

// ratio is a/b for the tables, or "-" when b completed no request (no ratio to give).
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func summarize(rs []ops.Result) cell {
	var c cell
	var each []string
	for _, r := range rs {
		c.rps += r.RPS / float64(len(rs))
		each = append(each, strconv.FormatFloat(r.RPS, 'f', 0, 64))
		c.p50 = max(c.p50, r.P50)
		c.p99 = max(c.p99, r.P99)
		c.failed += r.Failed()
	}
	c.each = strings.Join(each, ", ")
	return c
}

// operations runs every operation under a bounded load (io app, wrk -c16) for each profile.
func operations(ctx context.Context, m *harness.Machine, profiles []profile) error {
	for _, p := range profiles {
		if err := useApp(ctx, m, "io", p); err != nil {
			return err
		}
		fmt.Printf("Operations under load, profile %s (io app, wrk -t2 -c16; the operation starts 2 s in; %s at the start):\n\n", p.name, ops.LoadAvg())
		fmt.Println("| operation | requests | failed (non-2xx) | socket errors | p50 | p99 | max | took |")
		fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, op := range ops.All {
			d := 12 * time.Second
			if strings.Contains(op.Name, "5 s apart") || strings.Contains(op.Name, "crash loop") {
				d = 22 * time.Second
			}
			logStart := errorLogSize(m)
			r, err := ops.Run(ctx, m, op, ops.Load{URL: target(m, "default"), Connections: 16, Duration: d, At: 2 * time.Second})
			if err != nil {
				return fmt.Errorf("%w\n%s", err, diagnose(ctx, m))
			}
			if r.Failed() > 0 {
				fmt.Fprintf(os.Stderr, "%s, profile %s: %d failed; NGINX's error log meanwhile:\n%s\n", op.Name, p.name, r.Failed(), errorLogSince(m, logStart))
			}
			fmt.Printf("| %s | %d | %d | %d | %s | %s | %s | %s |\n", op.Name, r.Requests, r.Non2xx, r.SocketErrors(),
				ops.MS(r.P50), ops.MS(r.P99), ops.MS(r.Max), r.OpTook.Round(100*time.Millisecond))
			time.Sleep(time.Second)
		}
		fmt.Printf("\n(%s at the end)\n\n", ops.LoadAvg())
	}
	return nil
}

const nginxErrorLog = "var/log/nginx/error.log"

func errorLogSize(m *harness.Machine) int64 {
	fi, err := os.Stat(filepath.Join(m.Root(), nginxErrorLog))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// errorLogSince is what NGINX logged after offset: why the failed requests failed.
func errorLogSince(m *harness.Machine, offset int64) string {
	b, err := os.ReadFile(filepath.Join(m.Root(), nginxErrorLog))
	if err != nil || int64(len(b)) < offset {
		return fmt.Sprintf("(no error log: %v)", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b[offset:])), "\n")
	if len(lines) > 20 {
		lines = append(lines[:20], fmt.Sprintf("... %d lines more", len(lines)-20))
	}
	return strings.Join(lines, "\n")
}

// diagnose gathers what the machine says about the serving path, for an error message.
func diagnose(ctx context.Context, m *harness.Machine) string {
	out, stderr, _ := m.Exec(ctx, "sh", "-c", "wsgi-ctl status; curl -sS -m 5 -o /dev/null -w 'eb: %{http_code}\\n' http://127.0.0.1:8080/; "+
		"systemctl --no-pager status nginx eb-gunicorn.service hand@1 2>&1 | head -40; "+
		"journalctl --no-pager -n 30 -u wsgi@1.service -u eb-gunicorn.service -u nginx")
	return out + stderr
}

func execAll(ctx context.Context, m *harness.Machine, cmds ...string) error {
	for _, c := range cmds {
		if _, stderr, err := m.Exec(ctx, "sh", "-c", c); err != nil {
			return fmt.Errorf("%s: %w: %s", c, err, stderr)
		}
	}
	return nil
}
