//go:build e2e

package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/pyfixture"
)

// The provisioner under test, as Packer knows it once the plugin is installed.
const (
	pluginSource  = "github.com/wsgi-ami/wsgi"
	stackSockets  = 3
	pinnedVersion = "20.1.0" // the Gunicorn the offline wheel holds (Debian 12's)
	indexPort     = 8765     // the PEP 503 index, on the build machine's loopback
)

// stackTemplate is a null-builder build over SSH with the provisioner; body is the
// provisioner's own settings.
func stackTemplate(body string) string {
	return nullTemplate("  provisioner \"wsgi-stack\" {\n" + body + "\n  }")
}

// pipBody installs the pinned Gunicorn with pip from the index on the machine's loopback.
// pip only trusts plain-HTTP indexes on loopback, which is why the index is served there.
// Gunicorn 20.1 needs setuptools (pkg_resources), which Python 3.12+ venvs no longer carry and
// the offline index does not hold: the venv sees the distribution's python3-setuptools.
var pipBody = fmt.Sprintf(`    sockets              = %d
    gunicorn_version     = %q
    pip_index_url        = "http://127.0.0.1:%d/simple/"
    system_site_packages = true
    extra_packages       = ["python3-setuptools"]`, stackSockets, pinnedVersion, indexPort)

// TestStack bakes the stack with the real packer over SSH onto a booted Debian machine,
// snapshots it as the golden image, proves a second build changes nothing, and checks a fresh
// boot of the golden image before and after a release is placed. It also bakes once with the
// distribution's Gunicorn.
func TestStack(t *testing.T) { harness.ForEachRelease(t, testStack) }

func testStack(t *testing.T, release harness.Release) {
	ctx, log, repoRoot := begin(t, 35*time.Minute)
	scratch := t.TempDir()

	img, err := harness.BaseImage(ctx, release, log)
	if err != nil {
		t.Fatal(err)
	}
	pb, pub := newPackerRun(ctx, t, repoRoot, scratch)
	wheel := gunicornWheel(ctx, t, scratch)

	// 1. Bake on a fresh machine.
	build := boot(ctx, t, harness.BootOptions{Image: img, Name: "wsgi-sbuild", UserData: harness.SSHUserData("packer", pub), WorkDir: scratch, Log: log})
	serveIndex(ctx, t, build, wheel)
	out, took, err := pb.build(ctx, "first", build.IP(), stackTemplate(pipBody))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CHECK packer build (null + wsgi-stack, pip Gunicorn %s from the local index): %v", pinnedVersion, took.Round(100*time.Millisecond))
	for _, want := range []string{
		"Detected Debian GNU/Linux " + release.Version + " (" + release.Suite + "): apt family",
		"[1/8] packages", "[4/8] python venv /opt/wsgi/venv", "[8/8] done",
		"gunicorn " + pinnedVersion + " on python " + release.Python,
		"[1/2] image hygiene", "[2/2] image hygiene done",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first build output lacks %q", want)
		}
	}
	stopIndex(ctx, t, build)
	golden := filepath.Join(scratch, "golden.tar.zst")
	if err := build.Snapshot(ctx, golden); err != nil {
		t.Fatal(err)
	}
	build.Close()
	checkImageHygiene(ctx, t, golden)

	// 2. A second build on a machine that already has the stack changes nothing.
	again := boot(ctx, t, harness.BootOptions{Image: golden, Name: "wsgi-sagain", UserData: harness.SSHUserData("packer", pub), WorkDir: scratch, Log: log})
	before := fingerprint(ctx, t, again)
	out, took, err = pb.build(ctx, "second", again.IP(), stackTemplate(pipBody))
	after := fingerprint(ctx, t, again)
	diff := lineDiff(before, after)
	if err != nil {
		t.Error(err)
	}
	if diff != "" {
		t.Errorf("the second build changed the machine:\n%s", diff)
	}
	if strings.Contains(out, "Reading package lists") || strings.Contains(out, "Collecting gunicorn") {
		t.Errorf("the second build ran apt-get or pip again")
	}
	result := "passed"
	if err != nil {
		result = "FAILED"
	}
	t.Logf("CHECK second packer build on the provisioned machine: %v, %s; %d fingerprint lines (files with sha256, modes, owners, packages, unit states), %d differ",
		took.Round(100*time.Millisecond), result, strings.Count(before, "\n"), strings.Count(diff, "\n")+min(len(diff), 1))
	again.Close()

	// 3. A fresh boot of the golden image.
	checkGolden(ctx, t, golden, scratch, log)

	// 4. The distribution's Gunicorn instead of pip's.
	distro := boot(ctx, t, harness.BootOptions{Image: img, Name: "wsgi-sdistro", UserData: harness.SSHUserData("packer", pub), WorkDir: scratch, Log: log})
	out, took, err = pb.build(ctx, "distro", distro.IP(), stackTemplate(`    gunicorn_source = "distro"`))
	if err != nil {
		t.Fatal(err)
	}
	got := mustExec(ctx, t, distro, "/opt/wsgi/venv/bin/python", "-c", "import gunicorn; print(gunicorn.__version__, gunicorn.__file__)")
	if !strings.HasPrefix(got, release.Gunicorn+" /usr/lib/python3/dist-packages/gunicorn/") {
		t.Errorf("distro build: the venv's gunicorn is %q, want Debian %s's %s from /usr/lib/python3/dist-packages", got, release.Version, release.Gunicorn)
	}
	if !strings.Contains(out, "[8/8] done") {
		t.Errorf("distro build output lacks its last phase")
	}
	t.Logf("CHECK packer build with gunicorn_source = \"distro\": %v, venv imports %s", took.Round(100*time.Millisecond), got)
	distro.Close()
}

// checkGolden boots the golden image as a new instance and checks it serves the maintenance
// page before a release, then places a release the way first boot does and checks the sockets,
// their permissions, socket activation, NGINX reaching every unit, and the unit's sandbox.
func checkGolden(ctx context.Context, t *testing.T, golden, scratch string, log io.Writer) {
	m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "wsgi-sgold", WorkDir: scratch, Log: log})
	defer m.Close()
	base := "http://" + m.IP()

	// Before a release: nothing listens, NGINX answers 503 with the maintenance page.
	socks := listening(ctx, t, m)
	if len(socks) != 0 {
		t.Errorf("before a release %d wsgi sockets listen (%v), want 0", len(socks), socks)
	}
	target := unitState(ctx, m, "is-enabled", "wsgi.target")
	if target != "disabled" {
		t.Errorf("wsgi.target is %q on the first boot of the golden image, want disabled (a first boot applies systemd's presets when /etc/machine-id is missing)", target)
	}
	code, body, hdr := get(ctx, t, base+"/")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "app is not serving yet") || hdr.Get("Retry-After") == "" {
		t.Errorf("before a release: GET / = %d, Retry-After %q, body %q; want 503 with the maintenance page", code, hdr.Get("Retry-After"), body)
	}
	t.Logf("CHECK before a release: %d sockets listening, wsgi.target %s, GET / -> %d, Retry-After %s, maintenance page %d bytes",
		len(socks), target, code, hdr.Get("Retry-After"), len(body))

	placeRelease(ctx, t, m)

	// N sockets, owned by the app user and NGINX's group, mode 0660.
	socks = listening(ctx, t, m)
	if len(socks) != stackSockets {
		t.Errorf("after enabling wsgi.target %d sockets listen (%v), want %d", len(socks), socks, stackSockets)
	}
	for i := 1; i <= stackSockets; i++ {
		p := fmt.Sprintf("/run/wsgi/app-%d.sock", i)
		got := mustExec(ctx, t, m, "stat", "-c", "%U %G %a %F", p)
		if got != "wsgi www-data 660 socket" {
			t.Errorf("%s: %q, want \"wsgi www-data 660 socket\"", p, got)
		}
		t.Logf("CHECK %s: listening, %s", p, got)
	}
	// Socket activation: no Gunicorn before the first connection.
	for i := 1; i <= stackSockets; i++ {
		if st := unitState(ctx, m, "is-active", fmt.Sprintf("wsgi@%d.service", i)); st != "inactive" {
			t.Errorf("wsgi@%d.service is %q before any connection, want inactive", i, st)
		}
	}
	t.Logf("CHECK before the first connection: wsgi@1..%d.service inactive", stackSockets)

	// Another unprivileged user cannot connect; NGINX's user can, which starts unit 1.
	const connect = `import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("refused", e.errno, e.strerror); sys.exit(3)
s.sendall(b"GET /whoami HTTP/1.0\r\nHost: x\r\n\r\n")
print(s.makefile("rb").read().decode().split("\r\n\r\n", 1)[1].strip())`
	out, _, err := m.Exec(ctx, "runuser", "-u", "nobody", "--", "python3", "-c", connect, "/run/wsgi/app-1.sock")
	if err == nil || !strings.Contains(out, "refused 13 Permission denied") {
		t.Errorf("nobody connecting to app-1.sock: %q, %v; want refused with EACCES", out, err)
	}
	t.Logf("CHECK nobody -> /run/wsgi/app-1.sock: %s", strings.TrimSpace(out))
	if st := unitState(ctx, m, "is-active", "wsgi@1.service"); st != "inactive" {
		t.Errorf("a refused connection started wsgi@1.service (%s)", st)
	}
	start := time.Now()
	out, _, err = m.Exec(ctx, "runuser", "-u", "www-data", "--", "python3", "-c", connect, "/run/wsgi/app-1.sock")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "unit=1 ") {
		t.Errorf("www-data connecting to app-1.sock: %q, %v; want an answer from unit 1", out, err)
		logUnit(ctx, t, m, "wsgi@1.service")
	}
	t.Logf("CHECK www-data -> /run/wsgi/app-1.sock: %q after %v (first request, including Gunicorn's start)", strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))
	st1, st2 := unitState(ctx, m, "is-active", "wsgi@1.service"), unitState(ctx, m, "is-active", "wsgi@2.service")
	if st1 != "active" || st2 != "inactive" {
		t.Errorf("after one connection to socket 1: wsgi@1 %s, wsgi@2 %s; want active, inactive", st1, st2)
		logUnit(ctx, t, m, "wsgi@1.service")
	}
	t.Logf("CHECK after that connection: wsgi@1.service %s, wsgi@2.service %s", st1, st2)

	// HTTP through NGINX reaches every unit.
	served := map[string]int{}
	var failures []string
	for i := 0; i < 10*stackSockets; i++ {
		code, body, _ := get(ctx, t, base+"/whoami")
		unit, _, _ := strings.Cut(strings.TrimSpace(body), " ")
		if code != http.StatusOK || !strings.HasPrefix(unit, "unit=") {
			failures = append(failures, fmt.Sprintf("%d %q", code, body))
			continue
		}
		served[unit]++
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d requests through NGINX failed: %v", len(failures), 10*stackSockets, failures)
	}
	for i := 1; i <= stackSockets; i++ {
		if served[fmt.Sprintf("unit=%d", i)] == 0 {
			t.Errorf("no request through NGINX reached unit %d: %v", i, served)
		}
		if st := unitState(ctx, m, "is-active", fmt.Sprintf("wsgi@%d.service", i)); st != "active" {
			t.Errorf("wsgi@%d.service is %s after serving", i, st)
			logUnit(ctx, t, m, fmt.Sprintf("wsgi@%d.service", i))
		}
	}
	t.Logf("CHECK %d requests through NGINX: %d failed, served by %v", 10*stackSockets, len(failures), served)
	code, body, _ = get(ctx, t, base+"/healthz")
	t.Logf("CHECK GET /healthz through NGINX: %d %q", code, strings.TrimSpace(body))
	if code != http.StatusOK {
		t.Errorf("GET /healthz = %d", code)
	}

	// The sandbox of the running unit.
	sec, _, err := m.Exec(ctx, "systemd-analyze", "security", "--no-pager", "wsgi@1.service")
	if err != nil {
		t.Errorf("systemd-analyze security: %v", err)
	}
	t.Logf("systemd-analyze security wsgi@1.service:\n%s", sec)
	score := regexp.MustCompile(`Overall exposure level for wsgi@1\.service: ([0-9.]+) (\S+)`).FindStringSubmatch(sec)
	if score == nil {
		t.Errorf("no overall exposure level in the output")
	} else {
		v, _ := strconv.ParseFloat(score[1], 64)
		if v > 2.0 {
			t.Errorf("exposure level %s, want <= 2.0", score[1])
		}
		t.Logf("CHECK systemd-analyze security wsgi@1.service (running): %s %s (limit 2.0)", score[1], score[2])
	}
}

// placeRelease does by hand what first boot does: a release folder with the app, the current
// symlink, WSGI_APP in the environment file, then the sockets on and NGINX reloaded.
func placeRelease(ctx context.Context, t *testing.T, m *harness.Machine) {
	t.Helper()
	const app = `import os


def app(environ, start_response):
    body = ("unit=%s pid=%d path=%s\n" % (os.environ.get("WSGI_UNIT", "?"), os.getpid(), environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
`
	rel := filepath.Join(m.Root(), "srv/wsgi/releases/r1")
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rel, "hello.py"), []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"ln", "-sfn", "releases/r1", "/srv/wsgi/current"},
		{"sh", "-c", "echo WSGI_APP=hello:app >> /etc/wsgi/wsgi.env"},
		{"systemctl", "enable", "--now", "wsgi.target"},
		{"systemctl", "reload", "nginx"},
	} {
		mustExec(ctx, t, m, cmd...)
	}
}

// checkImageHygiene looks into the golden tarball for per-machine state the bake must not leave.
func checkImageHygiene(ctx context.Context, t *testing.T, golden string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "tar", "-I", "zstd", "-tvf", golden).Output()
	if err != nil {
		t.Fatalf("list %s: %v", golden, err)
	}
	var hostKeys, aptLists, history int
	machineID := "missing"
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			continue
		}
		name := f[len(f)-1]
		switch {
		case strings.HasPrefix(name, "./etc/ssh/ssh_host_"):
			hostKeys++
		case strings.HasPrefix(name, "./var/lib/apt/lists/") && !strings.HasSuffix(name, "/") && !strings.HasSuffix(name, "/lock"):
			aptLists++
		case strings.HasSuffix(name, "/.bash_history"):
			history++
		case name == "./etc/machine-id":
			machineID = f[2] + " bytes"
		}
	}
	if hostKeys != 0 || aptLists != 0 || history != 0 {
		t.Errorf("image hygiene: %d SSH host keys, %d apt list files, %d shell histories left in the image; want none",
			hostKeys, aptLists, history)
	}
	// Empty, not missing (nor "uninitialized"): either of those makes systemd's next boot a
	// first boot, which applies the presets to every unit and so enables wsgi.target before
	// any release exists (Debian has no "disable *" preset).
	if machineID != "0 bytes" {
		t.Errorf("image hygiene: /etc/machine-id is %s, want an empty file (missing or \"uninitialized\" starts systemd's first-boot presets, which enable wsgi.target)", machineID)
	}
	t.Logf("CHECK golden image hygiene: %d SSH host keys, %d apt list files, %d shell histories, /etc/machine-id %s",
		hostKeys, aptLists, history, machineID)
}

// fingerprint is everything the stack owns on a machine: paths with type, mode and owner,
// file contents, installed packages, the app user and the unit states.
func fingerprint(ctx context.Context, t *testing.T, m *harness.Machine) string {
	t.Helper()
	const script = `set -e
paths="/etc/systemd/system/wsgi@.socket /etc/systemd/system/wsgi@.service /etc/systemd/system/wsgi.target /etc/nginx /etc/wsgi /usr/share/wsgi /opt/wsgi /srv/wsgi /var/lib/wsgi /var/lib/wsgi-app"
find $paths -name __pycache__ -prune -o -printf '%p %y %m %u %g %l\n' | sort
find $paths -name __pycache__ -prune -o -type f -print0 | sort -z | xargs -0 sha256sum
dpkg-query -W -f '${Package} ${Version} ${Status}\n'
getent passwd wsgi
getent group wsgi
for u in nginx wsgi.target wsgi@1.socket wsgi@2.socket wsgi@3.socket; do echo "$u $(systemctl is-enabled $u 2>&1 || true)"; done
`
	return mustExec(ctx, t, m, "sh", "-c", script) + "\n"
}

// lineDiff lists the lines only in a or only in b.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// listening returns the wsgi sockets that listen on m.
func listening(ctx context.Context, t *testing.T, m *harness.Machine) []string {
	t.Helper()
	var socks []string
	for _, f := range strings.Fields(mustExec(ctx, t, m, "ss", "-xlnH")) {
		if strings.HasPrefix(f, "/run/wsgi/") && !slices.Contains(socks, f) {
			socks = append(socks, f)
		}
	}
	return socks
}

// unitState runs systemctl is-active or is-enabled; these exit non-zero for "inactive".
func unitState(ctx context.Context, m *harness.Machine, verb, unit string) string {
	out, _, _ := m.Exec(ctx, "systemctl", verb, unit)
	return strings.TrimSpace(out)
}

func logUnit(ctx context.Context, t *testing.T, m *harness.Machine, unit string) {
	t.Helper()
	st, _, _ := m.Exec(ctx, "systemctl", "status", "--no-pager", "-l", unit)
	j, _, _ := m.Exec(ctx, "journalctl", "--no-pager", "-n", "40", "-u", unit)
	t.Logf("%s:\n%s\n%s", unit, st, j)
}

func get(ctx context.Context, t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A new connection per request, as independent clients would make.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func mustExec(ctx context.Context, t *testing.T, m *harness.Machine, cmd ...string) string {
	t.Helper()
	out, _, err := m.Exec(ctx, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func boot(ctx context.Context, t *testing.T, opts harness.BootOptions) *harness.Machine {
	t.Helper()
	m, err := harness.Boot(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// newPackerRun is the real packer in a scratch Packer folder with this plugin installed, and an
// SSH key whose public half (pub) a build machine's seed takes.
func newPackerRun(ctx context.Context, t *testing.T, repoRoot, scratch string) (p *packerRun, pub string) {
	t.Helper()
	packer, err := harness.Packer(ctx, repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	env := harness.PackerEnv(filepath.Join(scratch, "packer"))
	installPlugin(ctx, t, packer, env, repoRoot, scratch)
	key, pub, err := harness.NewSSHKey(scratch)
	if err != nil {
		t.Fatal(err)
	}
	return &packerRun{t: t, packer: packer, env: env, dir: scratch, key: key}, pub
}

// packerRun runs `packer build` with the test's isolated Packer folders.
type packerRun struct {
	t                *testing.T
	packer, dir, key string
	env              []string
}

// build runs one build; a failure is returned so the caller decides whether the test can go on.
func (p *packerRun) build(ctx context.Context, name, host, template string) (string, time.Duration, error) {
	p.t.Helper()
	tpl := filepath.Join(p.dir, name+".pkr.hcl")
	if err := os.WriteFile(tpl, []byte(template), 0o644); err != nil {
		p.t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, p.packer, "build", "-color=false", "-var", "host="+host, "-var", "key="+p.key, tpl)
	cmd.Dir, cmd.Env = p.dir, p.env
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	p.t.Logf("packer build (%s) output:\n%s", name, out)
	if err != nil {
		return string(out), took, fmt.Errorf("packer build (%s): %w", name, err)
	}
	return string(out), took, nil
}

// installPlugin builds the plugin from this repository and installs it into the test's own
// Packer plugin folder the way a user would, with `packer plugins install --path`.
func installPlugin(ctx context.Context, t *testing.T, packer string, env []string, repoRoot, dir string) {
	t.Helper()
	bin := filepath.Join(dir, "packer-plugin-wsgi")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the plugin: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "describe").Output()
	if err != nil {
		t.Fatalf("%s describe: %v", bin, err)
	}
	var desc struct {
		Version      string   `json:"version"`
		Provisioners []string `json:"provisioners"`
	}
	if err := json.Unmarshal(out, &desc); err != nil {
		t.Fatalf("%s describe: %v: %s", bin, err, out)
	}
	if !slices.Contains(desc.Provisioners, "stack") {
		t.Fatalf("the plugin does not register the provisioner (describe: %s); main.go needs "+
			`pps.RegisterProvisioner("stack", new(stack.Provisioner))`, out)
	}
	cmd := exec.CommandContext(ctx, packer, "plugins", "install", "--path", bin, pluginSource)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("packer plugins install: %v\n%s", err, out)
	}
	t.Logf("plugin %s installed from %s", desc.Version, bin)
}

// gunicornWheel makes a gunicorn-20.1.0-py3-none-any.whl without PyPI: the files of Debian's
// python3-gunicorn package repacked with the dist-info a wheel needs (METADATA, WHEEL,
// entry_points.txt, RECORD with hashes). The .deb is cached next to the base image.
func gunicornWheel(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	cache, err := harness.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "python3-gunicorn_"+pinnedVersion+"-*_all.deb"))
	if len(debs) == 0 {
		cmd := exec.CommandContext(ctx, "apt-get", "download", "python3-gunicorn="+debianGunicorn(ctx, t))
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get download python3-gunicorn: %v\n%s", err, out)
		}
		debs, _ = filepath.Glob(filepath.Join(cache, "python3-gunicorn_"+pinnedVersion+"-*_all.deb"))
		if len(debs) == 0 {
			t.Fatalf("apt-get download left no python3-gunicorn_%s .deb in %s", pinnedVersion, cache)
		}
	}
	x := filepath.Join(dir, "gunicorn-deb")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	site := filepath.Join(x, "usr/lib/python3/dist-packages")
	egg := filepath.Join(site, "gunicorn-"+pinnedVersion+".egg-info")
	entryPoints, err := os.ReadFile(filepath.Join(egg, "entry_points.txt"))
	if err != nil {
		t.Fatal(err)
	}

	whl := filepath.Join(dir, "gunicorn-"+pinnedVersion+"-py3-none-any.whl")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record []string
	add := func(name string, data []byte) {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		record = append(record, fmt.Sprintf("%s,sha256=%s,%d", name, base64.RawURLEncoding.EncodeToString(sum[:]), len(data)))
	}
	err = filepath.WalkDir(filepath.Join(site, "gunicorn"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, "__pycache__") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(site, p)
		add(filepath.ToSlash(rel), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	info := "gunicorn-" + pinnedVersion + ".dist-info/"
	add(info+"METADATA", []byte("Metadata-Version: 2.1\nName: gunicorn\nVersion: "+pinnedVersion+
		"\nSummary: WSGI HTTP Server for UNIX (Debian's python3-gunicorn files, repacked for offline tests)\n"+
		"License: MIT\nRequires-Python: >=3.5\nRequires-Dist: setuptools (>=3.0)\n"))
	add(info+"WHEEL", []byte("Wheel-Version: 1.0\nGenerator: packer-plugin-wsgi-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
	add(info+"entry_points.txt", entryPoints)
	add(info+"top_level.txt", []byte("gunicorn\n"))
	record = append(record, info+"RECORD,,")
	w, err := zw.Create(info + "RECORD")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, strings.Join(record, "\n")+"\n")
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(whl, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wheel %s (%d bytes, %d files) from %s", filepath.Base(whl), buf.Len(), len(record), filepath.Base(debs[0]))
	return whl
}

// debianGunicorn is the exact Debian version of python3-gunicorn that packs Gunicorn 20.1.0.
func debianGunicorn(ctx context.Context, t *testing.T) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "apt-cache", "madison", "python3-gunicorn").Output()
	if err != nil {
		t.Fatalf("apt-cache madison python3-gunicorn: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Split(l, "|")
		if len(f) >= 2 && strings.HasPrefix(strings.TrimSpace(f[1]), pinnedVersion+"-") {
			return strings.TrimSpace(f[1])
		}
	}
	t.Fatalf("no python3-gunicorn %s in the host's apt sources:\n%s", pinnedVersion, out)
	return ""
}

// indexDir is where the PEP 503 index lives on the build machine; removed before the snapshot.
const indexDir = pyfixture.IndexDir

// serveIndex writes a PEP 503 "simple" index holding the wheel onto m and serves it on m's
// loopback with Python's http.server in a transient unit, which leaves nothing in the image.
func serveIndex(ctx context.Context, t *testing.T, m *harness.Machine, wheel string) {
	t.Helper()
	b, err := os.ReadFile(wheel)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	name := filepath.Base(wheel)
	root := filepath.Join(m.Root(), indexDir)
	files := map[string]string{
		"simple/index.html":          `<!DOCTYPE html><html><body><a href="gunicorn/">gunicorn</a></body></html>`,
		"simple/gunicorn/index.html": fmt.Sprintf(`<!DOCTYPE html><html><body><a href="../../packages/%s#sha256=%s" data-requires-python="&gt;=3.5">%s</a></body></html>`, name, hex.EncodeToString(sum[:]), name),
		"packages/" + name:           string(b),
	}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { stopIndex(context.Background(), t, m) })
	if err := pyfixture.ServeIndex(ctx, m, indexPort); err != nil {
		t.Fatal(err)
	}
}

// stopIndex stops the index server and removes its files, so the snapshot does not hold them.
func stopIndex(ctx context.Context, t *testing.T, m *harness.Machine) {
	if err := pyfixture.StopIndex(ctx, m); err != nil {
		t.Logf("stop the index: %v", err)
	}
}
