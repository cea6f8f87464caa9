//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/ops"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// opsApp answers at once (hello), after 20 ms (io), or with what it was told about the client
// (echo), and says which unit served it.
const opsApp = `import json, os, time

UNIT = os.environ.get("WSGI_UNIT", "?")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("hello from unit %s\n" % UNIT).encode()]


def io(environ, start_response):
    time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("waited on unit %s\n" % UNIT).encode()]


def echo(environ, start_response):
    keys = ["wsgi.url_scheme", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_REAL_IP",
            "HTTP_FORWARDED", "HTTP_X_FORWARDED_SSL", "HTTP_X_FORWARDED_PROTOCOL"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({k: environ.get(k) for k in keys}).encode()]


def app(environ, start_response):
    if environ["PATH_INFO"] == "/echo":
        return echo(environ, start_response)
    return io(environ, start_response)
`

// opsAppFile is the app description of a release of the ops app from a tarball served on the
// machine's loopback, as the payload writes it: what `wsgi-ctl deploy FILE` hands to the baked
// deploy.
func opsAppFile(t *testing.T, url, sha string) []byte {
	t.Helper()
	p, err := cloudinit.Render(cloudinit.App{Source: cloudinit.Source{TarballURL: url, SHA256: sha, Retries: 1}, WSGIApp: "opsapp:app"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		WriteFiles []struct {
			Path, Content string
		} `yaml:"write_files"`
	}
	if err := yaml.Unmarshal(p.CloudConfigs[0], &cfg); err != nil || len(cfg.WriteFiles) != 1 || cfg.WriteFiles[0].Path != contract.AppFile {
		t.Fatalf("the payload's app file: %v %+v", err, cfg)
	}
	return []byte(cfg.WriteFiles[0].Content)
}

// TestOperations bakes the golden image with the real packer, boots it as an instance, and runs
// every operation of issue 11 under load, asserting that no client request fails; then checks
// the sandbox scores, forwarded headers from a hostile direct client, 2,000 concurrent clients,
// and wsgi-ctl deploy of a good and a broken release.
// It runs on the default release: the operations are the stack's, the same on both.
func TestOperations(t *testing.T) { harness.OnFirstRelease(t, testOperations) }

func testOperations(t *testing.T, release harness.Release) {
	ctx, log, repoRoot := begin(t, 45*time.Minute)
	scratch := t.TempDir()
	img, err := harness.BaseImage(ctx, release, log)
	if err != nil {
		t.Fatal(err)
	}
	pb, pub := newPackerRun(ctx, t, repoRoot, scratch)
	build := boot(ctx, t, harness.BootOptions{Image: img, Name: "wsgi-obuild", UserData: harness.SSHUserData("packer", pub), WorkDir: scratch, Log: log})
	// Loopback plays the load balancer; the host, which sends the test traffic, is a direct client.
	if _, _, err := pb.build(ctx, "ops", build.IP(), stackTemplate(`    gunicorn_source     = "distro"
    trusted_proxy_cidrs = ["127.0.0.0/8"]`)); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join(scratch, "golden.tar.zst")
	if err := build.Snapshot(ctx, golden); err != nil {
		t.Fatal(err)
	}
	build.Close()

	m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "wsgi-ops", WorkDir: scratch, Log: log})
	placeOpsRelease(ctx, t, m)
	url := "http://" + m.IP() + "/"

	t.Run("sandbox", func(t *testing.T) { checkSecurityScores(ctx, t, m) })
	t.Run("forwarded headers", func(t *testing.T) { checkForwarded(ctx, t, m) })
	t.Run("2000 clients", func(t *testing.T) {
		// Back to the io app whatever happens: the operations below measure that one.
		defer func() {
			if err := useApp(ctx, m, "app"); err != nil {
				t.Error(err)
			}
		}()
		if err := useApp(ctx, m, "hello"); err != nil {
			t.Fatal(err)
		}
		r, err := ops.Wrk(ctx, ops.Load{URL: url, Connections: 2000, Threads: 2, Duration: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("CHECK wrk -c2000 (hello): %d requests, %.0f req/s, p50 %s p99 %s max %s, non-2xx %d, socket errors %d (%s)",
			r.Requests, r.RPS, ops.MS(r.P50), ops.MS(r.P99), ops.MS(r.Max), r.Non2xx, r.SocketErrors(), ops.LoadAvg())
		if r.Failed() != 0 {
			t.Errorf("2,000 concurrent clients: %d non-2xx, %d socket errors; want none", r.Non2xx, r.SocketErrors())
		}
		if out, _, _ := m.Exec(ctx, "sh", "-c", "grep -c 'worker_connections are not enough' /var/log/nginx/error.log || true"); strings.TrimSpace(out) != "0" {
			t.Errorf("NGINX ran out of worker_connections (%s times)", strings.TrimSpace(out))
		}
	})

	t.Logf("| operation under load (io app, wrk -t2 -c16) | requests | failed | socket errors | p50 | p99 | max |")
	for _, op := range ops.All {
		t.Run(op.Name, func(t *testing.T) {
			d := 12 * time.Second
			if strings.Contains(op.Name, "5 s apart") || strings.Contains(op.Name, "crash loop") {
				d = 22 * time.Second
			}
			sockets := mustExec(ctx, t, m, "sh", "-c", ops.SocketsCmd)
			since := mustExec(ctx, t, m, "date", "+@%s")
			r, err := ops.Run(ctx, m, op, ops.Load{URL: url, Connections: 16, Duration: d, At: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if after := mustExec(ctx, t, m, "sh", "-c", ops.SocketsCmd); !op.ClosesSocket && after != sockets {
				j, _, _ := m.Exec(ctx, "journalctl", "--no-pager", "-o", "short-precise", "--since", since, "-u", "wsgi@*.socket", "-u", "wsgi.target")
				t.Errorf("%s: systemd closed and reopened a socket (see ops.Op.ClosesSocket):\nbefore:\n%s\nafter:\n%s\njournal:\n%s", op.Name, sockets, after, j)
			}
			t.Logf("| %s | %d | %d | %d | %s | %s | %s |", op.Name, r.Requests, r.Non2xx, r.SocketErrors(), ops.MS(r.P50), ops.MS(r.P99), ops.MS(r.Max))
			if op.ClosesIdleClients && r.Read > 0 {
				t.Logf("%s: %d read errors from NGINX closing idle client keep-alive connections (not counted: see ops.Op.ClosesIdleClients)", op.Name, r.Read)
			}
			if r.FailedFor(op) != 0 {
				t.Errorf("%s: %d non-2xx and %d socket errors (connect %d, read %d, write %d, timeout %d); want none\n%s\n%s",
					op.Name, r.Non2xx, r.SocketErrors(), r.Connect, r.Read, r.Write, r.Tmo, r.OpOutput, diagnoseOps(ctx, m))
			}
			if status, _, err := m.Exec(ctx, "wsgi-ctl", "status"); err != nil {
				t.Errorf("after %s, wsgi-ctl status is not healthy: %v\n%s", op.Name, err, status)
			}
		})
	}
	t.Run("wsgi-ctl deploy", func(t *testing.T) { checkCtlDeploy(ctx, t, m, url) })
	t.Run("systemctl stop wsgi.target", func(t *testing.T) { checkTargetStop(ctx, t, m, url) })
}

// checkTargetStop stops wsgi.target under load: the services and then the sockets must stop and
// stay stopped, although NGINX keeps connecting (a connection to a socket left open would start
// its service again); starting the target serves again.
func checkTargetStop(ctx context.Context, t *testing.T, m *harness.Machine, url string) {
	units := "wsgi@1.socket wsgi@2.socket wsgi@3.socket wsgi@1.service wsgi@2.service wsgi@3.service"
	// The states are read 5 s after the stop, while the load still runs. The pattern matches
	// Gunicorn's `python -m gunicorn` and not this command line.
	op := ops.Op{Name: "systemctl stop wsgi.target", Cmd: "systemctl stop wsgi.target; sleep 5; echo $(systemctl is-active " + units + "); echo gunicorn=$(pgrep -c -f '[-]m gunicorn')"}
	r, err := ops.Run(ctx, m, op, ops.Load{URL: url, Connections: 16, Duration: 9 * time.Second, At: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CHECK %s under load (c16): %d requests, %d answered non-2xx (the maintenance page), %d socket errors; then %s",
		op.Name, r.Requests, r.Non2xx, r.SocketErrors(), r.OpOutput)
	if want := strings.TrimSpace(strings.Repeat("inactive ", 6)) + "\ngunicorn=0"; r.OpOutput != want {
		t.Errorf("after %s under load, %s and Gunicorn are:\n%s\nwant:\n%s", op.Name, units, r.OpOutput, want)
	}
	mustExec(ctx, t, m, "sh", "-c", "systemctl start wsgi.target && wsgi-ctl restart")
	if code, body, _ := get(ctx, t, url); code != 200 {
		t.Errorf("after systemctl start wsgi.target: GET / -> %d %s", code, body)
	}
}

// useApp points the units at one of opsApp's entry points and restarts them with wsgi-ctl;
// the error carries what wsgi-ctl said (it reports on stdout) when a unit does not come back.
func useApp(ctx context.Context, m *harness.Machine, entry string) error {
	out, stderr, err := m.Exec(ctx, "sh", "-c", "echo WSGI_APP=opsapp:"+entry+" > /etc/wsgi/wsgi.env && wsgi-ctl restart")
	if err != nil {
		return fmt.Errorf("switching the units to opsapp:%s: %w\n%s%s", entry, err, out, stderr)
	}
	return nil
}

// placeOpsRelease places the first release the way first boot does and starts serving it.
func placeOpsRelease(ctx context.Context, t *testing.T, m *harness.Machine) {
	t.Helper()
	rel := filepath.Join(m.Root(), "srv/wsgi/releases/20260101T000000Z-first")
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rel, "opsapp.py"), []byte(opsApp), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{
		"ln -sfn releases/20260101T000000Z-first /srv/wsgi/current",
		"echo WSGI_APP=opsapp:app > /etc/wsgi/wsgi.env",
		"systemctl enable --now wsgi.target",
		"wsgi-ctl restart",
	} {
		mustExec(ctx, t, m, "sh", "-c", cmd)
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+)`)

// checkSecurityScores rates the two sandboxes on the running instance.
func checkSecurityScores(ctx context.Context, t *testing.T, m *harness.Machine) {
	for _, u := range []struct {
		unit  string
		limit float64
	}{{"nginx.service", 3.0}, {"wsgi@1.service", 1.1}} {
		out := mustExec(ctx, t, m, "sh", "-c", "systemd-analyze security "+u.unit+" | tail -n 1")
		mm := exposureLine.FindStringSubmatch(out)
		if mm == nil {
			t.Fatalf("systemd-analyze security %s: no score in %q", u.unit, out)
		}
		score, _ := strconv.ParseFloat(mm[2], 64)
		t.Logf("CHECK systemd-analyze security %s on the instance, while serving: %.1f (limit %.1f)", u.unit, score, u.limit)
		if score > u.limit {
			t.Errorf("%s exposure %.1f is above %.1f", u.unit, score, u.limit)
		}
	}
	// Still able to bind port 80 after a restart and to reload.
	mustExec(ctx, t, m, "sh", "-c", "systemctl restart nginx && systemctl reload nginx && sleep 1 && curl -fsS -o /dev/null http://127.0.0.1/")
}

// checkForwarded sends hostile forwarded headers from the host (a direct client) and the same
// from loopback (the trusted proxy in this bake).
func checkForwarded(ctx context.Context, t *testing.T, m *harness.Machine) {
	hostile := `-H 'X-Forwarded-For: 203.0.113.66' -H 'X-Forwarded-Proto: https' -H 'X-Forwarded-Ssl: on' -H 'X-Forwarded-Protocol: ssl' -H 'Forwarded: for=203.0.113.66;proto=https' -H 'X-Real-IP: 203.0.113.66'`
	// From the host: an untrusted peer.
	code, body, _ := get(ctx, t, "http://"+m.IP()+"/echo")
	if code != 200 {
		t.Fatalf("GET /echo from the host: %d %s", code, body)
	}
	out, err := hostCurl(ctx, hostile, "http://"+m.IP()+"/echo")
	if err != nil {
		t.Fatal(err)
	}
	host := m.Gateway()
	for _, want := range []string{`"wsgi.url_scheme": "http"`, `"HTTP_X_FORWARDED_FOR": "` + host + `"`, `"HTTP_X_FORWARDED_PROTO": "http"`,
		`"HTTP_X_REAL_IP": "` + host + `"`, `"HTTP_FORWARDED": null`, `"HTTP_X_FORWARDED_SSL": null`, `"HTTP_X_FORWARDED_PROTOCOL": null`} {
		if !strings.Contains(out, want) {
			t.Errorf("a direct client's hostile headers got through: want %s in\n%s", want, out)
		}
	}
	t.Logf("CHECK direct client (%s) with forged X-Forwarded-For/Proto, Forwarded, X-Forwarded-Ssl: the app sees %s", host, out)
	// From loopback, the trusted proxy: its headers count.
	lb := mustExec(ctx, t, m, "sh", "-c", "curl -fsS "+hostile+" http://127.0.0.1/echo")
	for _, want := range []string{`"wsgi.url_scheme": "https"`, `"HTTP_X_FORWARDED_FOR": "203.0.113.66"`, `"HTTP_X_FORWARDED_PROTO": "https"`, `"HTTP_X_FORWARDED_SSL": null`} {
		if !strings.Contains(lb, want) {
			t.Errorf("the trusted proxy's headers were not honoured: want %s in\n%s", want, lb)
		}
	}
	t.Logf("CHECK trusted proxy (127.0.0.1) with the same headers: the app sees %s", lb)
}

func hostCurl(ctx context.Context, headers, url string) (string, error) {
	out, err := runIn(ctx, "", nil, "sh", "-c", "curl -fsS "+headers+" "+url)
	return strings.TrimSpace(out), err
}

// checkCtlDeploy deploys a second release and a broken one with wsgi-ctl under load.
func checkCtlDeploy(ctx context.Context, t *testing.T, m *harness.Machine, url string) {
	// Two releases as the baked deploy takes them: archives on the machine's loopback and the app
	// files the payload would write. The broken one fails at import, so its units never answer.
	dir := filepath.Join(m.Root(), "srv/e2e-ops")
	second := writeTarball(t, filepath.Join(dir, "second.tar.gz"), map[string]string{"opsapp.py": opsApp})
	broken := writeTarball(t, filepath.Join(dir, "broken.tar.gz"), map[string]string{"opsapp.py": "raise SystemExit('this release is broken')\n"})
	writeFixture(t, filepath.Join(m.Root(), "root/second.app"), string(opsAppFile(t, "http://127.0.0.1:8082/second.tar.gz", second)))
	writeFixture(t, filepath.Join(m.Root(), "root/broken.app"), string(opsAppFile(t, "http://127.0.0.1:8082/broken.tar.gz", broken)))
	mustExec(ctx, t, m, "systemd-run", "--unit", "e2e-ops-http", "--", "python3", "-m", "http.server", "8082", "--bind", "127.0.0.1", "--directory", "/srv/e2e-ops")
	defer m.Exec(ctx, "systemctl", "stop", "e2e-ops-http")
	secondID := "-" + second[:12] // the deploy names a release by time and the archive's digest
	for _, c := range []struct {
		file, want string
		code       int
	}{
		{"/root/second.app", secondID, 0},
		{"/root/broken.app", secondID, 5},
	} {
		op := ops.Op{Name: "wsgi-ctl deploy " + c.file, Cmd: "wsgi-ctl deploy --timeout 15 " + c.file + "; echo exit=$?"}
		r, err := ops.Run(ctx, m, op, ops.Load{URL: url, Connections: 32, Duration: 30 * time.Second, At: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("| %s (c32) | %d | %d | %d | %s | %s | %s |", op.Name, r.Requests, r.Non2xx, r.SocketErrors(), ops.MS(r.P50), ops.MS(r.P99), ops.MS(r.Max))
		t.Logf("wsgi-ctl said:\n%s", r.OpOutput)
		if !strings.Contains(r.OpOutput, fmt.Sprintf("exit=%d", c.code)) {
			t.Errorf("%s: want exit %d:\n%s", op.Name, c.code, r.OpOutput)
		}
		if r.Failed() != 0 {
			t.Errorf("%s: %d non-2xx, %d socket errors; want none", op.Name, r.Non2xx, r.SocketErrors())
		}
		cur := mustExec(ctx, t, m, "readlink", "-f", "/srv/wsgi/current")
		if !strings.HasSuffix(cur, c.want) {
			t.Errorf("after %s, current is %s, want the release ending in %s", op.Name, cur, c.want)
		}
		for _, i := range []int{1, 2, 3} {
			cwd := mustExec(ctx, t, m, "sh", "-c", fmt.Sprintf("for p in $(pgrep -P $(systemctl show -P MainPID wsgi@%d.service)); do readlink /proc/$p/cwd; done | sort -u", i))
			if !strings.HasSuffix(cwd, c.want) {
				t.Errorf("after %s, unit %d's workers run in %q, want the release ending in %s", op.Name, i, cwd, c.want)
			}
		}
	}
	if !strings.Contains(mustExec(ctx, t, m, "wsgi-ctl", "releases"), "20260101T000000Z-first") {
		t.Error("the first release is no longer on disk after two deploys")
	}
	if out := mustExec(ctx, t, m, "sh", "-c", "wsgi-ctl rollback; echo exit=$?"); !strings.Contains(out, "exit=0") || !strings.HasSuffix(mustExec(ctx, t, m, "readlink", "-f", "/srv/wsgi/current"), "-first") {
		t.Errorf("wsgi-ctl rollback did not go back to the first release:\n%s", out)
	}
}

func diagnoseOps(ctx context.Context, m *harness.Machine) string {
	// The access log is written in blocks at most 5 s apart: wait for the failed requests' lines
	// (status and every upstream tried) to be flushed.
	out, stderr, _ := m.Exec(ctx, "sh", "-c", "wsgi-ctl status; grep -v setrlimit /var/log/nginx/error.log | tail -n 15; sleep 6; "+
		"echo 'access log, requests not answered 200:'; awk '$9 != 200' /var/log/nginx/access.log | tail -n 5")
	return out + stderr
}
