package cloudinit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostile are values a user could write in any field: each must reach the deploy as data.
var hostile = []string{
	"a;touch PWNED", "a&touch PWNED", "$(touch PWNED)", "`touch PWNED`", `it's "q"`, "two\nlines\n",
	`back\slash$HOME`, "')\ntouch PWNED\n('", "-rf",
}

// TestAppFileHostileValues renders the app file straight from an App full of hostile values (no
// validation in between), sources it in bash as the deploy does, and reads every variable back:
// each value must arrive unchanged, and nothing in it may run.
func TestAppFileHostileValues(t *testing.T) {
	bash := requireTool(t, "bash")
	for i, v := range hostile {
		app := App{
			Source:               Source{GitURL: v, GitRef: v, Retries: 1, TimeoutSeconds: 1},
			WSGIApp:              v,
			Framework:            v,
			DjangoManagePy:       v,
			DjangoSettingsModule: v,
			RequirementsFile:     v + "x", // "" means the default
			PipConstraintsFile:   v,
			PipIndexURL:          v,
			PipExtraIndexURLs:    []string{v, v},
			PipFindLinks:         []string{v},
			Env:                  map[string]string{"E": v},
			Secrets:              map[string]string{"S": "ssm:" + v},
			HooksBeforeSwitch:    []string{v, v},
			HooksAfterSwitch:     []string{v},
			HealthPath:           v,
			AWSRegion:            v,
			AWSEndpoints:         map[string]string{"s3": v},
		}
		dir := t.TempDir()
		f := filepath.Join(dir, "app.conf")
		if err := os.WriteFile(f, []byte(app.appFile()), 0o600); err != nil {
			t.Fatal(err)
		}
		// Each variable is printed NUL-separated, arrays element by element.
		script := `set -eu; . ./app.conf; for n in WSGI_FRAMEWORK WSGI_DJANGO_MANAGE_PY WSGI_SOURCE_URL WSGI_SOURCE_REF ` +
			`WSGI_REQUIREMENTS_FILE WSGI_PIP_CONSTRAINTS_FILE WSGI_HEALTH_PATH WSGI_AWS_REGION; do printf '%s\0' "${!n}"; done; ` +
			`printf '%s\0' "${WSGI_PIP_ARGS[@]}" "${WSGI_HOOKS_BEFORE_SWITCH[@]}" "${WSGI_HOOKS_AFTER_SWITCH[@]}" "${WSGI_SECRETS[@]}" "${WSGI_AWS_ENDPOINTS[@]}"; ` +
			`set -a; printf '%s' "$WSGI_ENV" > env; . ./env; printf '%s\0' "$E" "${DJANGO_SETTINGS_MODULE-}" "$WSGI_APP"`
		cmd := exec.Command(bash, "-c", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("value %d (%q): bash: %v\n%s", i, v, err, out)
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		want := []string{v, v, v, v, v + "x", v, v, v,
			"--index-url", v, "--extra-index-url", v, "--extra-index-url", v, "--find-links", v,
			v, v, v, "S=ssm:" + v, "AWS_ENDPOINT_URL_S3=" + v, v, v, v}
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Errorf("value %d (%q) read back as\n%q\nwant\n%q", i, v, got, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "PWNED")); err == nil {
			t.Fatalf("value %d (%q) ran a command", i, v)
		}
	}
}

// TestAppFileFleetValues: the migrate settings and the lifecycle hook reach the deploy as data,
// and a payload without them leaves the deploy's defaults.
func TestAppFileFleetValues(t *testing.T) {
	bash := requireTool(t, "bash")
	for i, v := range hostile {
		app := App{Framework: FrameworkDjango, DjangoMigrateLock: v, DjangoMigrateLockTimeoutSeconds: 42, DjangoMigrateCommand: v, LifecycleHook: v}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "app.conf"), []byte(app.appFile()), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bash, "-c", `set -eu; . ./app.conf; printf '%s\0' "$WSGI_DJANGO_MIGRATE_LOCK" "$WSGI_DJANGO_MIGRATE_LOCK_TIMEOUT" "$WSGI_DJANGO_MIGRATE_COMMAND" "$WSGI_LIFECYCLE_HOOK"`)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("value %d (%q): bash: %v\n%s", i, v, err, out)
		}
		if got, want := string(out), v+"\x00"+"42\x00"+v+"\x00"+v+"\x00"; got != want {
			t.Errorf("value %d: read back %q, want %q", i, got, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "PWNED")); err == nil {
			t.Fatalf("value %d (%q) ran a command", i, v)
		}
	}
	plain := App{Framework: FrameworkFlask}.appFile()
	for _, name := range []string{"WSGI_DJANGO_MIGRATE_LOCK", "WSGI_LIFECYCLE_HOOK"} {
		if strings.Contains(plain, name) {
			t.Errorf("a flask app without a hook writes %s:\n%s", name, plain)
		}
	}
}
