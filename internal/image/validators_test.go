package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// MaxSecurityExposure is the highest `systemd-analyze security` score wsgi@.service may have;
// MaxNginxExposure is nginx.service's with the stack's drop-in (the package's own unit: 9.6).
const (
	MaxSecurityExposure = 1.1
	MaxNginxExposure    = 3.0
)

// requireTool skips when a validator is absent, unless WSGI_REQUIRE_VALIDATORS=1 (set by CI),
// where a missing validator is a failure: CI must never pass with the validators skipped.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("WSGI_REQUIRE_VALIDATORS") == "1" {
			t.Fatalf("%s not found and WSGI_REQUIRE_VALIDATORS=1: install it (see .ci/run)", name)
		}
		t.Skipf("%s not found: skipping this validator (CI installs it)", name)
	}
	return p
}

// unitRoot lays the rendered units into a temporary root with the host's stock units and
// the binaries ExecStart names, which is what `systemd-analyze verify --root` checks against.
func unitRoot(t *testing.T, b *Bundle) string {
	t.Helper()
	root := t.TempDir()
	hostUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(hostUnits); err != nil {
		t.Skipf("no stock systemd units at %s: %v", hostUnits, err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", hostUnits, filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy stock units: %v: %s", err, out)
	}
	for _, f := range b.Files {
		if !strings.HasPrefix(f.Path, UnitDir+"/") {
			continue
		}
		writeFile(t, filepath.Join(root, f.Path), f.Content, 0o644)
	}
	// The venv's interpreter stands for the baked venv, which only exists on the image.
	writeFile(t, filepath.Join(root, b.Stack.VenvPython()), []byte("#!/bin/sh\n"), 0o755)
	kill, err := os.ReadFile("/bin/kill")
	if err != nil {
		t.Fatalf("read /bin/kill: %v", err)
	}
	writeFile(t, filepath.Join(root, "bin/kill"), kill, 0o755)
	return root
}

func writeFile(t *testing.T, p string, content []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
}

var exposureRe = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func TestValidatorsSystemd(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze")
	for name, s := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			b := Render(s)
			root := unitRoot(t, b)
			units := []string{"wsgi.target"}
			for _, i := range s.Instances() {
				units = append(units, s.ServiceUnit(i), s.SocketUnit(i))
			}
			cmd := exec.Command(analyze, append([]string{"verify", "--root=" + root}, units...)...)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			// verify reports unknown keys and bad values as warnings with exit 0: any output fails.
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", strings.Join(units, " "), err, out)
			}
			t.Logf("systemd-analyze verify: %d units OK (%s)", len(units), strings.Join(units, " "))

			for _, u := range []struct {
				unit  string
				limit float64
			}{{s.ServiceUnit(1), MaxSecurityExposure}, {"nginx.service", MaxNginxExposure}} {
				score, out := securityExposure(t, analyze, root, u.unit)
				// make validate prints this line: the score of each unit the stack sandboxes.
				t.Logf("systemd-analyze security %s: exposure %.1f (limit %.1f)", u.unit, score, u.limit)
				if score > u.limit {
					t.Errorf("%s exposure %.1f is above %.1f:\n%s", u.unit, score, u.limit, out)
				}
			}
		})
	}
}

// securityExposure runs `systemd-analyze security` offline on one unit of root and returns the
// overall exposure and the output.
func securityExposure(t *testing.T, analyze, root, unit string) (float64, []byte) {
	t.Helper()
	out, err := exec.Command(analyze, "security", "--offline=yes", "--root="+root, unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security %s: %v\n%s", unit, err, out)
	}
	m := exposureRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in systemd-analyze security output:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("exposure %q: %v", m[1], err)
	}
	if os.Getenv("WSGI_SECURITY_DETAIL") == "1" {
		t.Logf("%s", out)
	}
	return score, out
}

func TestValidatorsNginx(t *testing.T) {
	nginx := requireTool(t, "nginx")
	mime, err := os.ReadFile("/etc/nginx/mime.types")
	if err != nil {
		t.Skipf("no /etc/nginx/mime.types: %v", err)
	}
	for name, s := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			b := Render(s)
			prefix := t.TempDir()
			writeFile(t, filepath.Join(prefix, "mime.types"), mime, 0o644)
			for _, f := range b.Files {
				if rel, ok := strings.CutPrefix(f.Path, "/etc/nginx/"); ok {
					writeFile(t, filepath.Join(prefix, rel), f.Content, 0o644)
				}
			}
			// The same http context the distributions give conf.d/*.conf.
			main := fmt.Sprintf("pid %s/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n    include mime.types;\n    access_log off;\n    include conf.d/wsgi.conf;\n}\n", prefix)
			writeFile(t, filepath.Join(prefix, "nginx.conf"), []byte(main), 0o644)
			out, err := exec.Command(nginx, "-t", "-q", "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf")).CombinedOutput()
			if err != nil {
				t.Fatalf("nginx -t: %v\n%s", err, out)
			}
			t.Logf("nginx -t: %s OK", NginxSite)
		})
	}
}

// TestValidatorsCatchBrokenFiles proves the validators above can fail: a broken unit and a
// broken site must be rejected, or a green run would mean nothing.
func TestValidatorsCatchBrokenFiles(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze")
	nginx := requireTool(t, "nginx")
	b := Render(Default())
	for i, f := range b.Files {
		if strings.HasSuffix(f.Path, "/wsgi@.service") {
			if !bytes.Contains(f.Content, []byte("\nKillMode=control-group\n")) {
				t.Fatal("wsgi@.service has no KillMode=control-group line to break")
			}
			b.Files[i].Content = bytes.Replace(f.Content, []byte("\nKillMode=control-group\n"), []byte("\nKillMode=sometimes\n"), 1)
		}
	}
	root := unitRoot(t, b)
	cmd := exec.Command(analyze, "verify", "--root="+root, "wsgi@1.service")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err == nil && len(bytes.TrimSpace(out)) == 0 {
		t.Error("systemd-analyze verify accepted KillMode=sometimes silently")
	}

	prefix := t.TempDir()
	writeFile(t, filepath.Join(prefix, "nginx.conf"), []byte("events {}\nhttp { upstream u { server unix:/x.sock; } server { location / { proxy_pass http://nowhere_upstream_x; } } }\nerror_log stderr;\npid "+prefix+"/p;\n"), 0o644)
	if out, err := exec.Command(nginx, "-t", "-q", "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf")).CombinedOutput(); err == nil {
		t.Errorf("nginx -t accepted a proxy_pass to a missing upstream:\n%s", out)
	}
}

// TestValidatorsCtl runs the rendered wsgi-ctl with the host's Python: it must compile, print its
// help with exit 0 and refuse an unknown command or option with exit 2, the usage code a
// script tests for.
func TestValidatorsCtl(t *testing.T) {
	python := requireTool(t, "python3")
	b := Render(Default())
	var ctl []byte
	for _, f := range b.Files {
		if f.Path == "/usr/local/sbin/wsgi-ctl" {
			ctl = f.Content
			if f.Mode.Perm() != 0o755 {
				t.Errorf("wsgi-ctl mode %04o, want 0755", f.Mode.Perm())
			}
		}
	}
	if ctl == nil {
		t.Fatal("Render has no /usr/local/sbin/wsgi-ctl")
	}
	p := filepath.Join(t.TempDir(), "wsgi-ctl")
	writeFile(t, p, ctl, 0o755)
	if out, err := exec.Command(python, "-m", "py_compile", p).CombinedOutput(); err != nil {
		t.Fatalf("py_compile wsgi-ctl: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "exit codes:"},
		{[]string{"bogus"}, 2, "unknown command 'bogus'"},
		{[]string{"status", "--frobnicate"}, 2, "unknown option --frobnicate"},
		{[]string{"restart", "9"}, 2, "unit must be a number from 1 to 3"},
		{[]string{"prune", "--keep", "x"}, 2, "--keep needs a number"},
		{nil, 2, "no command"},
	} {
		out, err := exec.Command(python, append([]string{p}, c.args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(string(out), c.want) {
			t.Errorf("wsgi-ctl %s: exit %d, want %d with %q:\n%s", strings.Join(c.args, " "), code, c.code, c.want, out)
		}
	}
}
