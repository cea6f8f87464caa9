//go:build e2e

package e2e

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// The C-extension fixture: an sdist with an in-tree PEP 517 backend that compiles one C file
// with the interpreter's compiler and headers, so building it needs build-essential and
// python3-dev and nothing from an index (no setuptools wheel exists offline here).
var fastcounterFiles = map[string]string{
	"pyproject.toml": `[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
`,
	"PKG-INFO": "Metadata-Version: 2.1\nName: fastcounter\nVersion: 1.0\n",
	"fastcounter/__init__.py": `from ._speedups import triangle

__all__ = ["triangle"]
`,
	"src/speedups.c": `#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* triangle(n): 1 + 2 + ... + n, in C. */
static PyObject *triangle(PyObject *self, PyObject *args) {
    long long n, sum = 0;
    if (!PyArg_ParseTuple(args, "L", &n))
        return NULL;
    for (long long i = 1; i <= n; i++)
        sum += i;
    return PyLong_FromLongLong(sum);
}

static PyMethodDef methods[] = {{"triangle", triangle, METH_VARARGS, "1 + ... + n"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};
PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
`,
	"backend.py": `"""A minimal PEP 517 backend: compiles src/speedups.c into a platform wheel."""
import base64
import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

NAME, VERSION = "fastcounter", "1.0"


def _tag():
    impl = "cp%d%d" % sys.version_info[:2]
    return "%s-%s-%s" % (impl, impl, sysconfig.get_platform().replace("-", "_").replace(".", "_"))


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    tag = _tag()
    so = "_speedups" + sysconfig.get_config_var("EXT_SUFFIX")
    out = os.path.join(tempfile.mkdtemp(), so)
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    subprocess.check_call(cc + ["-shared", "-fPIC", "-O2", "-I" + sysconfig.get_paths()["include"], "src/speedups.c", "-o", out])
    info = "%s-%s.dist-info/" % (NAME, VERSION)
    files = {
        "fastcounter/__init__.py": open("fastcounter/__init__.py", "rb").read(),
        "fastcounter/" + so: open(out, "rb").read(),
        info + "METADATA": ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (NAME, VERSION)).encode(),
        info + "WHEEL": ("Wheel-Version: 1.0\nGenerator: fastcounter-backend\nRoot-Is-Purelib: false\nTag: %s\n" % tag).encode(),
    }
    name = "%s-%s-%s.whl" % (NAME, VERSION, tag)
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
        record.append(info + "RECORD,,")
        z.writestr(info + "RECORD", "\n".join(record) + "\n")
    return name
`,
}

// The shop: a Django app whose page shows where each requirement was imported from.
var shopURLs = `import os

import asgiref
import django
import fastcounter
import greeting
import sqlparse
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.urls import path


def health(request):
    return HttpResponse("ok\n")


def index(request):
    return HttpResponse("unit=%s users=%d django=%s triangle=%d greeting=%s sqlparse=%s from=%s\n" % (
        os.environ.get("WSGI_UNIT"), User.objects.count(), django.get_version(), fastcounter.triangle(100),
        greeting.hello(), sqlparse.__version__, os.path.dirname(os.path.dirname(fastcounter.__file__))))


urlpatterns = [path("healthz", health), path("", index)]
`

// TestWheelhouse bakes a golden image with requirements_file through the real packer: the
// wheelhouse holds Django, its dependencies, a pure-Python package and a C extension compiled
// during the bake, from a PEP 503 index on the build machine's loopback. The build tools must be
// gone from the image. Gunicorn is the distribution's, so the venvs see the system's packages
// (the harness's base image has Debian's Django, which then satisfies Django==X first: the
// C extension and the pure-Python fixture prove where the rest came from). A Django app boots from it with no index at all (offline from the
// wheelhouse), and an app whose requirements name a package the wheelhouse lacks fails first
// boot naming it.
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
	reqs := fmt.Sprintf("# the shop's pins\nDjango==%s\nasgiref==%s\nsqlparse==%s\nfastcounter==1.0\ngreeting==1.0\n",
		versions["django"], versions["asgiref"], versions["sqlparse"])
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
	for _, want := range []string{"wheelhouse /opt/wsgi/wheelhouse", "removing the build tools:", "fastcounter-1.0-" + cp + "-" + cp + "-linux_x86_64.whl",
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
	if !strings.Contains(desc, `"wheelhouse": {`) || !strings.Contains(desc, `"dir": "/opt/wsgi/wheelhouse"`) {
		t.Errorf("/etc/wsgi-stack.json does not record the wheelhouse:\n%s", desc)
	}
	wheels := mustExec(ctx, t, build, "ls", "/opt/wsgi/wheelhouse")
	t.Logf("CHECK wheelhouse: %s; no build tool or compiler left in the image", strings.Join(strings.Fields(wheels), " "))

	// The releases, served from the host's loopback and published to the machines.
	srv := t.TempDir()
	shop := map[string]string{"requirements.txt": reqs}
	for k, v := range djangoFiles {
		shop[k] = v
	}
	shop["mysite/urls.py"] = shopURLs
	shopSHA := writeTarball(t, filepath.Join(srv, "shop.tar.gz"), shop)
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

	t.Run("offline from the wheelhouse", func(t *testing.T) {
		m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "wh-shop", UserData: app(base+"/shop.tar.gz", shopSHA), WorkDir: scratch, Log: log})
		checkServing(ctx, t, m, "triangle=5050 greeting=hello from the wheelhouse")
		_, body, _ := get(ctx, t, "http://"+m.IP()+"/")
		if !regexp.MustCompile(`from=/srv/wsgi/releases/[^/ ]+/\.venv/lib/python3\.\d+/site-packages`).MatchString(body) ||
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

// writeShopIndex writes a PEP 503 index into the build machine's root at indexDir: Django,
// asgiref and sqlparse (Debian's files from the machine itself, repacked as wheels), a
// pure-Python wheel made here, and the C extension as an sdist. It returns the versions of the
// repacked packages.
func writeShopIndex(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string][]byte{} // file name → content
	versions := map[string]string{}
	site := filepath.Join(root, "usr/lib/python3/dist-packages")
	for _, name := range []string{"django", "asgiref", "sqlparse"} {
		infos, _ := filepath.Glob(filepath.Join(site, name+"-*.dist-info"))
		if len(infos) != 1 {
			t.Fatalf("want one %s dist-info in the base image, got %q", name, infos)
		}
		v := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(infos[0]), name+"-"), ".dist-info")
		versions[name] = v
		files[fmt.Sprintf("%s-%s-py3-none-any.whl", name, v)] = repackWheel(t, root, site, name, filepath.Base(infos[0]))
	}
	w := newWheel(t)
	w.add("greeting/__init__.py", []byte("def hello():\n    return \"hello from the wheelhouse\"\n"))
	w.add("greeting-1.0.dist-info/METADATA", []byte("Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n"))
	w.add("greeting-1.0.dist-info/WHEEL", []byte("Wheel-Version: 1.0\nGenerator: packer-plugin-wsgi-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
	files["greeting-1.0-py3-none-any.whl"] = w.close("greeting-1.0.dist-info/")
	sdist := map[string]string{}
	for k, v := range fastcounterFiles {
		sdist["fastcounter-1.0/"+k] = v
	}
	files["fastcounter-1.0.tar.gz"] = tarGz(t, sdist)

	dir := filepath.Join(root, indexDir)
	byProject := map[string][]string{}
	for name, content := range files {
		writeFixture(t, filepath.Join(dir, "packages", name), string(content))
		project := strings.ToLower(strings.SplitN(name, "-", 2)[0])
		sum := sha256.Sum256(content)
		byProject[project] = append(byProject[project], fmt.Sprintf(`<a href="../../packages/%s#sha256=%s">%s</a>`, name, hex.EncodeToString(sum[:]), name))
	}
	var projects []string
	for p, links := range byProject {
		projects = append(projects, fmt.Sprintf(`<a href="%s/">%s</a>`, p, p))
		writeFixture(t, filepath.Join(dir, "simple", p, "index.html"), "<!DOCTYPE html><html><body>"+strings.Join(links, "")+"</body></html>")
	}
	sort.Strings(projects)
	writeFixture(t, filepath.Join(dir, "simple/index.html"), "<!DOCTYPE html><html><body>"+strings.Join(projects, "")+"</body></html>")
	return versions
}

// repackWheel makes a pure-Python wheel of the package top (a folder of site) and its
// dist-info, as Debian installed them. Symlinks (Debian points some of Django's JavaScript at
// /usr/share/javascript) are resolved inside root; dangling ones are left out.
func repackWheel(t *testing.T, root, site, top, info string) []byte {
	t.Helper()
	w := newWheel(t)
	err := filepath.WalkDir(filepath.Join(site, top), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, "__pycache__") {
			return err
		}
		src := p
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				src = filepath.Join(root, target)
			} else {
				src = filepath.Join(filepath.Dir(p), target)
			}
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return nil // dangling in the image too
		}
		rel, _ := filepath.Rel(site, p)
		w.add(filepath.ToSlash(rel), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"METADATA", "entry_points.txt", "top_level.txt"} {
		if b, err := os.ReadFile(filepath.Join(site, info, f)); err == nil {
			w.add(info+"/"+f, b)
		}
	}
	w.add(info+"/WHEEL", []byte("Wheel-Version: 1.0\nGenerator: packer-plugin-wsgi-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
	return w.close(info + "/")
}

// wheel writes a wheel's zip with its RECORD.
type wheel struct {
	t      *testing.T
	buf    bytes.Buffer
	zw     *zip.Writer
	record []string
}

func newWheel(t *testing.T) *wheel {
	w := &wheel{t: t}
	w.zw = zip.NewWriter(&w.buf)
	return w
}

func (w *wheel) add(name string, data []byte) {
	f, err := w.zw.Create(name)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		w.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	w.record = append(w.record, fmt.Sprintf("%s,sha256=%s,%d", name, base64.RawURLEncoding.EncodeToString(sum[:]), len(data)))
}

func (w *wheel) close(info string) []byte {
	w.record = append(w.record, info+"RECORD,,")
	f, err := w.zw.Create(info + "RECORD")
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := f.Write([]byte(strings.Join(w.record, "\n") + "\n")); err != nil {
		w.t.Fatal(err)
	}
	if err := w.zw.Close(); err != nil {
		w.t.Fatal(err)
	}
	return w.buf.Bytes()
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// startIndex serves indexDir on the machine's loopback in a transient unit (pip trusts plain
// HTTP only there); stopIndex removes it before the snapshot.
func startIndex(ctx context.Context, t *testing.T, m *harness.Machine) {
	t.Helper()
	mustExec(ctx, t, m, "systemd-run", "--unit=wsgi-e2e-index", "--property=DynamicUser=yes",
		"python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", indexDir, strconv.Itoa(indexPort))
	t.Cleanup(func() { stopIndex(context.Background(), t, m) })
	url := fmt.Sprintf("http://127.0.0.1:%d/simple/django/", indexPort)
	for start := time.Now(); ; {
		if _, _, err := m.Exec(ctx, "curl", "-fsS", "-o", "/dev/null", url); err == nil {
			return
		} else if time.Since(start) > 15*time.Second {
			t.Fatalf("the index on %s does not answer: %v", m.Name(), err)
		}
		time.Sleep(200 * time.Millisecond)
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
