package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

func deployOf(t *testing.T, s Stack) string {
	t.Helper()
	f := Render(s).File(contract.DeployProgram)
	if f == nil || f.Mode != 0o755 {
		t.Fatalf("the bundle has no executable %s", contract.DeployProgram)
	}
	return string(f.Content)
}

// TestDeployContract checks the baked deploy against the stack it was rendered for: its paths and
// units, the order of the steps, and what the failure paths undo.
func TestDeployContract(t *testing.T) {
	script := deployOf(t, Default())
	order := []string{
		"APP_FILE='/etc/wsgi-app.conf'", "PHASE=preflight", `. "$APP_FILE"`, `[ "${WSGI_SCHEMA:-}" = 1 ]`,
		"PHASE=environment", "secrets-env", "PHASE=fetch", "PHASE=release",
		`'/opt/wsgi/venv/bin/python' -m venv --without-pip "$REL/.venv"`,
		`'/opt/wsgi/venv/bin/python' -m pip --python "$REL/.venv/bin/python" install`,
		"switch_release() {", "PHASE=switch",
		`install -m 0640 -o root -g 'wsgi' "$WORK/env.installed" '/etc/wsgi/wsgi.env'`,
		`ln -sfn "$REL" '/srv/wsgi'/.current.new`, `mv -T '/srv/wsgi'/.current.new '/srv/wsgi/current'`,
		"start_units() {", "systemctl enable --now --no-reload --quiet 'wsgi.target' && systemctl start 'wsgi@1.service' 'wsgi@2.service' 'wsgi@3.service' && return 0",
		`if [ "$MODE" = first-boot ] && [ ${#WSGI_HOOKS_BEFORE_SWITCH[@]} -eq 0 ] && [ ${#WSGI_HOOKS_AFTER_SWITCH[@]} -eq 0 ]; then`,
		": >'/run/wsgi-first-boot.gate'", "switch_release", "systemctl start 'wsgi@1.service' &",
		`AS_APP_ENV=(WSGI_MIGRATE_LOCK="${WSGI_DJANGO_MIGRATE_LOCK:-database}"`, "WSGI_COLLECTSTATIC=1)",
		`exec python "$WSGI_MANAGE_PY" shell -c "import runpy; runpy.run_path(\"/usr/local/lib/wsgi/wsgi-migrate\", run_name=\"__main__\")"'`,
		`PHASE="django collectstatic"`, `die "django collectstatic failed: $reason"`, `die "django migrate failed:`,
		`AS_APP_ENV=()`, `[ -z "$EARLY" ] || rm -f '/run/wsgi-first-boot.gate'`, `log "django migrate and collectstatic done"`,
		`PHASE="hooks_before_switch[$i]"`, `[ -n "$EARLY" ] || switch_release`,
		`PHASE="hooks_after_switch[$i]"`, `if [ "$MODE" = release ]`, `echo "release $REL"`,
		// With the gate, the first unit alone until NGINX answers through it; then the others.
		"PHASE=sockets", `wait "$UNITS_STARTING" || true`, "systemctl reset-failed 'wsgi@1.service' 'wsgi@1.socket'",
		"units_up 'wsgi@1.service'", "rm -f '/run/wsgi-first-boot.gate'", `log "first unit started:`,
		"\nelse\n\tstart_units\n", `log "units started"`,
		"systemctl reload-or-restart nginx",
		`[ -n "$HEALTH" ] || HEALTH='/healthz'`, `log "serving through NGINX:`,
		"if [ -n \"$EARLY\" ]; then\n\tPHASE=sockets\n\tstart_units\n", "'/run/wsgi/app-3.sock'",
		`PHASE="lifecycle hook"`, "complete_hook CONTINUE || die", ">'/var/lib/wsgi/deployed'",
	}
	at := 0
	for _, step := range order {
		i := strings.Index(script[at:], step)
		if i < 0 {
			t.Fatalf("step %q missing or out of order in the deploy script", step)
		}
		at += i + len(step)
	}
	for _, want := range []string{
		"set -Eeuo pipefail",
		"systemctl disable --now --quiet 'wsgi.target' 'wsgi@1.socket' 'wsgi@2.socket' 'wsgi@3.socket' || true",
		"logger -p user.err -t wsgi-deploy",
		"LOG='/var/log/wsgi-deploy.log'",
		"runuser -u 'wsgi' --",
		`log "switched back to $PREVIOUS"`,
		"'/usr/local/lib/wsgi/wsgi-aws' --retries",
		// A failed first boot abandons the launch hook, after the sockets are off.
		"sockets disabled; NGINX answers 503 with the maintenance page; see $LOG\"\n\tif [ -n \"${WSGI_LIFECYCLE_HOOK:-}\" ] && [ -x '/usr/local/lib/wsgi/wsgi-aws' ]; then\n\t\tcomplete_hook ABANDON ||",
		`aws_helper complete-lifecycle-action --hook "$WSGI_LIFECYCLE_HOOK" --result "$1"`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("deploy script lacks %q", want)
		}
	}
	if strings.Contains(script, " aws ") {
		t.Error("the deploy must not call the AWS CLI")
	}
}

// TestValidatorsDeployScript runs bash -n and, when present, shellcheck on every golden stack's deploy.
func TestValidatorsDeployScript(t *testing.T) {
	bash := requireTool(t, "bash")
	for name, s := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "wsgi-deploy")
			writeFile(t, f, []byte(deployOf(t, s)), 0o755)
			if msg, err := exec.Command(bash, "-n", f).CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v\n%s", err, msg)
			}
			if sc, err := exec.LookPath("shellcheck"); err == nil {
				if msg, err := exec.Command(sc, "-s", "bash", f).CombinedOutput(); err != nil {
					t.Fatalf("shellcheck: %v\n%s", err, msg)
				}
			} else {
				t.Log("shellcheck not found: only bash -n ran")
			}
		})
	}
}

// TestValidatorsDeployScriptCatchesErrors proves bash -n can fail here.
func TestValidatorsDeployScriptCatchesErrors(t *testing.T) {
	bash := requireTool(t, "bash")
	f := filepath.Join(t.TempDir(), "broken")
	writeFile(t, f, []byte("#!/bin/bash\nif true; then\n"), 0o755)
	if err := exec.Command(bash, "-n", f).Run(); err == nil {
		t.Fatal("bash -n accepted a script with an unclosed if")
	}
}

// With a baked wheelhouse the deploy gives a release with the baked requirements file the baked
// venv, installs any other file offline from the wheelhouse unless the payload names where to
// install from, and a requirement missing from it fails with a message naming it and the fix.
func TestDeployWheelhouse(t *testing.T) {
	without := deployOf(t, Default())
	stack := Stack{Requirements: "Django\n"}.WithDefaults()
	with := deployOf(t, stack)
	// The baked venv only for the baked file, byte for byte, with no index or constraints named,
	// before any venv is made or pip runs; then the offline install.
	order := []string{
		`if [ ! -f "$REL/$REQ" ]; then`,
		`elif [ ${#WSGI_PIP_ARGS[@]} -eq 0 ] && [ -z "$WSGI_PIP_CONSTRAINTS_FILE" ] && [ -x '/opt/wsgi/wheelhouse/.venv/bin/python' ] &&`,
		`[ "$(sha256_of "$REL/$REQ")" = '` + stack.RequirementsSHA256() + `' ]; then`,
		`ln -s '/opt/wsgi/wheelhouse/.venv' "$REL/.venv"`,
		`log "requirements installed at bake time: no pip at boot"`,
		"else\n\tmake_venv\n",
		`PIP_FROM=(--no-index --find-links '/opt/wsgi/wheelhouse')`,
		`-m pip --python "$REL/.venv/bin/python" install`,
	}
	at := 0
	for _, step := range order {
		i := strings.Index(with[at:], step)
		if i < 0 {
			t.Fatalf("step %q missing or out of order in the deploy with a wheelhouse", step)
		}
		at += i + len(step)
	}
	for _, want := range []string{"/opt/wsgi/wheelhouse/.venv", `sha256_of "$REL/$REQ"`} {
		if strings.Contains(without, want) {
			t.Errorf("deploy without a wheelhouse has %q", want)
		}
	}
	for _, want := range []string{
		`PIP_FROM=(--no-index --find-links '/opt/wsgi/wheelhouse')`,
		`if [ ${#WSGI_PIP_ARGS[@]} -eq 0 ]; then`,
		`requirement $missing is not in the image's wheelhouse "'/opt/wsgi/wheelhouse'" (baked from "'/opt/wsgi/wheelhouse/requirements.txt'"): add it to requirements_file in wsgi-stack and bake again, or name an index in the payload (pip_index_url)`,
		`listed in "'/opt/wsgi/wheelhouse/SHA256SUMS'`,
	} {
		if !strings.Contains(with, want) {
			t.Errorf("deploy with a wheelhouse lacks %q", want)
		}
		if strings.Contains(without, want) {
			t.Errorf("deploy without a wheelhouse has %q", want)
		}
	}
	for _, script := range []string{with, without} {
		if !strings.Contains(script, `die "pip could not install $REQ: no distribution found for requirement $missing (pip's output is in $LOG)"`) {
			t.Error("deploy does not name a requirement pip found no distribution for")
		}
	}
}

// TestDeployCopyUnpacked runs the deploy's copy_unpacked in bash on unpacked archives: one top
// folder is dropped (as GitHub's archives have), anything else is copied as it is, and a lone
// symbolic link is copied as the link, never followed to where it points.
func TestDeployCopyUnpacked(t *testing.T) {
	bash := requireTool(t, "bash")
	script := deployOf(t, Default())
	_, body, ok := strings.Cut(script, "\ncopy_unpacked() {")
	body, _, closed := strings.Cut(body, "\n}\n")
	if !ok || !closed {
		t.Fatal("the deploy has no copy_unpacked function")
	}
	fn := "copy_unpacked() {" + body + "\n}\n"
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret"), []byte("not the app's\n"), 0o600)
	hostile := "a b*?\n$(touch pwned)"
	cases := []struct {
		name  string
		make  func(dir string)
		want  []string // the files of DEST, relative, sorted
		links []string // of those, symbolic links
	}{
		{"one top folder, dropped", func(d string) {
			writeFile(t, filepath.Join(d, "app-1.0/manage.py"), nil, 0o644)
			writeFile(t, filepath.Join(d, "app-1.0/.env.example"), nil, 0o644)
			writeFile(t, filepath.Join(d, "app-1.0", hostile, "x.py"), nil, 0o644)
		}, []string{".env.example", hostile, hostile + "/x.py", "manage.py"}, nil},
		{"two entries, as they are", func(d string) {
			writeFile(t, filepath.Join(d, "app/wsgi.py"), nil, 0o644)
			writeFile(t, filepath.Join(d, "requirements.txt"), nil, 0o644)
		}, []string{"app", "app/wsgi.py", "requirements.txt"}, nil},
		{"a top folder beside a dot file, as they are", func(d string) {
			writeFile(t, filepath.Join(d, "app/wsgi.py"), nil, 0o644)
			writeFile(t, filepath.Join(d, ".python-version"), nil, 0o644)
		}, []string{".python-version", "app", "app/wsgi.py"}, nil},
		{"one file, as it is", func(d string) {
			writeFile(t, filepath.Join(d, "app.py"), nil, 0o644)
		}, []string{"app.py"}, nil},
		{"a lone link to a folder elsewhere, the link itself", func(d string) {
			if err := os.Symlink(outside, filepath.Join(d, "app")); err != nil {
				t.Fatal(err)
			}
		}, []string{"app"}, []string{"app"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			from, dest := t.TempDir(), t.TempDir()
			c.make(from)
			cmd := exec.Command(bash, "-c", "set -Eeuo pipefail\n"+fn+`copy_unpacked "$1" "$2"`, "test", from, dest)
			cmd.Dir = t.TempDir()
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("copy_unpacked: %v\n%s", err, msg)
			}
			var got, links []string
			err := filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
				if err != nil || p == dest {
					return err
				}
				rel, _ := filepath.Rel(dest, p)
				got = append(got, rel)
				if d.Type()&os.ModeSymlink != 0 {
					links = append(links, rel)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) || !slices.Equal(links, c.links) {
				t.Errorf("DEST has %q (links %q), want %q (links %q)", got, links, c.want, c.links)
			}
			if entries, _ := os.ReadDir(cmd.Dir); len(entries) > 0 {
				t.Errorf("a file name ran as a command: %v", entries)
			}
		})
	}
}
