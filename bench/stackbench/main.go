// Command stackbench measures the serving path of the golden image: requests per second and
// latency through NGINX into the socket-activated Gunicorn units, side by side in the same
// machine and the same run with an Elastic Beanstalk-style setup (NGINX -> one Gunicorn on TCP,
// gthread --workers 3 --threads 2), and the errors seen while units restart under load.
//
// It needs root and the e2e host tools (make deps). Run it with `make bench-stack`; it prints
// Markdown tables for docs/BENCHMARKS.md.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	goldenimg "github.com/wsgi-ami/packer-plugin-wsgi/bench/internal/golden"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

//go:embed benchapp.py
var benchApp string

// ebUnit is the Elastic Beanstalk Python platform's default: `gunicorn --bind :8000
// --workers 3 --threads 2`, behind an NGINX location that proxies to 127.0.0.1:8000 without an
// upstream keepalive pool.
const ebUnit = `[Unit]
Description=EB-style Gunicorn for comparison
[Service]
User=wsgi
Group=wsgi
WorkingDirectory=/srv/wsgi/current
ExecStart=/opt/wsgi/venv/bin/python -m gunicorn --bind 127.0.0.1:8000 --workers 3 --threads 2 --worker-class gthread ${APP}
EnvironmentFile=/etc/wsgi/eb.env
`

const ebSite = `server {
    listen 8080;
    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
`

type options struct {
	golden      string
	duration    time.Duration
	connections int
	threads     int
	rounds      int
	keep        bool
}

func main() {
	var o options
	flag.StringVar(&o.golden, "golden", "", "golden image tarball (default: build one with packer and wsgi-stack)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each wrk run")
	flag.IntVar(&o.connections, "connections", 64, "wrk connections")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.IntVar(&o.rounds, "rounds", 2, "alternating rounds per setup (the best round counts)")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "stackbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (systemd-nspawn, ip, nft)")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk not found: apt-get install wrk (make deps)")
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
	fmt.Printf("wrk -t%d -c%d -d%s --latency, from the host into the machine; best of %d alternating rounds\n\n",
		o.threads, o.connections, o.duration, o.rounds)
	fmt.Println("| app | setup | req/s | p50 | p99 | non-2xx + socket errors | req/s vs EB-style |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
	for _, app := range []string{"hello", "io"} {
		best := map[string]wrkResult{}
		for round := 0; round < o.rounds; round++ {
			for _, p := range profiles {
				if err := useApp(ctx, m, app, p.conf); err != nil {
					return err
				}
				for _, setup := range []string{p.name, "eb"} {
					if setup == "eb" && p.name != profiles[0].name {
						continue
					}
					r, err := wrk(ctx, o, target(m, setup))
					if err != nil {
						return err
					}
					if r.RPS > best[setup].RPS {
						best[setup] = r
					}
				}
			}
		}
		for _, setup := range append(profileNames(profiles), "eb") {
			r := best[setup]
			fmt.Printf("| %s | %s | %.0f | %s | %s | %d | %.2fx |\n", app, setupTitle(setup), r.RPS, ms(r.P50), ms(r.P99),
				r.Non2xx+r.SocketErrors, r.RPS/best["eb"].RPS)
		}
	}
	fmt.Println()
	if err := useApp(ctx, m, "io", profiles[0].conf); err != nil {
		return err
	}
	return restarts(ctx, o, m)
}

// setup places a release of the bench app the way first boot does, enables the sockets, and
// starts the EB-style comparison next to them.
func setup(ctx context.Context, m *harness.Machine) error {
	root := m.Root()
	rel := "/srv/wsgi/releases/bench"
	if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
		return err
	}
	files := map[string]string{
		rel + "/benchapp.py":                      benchApp,
		"/etc/systemd/system/eb-gunicorn.service": ebUnit,
		"/etc/nginx/conf.d/eb.conf":               ebSite,
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return execAll(ctx, m,
		"ln -sfn "+rel+" /srv/wsgi/current",
		"systemctl daemon-reload",
		"systemctl reload nginx",
	)
}

// useApp switches both setups to one callable of the bench app and warms them up, so no
// measurement includes a Gunicorn start (socket activation starts a unit on first connection).
func useApp(ctx context.Context, m *harness.Machine, app string, gunicornConf []byte) error {
	root := m.Root()
	if err := os.WriteFile(filepath.Join(root, "etc/wsgi/gunicorn.conf.py"), gunicornConf, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/wsgi/wsgi.env"), []byte("WSGI_APP=benchapp:"+app+"\n"), 0o640); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/wsgi/eb.env"), []byte("APP=benchapp:"+app+"\n"), 0o644); err != nil {
		return err
	}
	if err := execAll(ctx, m,
		"systemctl stop wsgi.target 'wsgi@*.service' eb-gunicorn.service",
		"systemctl start wsgi.target eb-gunicorn.service",
	); err != nil {
		return err
	}
	for _, setup := range []string{"default", "eb"} {
		if _, err := wrk(ctx, options{threads: 2, connections: 32, duration: 2 * time.Second}, target(m, setup)); err != nil {
			return fmt.Errorf("warm-up of %s: %w\n%s", setup, err, diagnose(ctx, m))
		}
	}
	return nil
}

// target is the URL of a setup: the EB-style site listens on 8080, the stack on 80 (every
// profile of the stack is served there, one at a time).
func target(m *harness.Machine, setup string) string {
	if setup == "eb" {
		return "http://" + m.IP() + ":8080/"
	}
	return "http://" + m.IP() + "/"
}

func wrk(ctx context.Context, o options, url string) (wrkResult, error) {
	args := []string{fmt.Sprintf("-t%d", o.threads), fmt.Sprintf("-c%d", o.connections), "-d" + o.duration.String(), "--latency", "--timeout", "5s", url}
	ctx, cancel := context.WithTimeout(ctx, o.duration+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return parseWrk(string(out))
}

// restarts runs a bounded load while each unit is restarted in turn and one master is killed,
// and counts what the client saw. systemd holds the sockets, so the intent is zero errors.
func restarts(ctx context.Context, o options, m *harness.Machine) error {
	type event struct {
		name string
		cmd  string
	}
	events := []event{
		{"systemctl restart wsgi@1", "systemctl restart wsgi@1.service"},
		{"systemctl restart wsgi@2", "systemctl restart wsgi@2.service"},
		{"systemctl restart wsgi@3", "systemctl restart wsgi@3.service"},
		{"kill -9 of wsgi@2's Gunicorn master", "kill -9 $(systemctl show -P MainPID wsgi@2.service)"},
		{"systemctl reload wsgi@1 (graceful HUP)", "systemctl reload wsgi@1.service"},
	}
	fmt.Println("| event under load (io app, wrk -c" + fmt.Sprint(o.connections) + ") | requests | non-2xx | socket errors |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	for _, ev := range events {
		lo := o
		lo.duration = 6 * time.Second
		done := make(chan struct{})
		var r wrkResult
		var werr error
		go func() {
			defer close(done)
			r, werr = wrk(ctx, lo, target(m, "default"))
		}()
		time.Sleep(2 * time.Second)
		if _, stderr, err := m.Exec(ctx, "sh", "-c", ev.cmd); err != nil {
			return fmt.Errorf("%s: %w: %s", ev.cmd, err, stderr)
		}
		<-done
		if werr != nil {
			return werr
		}
		fmt.Printf("| %s | %d | %d | %d |\n", ev.name, r.Requests, r.Non2xx, r.SocketErrors)
		// Let a killed unit come back before the next event.
		time.Sleep(2 * time.Second)
	}
	return nil
}

// diagnose gathers what the machine says about the serving path, for an error message.
func diagnose(ctx context.Context, m *harness.Machine) string {
	out, stderr, _ := m.Exec(ctx, "sh", "-c", "curl -sS -m 5 -o /dev/null -w 'curl in machine: %{http_code}\\n' http://127.0.0.1/; "+
		"curl -sS -m 5 -o /dev/null -w 'eb in machine: %{http_code}\\n' http://127.0.0.1:8080/; "+
		"systemctl --no-pager status nginx wsgi.target wsgi@1.socket wsgi@1.service eb-gunicorn.service 2>&1 | head -60; "+
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
