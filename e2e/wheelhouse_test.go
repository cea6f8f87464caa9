//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/pyfixture"
)

// TestWheelhouse bakes a golden image with requirements_file through the real packer: the
// wheelhouse holds Django, its dependencies, a pure-Python package and a C extension compiled
// during the bake, from a PEP 503 index on the build machine's loopback (pyfixture), and the bake
// installs the file into the baked venv. The build tools must be gone from the image. Gunicorn is
// the distribution's, so the venvs see the system's packages (the harness's base image has
// Debian's Django, which then satisfies Django==X first: the C extension and the pure-Python
// fixture prove where the rest came from). A Django app whose requirements file is the baked
// one boots on the baked venv without pip; one with another file of the same pins boots with no
// index at all (offline from the wheelhouse); one whose requirements name a package the
// wheelhouse lacks fails first boot naming it.
func TestWheelhouse(t *testing.T) { harness.OnFirstRelease(t, testWheelhouse) }

func testWheelhouse(t *testing.T, release harness.Release) {
	ctx, log, repoRoot := begin(t, 40*time.Minute)
	scratch := t.TempDir()

	img, err := harness.BaseImage(ctx, release, log)
	if err != nil {
		t.Fatal(err)
	}
	pb, pub := newPackerRun(ctx, t, repoRoot, scratch)

	build := boot(ctx, t, harness.BootOptions{Image: img, Name: "wh-bake", UserData: harness.SSHUserData("packer", pub), WorkDir: scratch, Log: log})
	versions := writeShopIndex(t, build.Root())
	startIndex(ctx, t, build)
	reqs := pyfixture.ShopRequirements(versions)
	reqFile := filepath.Join(scratch, "requirements.txt")
	writeFixture(t, reqFile, reqs)
	out, took, err := pb.build(ctx, "wheelhouse", build.IP(), stackTemplate(fmt.Sprintf(`    sockets           = %d
    gunicorn_source   = "distro"
    pip_index_url     = "http://127.0.0.1:%d/simple/"
    requirements_file = %q`, stackSockets, indexPort, reqFile)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CHECK packer build with requirements_file: %v", took.Round(100*time.Millisecond))
	cp := "cp" + strings.ReplaceAll(release.Python, ".", "")
	for _, want := range []string{"wheelhouse /opt/wsgi/wheelhouse", "removing the build tools:", "baked venv /opt/wsgi/wheelhouse/.venv:", "fastcounter-1.0-" + cp + "-" + cp + "-linux_x86_64.whl",
		"django-" + versions["django"] + "-py3-none-any.whl"} {
		if !strings.Contains(out, want) {
			t.Errorf("packer output lacks %q", want)
		}
	}
	stopIndex(ctx, t, build)

	// The build tools were installed for the bake and are gone again.
	for _, p := range []string{"build-essential", "gcc", "python3-dev", "libpython" + release.Python + "-dev"} {
		if st, _, err := build.Exec(ctx, "dpkg-query", "-W", "-f=${Status}", p); err == nil && strings.Contains(st, "installed") && !strings.Contains(st, "not-installed") {
			t.Errorf("build tool %s is in the image: %q", p, st)
		}
	}
	if cc, _, err := build.Exec(ctx, "sh", "-c", "command -v gcc cc x86_64-linux-gnu-gcc || true"); err != nil || strings.TrimSpace(cc) != "" {
		t.Errorf("a compiler is in the image: %q %v", cc, err)
	}
	desc := mustExec(ctx, t, build, "cat", "/etc/wsgi-stack.json")
	if !strings.Contains(desc, `"wheelhouse": {`) || !strings.Contains(desc, `"dir": "/opt/wsgi/wheelhouse"`) || !strings.Contains(desc, `"venv": "/opt/wsgi/wheelhouse/.venv"`) {
		t.Errorf("/etc/wsgi-stack.json does not record the wheelhouse:\n%s", desc)
	}
	wheels := mustExec(ctx, t, build, "ls", "/opt/wsgi/wheelhouse")
	t.Logf("CHECK wheelhouse: %s; no build tool or compiler left in the image", strings.Join(strings.Fields(wheels), " "))

	// The releases, served from the host's loopback and published to the machines.
	srv := t.TempDir()
	shop := pyfixture.ShopFiles(reqs)
	shopSHA := writeTarball(t, filepath.Join(srv, "shop.tar.gz"), shop)
	// Another file with the same pins: not the baked one, so it installs from the wheelhouse.
	shop["requirements.txt"] = reqs + "# the same pins, another file\n"
	otherSHA := writeTarball(t, filepath.Join(srv, "shop-other.tar.gz"), shop)
	shop["requirements.txt"] = reqs + "notbaked==1.0\n"
	missingSHA := writeTarball(t, filepath.Join(srv, "shop-missing.tar.gz"), shop)
	base := serveHost(t, srv)

	golden := filepath.Join(scratch, "golden-wheelhouse.tar.zst")
	if err := build.Snapshot(ctx, golden); err != nil {
		t.Fatal(err)
	}
	build.Close()

	app := func(url, sha string) []byte {
		p, err := cloudinit.Render(cloudinit.App{
			Source:               cloudinit.Source{TarballURL: url, SHA256: sha},
			WSGIApp:              "mysite.wsgi:application",
			Framework:            cloudinit.FrameworkDjango,
			DjangoSettingsModule: "mysite.settings",
			Env:                  map[string]string{"DATABASE_PATH": "/var/lib/wsgi-app/db.sqlite3"},
		})
		if err != nil {
			t.Fatal(err)
		}
		return p.UserData
	}

	fromVenv := regexp.MustCompile(`from=/srv/wsgi/releases/[^/ ]+/\.venv/lib/python3\.\d+/site-packages`)
	t.Run("the baked venv", func(t *testing.T) {
		m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "wh-baked", UserData: app(base+"/shop.tar.gz", shopSHA), WorkDir: scratch, Log: log})
		checkServing(ctx, t, m, "triangle=5050 greeting="+pyfixture.Greeting)
		_, body, _ := get(ctx, t, "http://"+m.IP()+"/")
		if !fromVenv.MatchString(body) || !strings.Contains(body, "django="+versions["django"]) {
			t.Errorf("the C extension is not the baked venv's, seen from the release venv: %q", body)
		}
		if target := strings.TrimSpace(mustExec(ctx, t, m, "readlink", "/srv/wsgi/current/.venv")); target != "/opt/wsgi/wheelhouse/.venv" {
			t.Errorf("the release venv is %q, want a symlink to the baked venv /opt/wsgi/wheelhouse/.venv", target)
		}
		logText := mustExec(ctx, t, m, "cat", "/var/log/wsgi-deploy.log")
		if !strings.Contains(logText, "the image's baked venv /opt/wsgi/wheelhouse/.venv, for requirements.txt as baked") ||
			strings.Contains(logText, "from the image's wheelhouse") || strings.Contains(logText, "Processing ") {
			t.Errorf("the deploy log does not say it took the baked venv without pip:\n%s", logText)
		}
		t.Logf("CHECK first boot with the baked venv: %s", strings.TrimSpace(body))
		t.Logf("deploy journal:\n%s", mustExec(ctx, t, m, "journalctl", "-t", "wsgi-deploy", "-o", "short-unix", "--no-pager"))
	})

	t.Run("offline from the wheelhouse", func(t *testing.T) {
		m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "wh-shop", UserData: app(base+"/shop-other.tar.gz", otherSHA), WorkDir: scratch, Log: log})
		checkServing(ctx, t, m, "triangle=5050 greeting="+pyfixture.Greeting)
		_, body, _ := get(ctx, t, "http://"+m.IP()+"/")
		if !fromVenv.MatchString(body) ||
			!strings.Contains(body, "django="+versions["django"]) {
			t.Errorf("the C extension is not the wheelhouse's, in the release venv: %q", body)
		}
		logText := mustExec(ctx, t, m, "cat", "/var/log/wsgi-deploy.log")
		if !strings.Contains(logText, "from the image's wheelhouse /opt/wsgi/wheelhouse (offline)") {
			t.Errorf("the deploy log does not say it installed offline from the wheelhouse:\n%s", logText)
		}
		t.Logf("CHECK offline first boot: %s", strings.TrimSpace(body))
		// The deploy's steps, with their times, for the record.
		t.Logf("deploy journal:\n%s", mustExec(ctx, t, m, "journalctl", "-t", "wsgi-deploy", "-o", "short-unix", "--no-pager"))
		t.Logf("cloud-init analyze blame:\n%s", mustExec(ctx, t, m, "sh", "-c", "cloud-init analyze blame | head -n 8"))
	})

	t.Run("a requirement missing from the wheelhouse", func(t *testing.T) {
		m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "wh-missing", UserData: app(base+"/shop-missing.tar.gz", missingSHA), WorkDir: scratch, Log: log, AllowCloudInitErrors: true})
		checkFailed(ctx, t, m, "requirements", "requirement notbaked==1.0 is not in the image's wheelhouse /opt/wsgi/wheelhouse (baked from /opt/wsgi/wheelhouse/requirements.txt)")
	})
}

// writeShopIndex writes the shop's index (pyfixture.ShopDistributions) into the build
// machine's root at pyfixture.IndexDir and returns the versions of the repacked packages.
func writeShopIndex(t *testing.T, root string) map[string]string {
	t.Helper()
	files, versions, err := pyfixture.ShopDistributions(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := pyfixture.WriteIndex(filepath.Join(root, pyfixture.IndexDir), files); err != nil {
		t.Fatal(err)
	}
	return versions
}

// startIndex serves the index on the machine's loopback; stopIndex removes it before the snapshot.
func startIndex(ctx context.Context, t *testing.T, m *harness.Machine) {
	t.Helper()
	t.Cleanup(func() { stopIndex(context.Background(), t, m) })
	if err := pyfixture.ServeIndex(ctx, m, indexPort); err != nil {
		t.Fatal(err)
	}
}

// serveHost serves dir on the host's loopback and publishes it to the machines; it returns
// the base URL the machines use.
func serveHost(t *testing.T, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u, err := harness.Publish("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(u, "/")
}
