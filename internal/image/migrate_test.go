package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fleet-wide migrate, run the way the deploy runs it: inside the app's Django through
// manage.py shell. The database locks are proven against a real PostgreSQL in `make e2e`
// (TestFleet); here, what needs no server: SQLite, a backend without a lock, the lock off.
const migrateHelperFile = "files/wsgi-migrate.py"

// migrateTimeout is far above a run's few seconds, strace included.
const migrateTimeout = time.Minute

var migrateProject = map[string]string{
	"manage.py": `import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
`,
	"site_settings.py": `import os
SECRET_KEY = "test"
INSTALLED_APPS = ["shop"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
if os.environ.get("DB") == "dummy":
    DATABASES = {"default": {"ENGINE": "django.db.backends.dummy"}}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DB"]}}
# An app whose settings register an exit handler and start a thread that never ends.
if os.environ.get("EXIT_HANDLER_FILE"):
    import atexit, threading
    atexit.register(lambda: open(os.environ["EXIT_HANDLER_FILE"], "w").write("ran"))
    threading.Thread(target=threading.Event().wait, name="never-ends").start()
`,
	"shop/__init__.py":            "",
	"shop/migrations/__init__.py": "",
	"shop/migrations/0001_initial.py": `from django.db import migrations, models

class Migration(migrations.Migration):
    initial = True
    operations = [migrations.CreateModel("Item", [("id", models.AutoField(primary_key=True))])]
`,
}

func runMigrate(t *testing.T, py, dir string, env ...string) (string, int) {
	t.Helper()
	helper, err := filepath.Abs(migrateHelperFile)
	if err != nil {
		t.Fatal(err)
	}
	// A helper that does not end is killed: a test fails, no process is left behind.
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	defer cancel()
	// The deploy's command line, with the helper at its path in this tree.
	cmd := exec.CommandContext(ctx, py, "manage.py", "shell", "-c", `import runpy; runpy.run_path("`+helper+`", run_name="__main__")`)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "WSGI_MANAGE_PY=manage.py"}, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// djangoPython is a python3 that imports Django, the system's first: Debian's python3-django is
// what the image's app would use.
func djangoPython(t *testing.T) string {
	t.Helper()
	for _, c := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(c); err == nil && exec.Command(p, "-c", "import django").Run() == nil {
			return p
		}
	}
	if os.Getenv("WSGI_REQUIRE_VALIDATORS") == "1" {
		t.Fatal("no python3 imports Django and WSGI_REQUIRE_VALIDATORS=1: install python3-django")
	}
	t.Skip("no python3 imports Django: skipping (apt-get install python3-django)")
	return ""
}

func migrateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range migrateProject {
		writeFile(t, filepath.Join(dir, name), []byte(content), 0o644)
	}
	return dir
}

func TestMigrateHelper(t *testing.T) {
	py := djangoPython(t)
	dir := migrateDir(t)
	db := "DB=" + filepath.Join(dir, "db.sqlite3")

	out, code := runMigrate(t, py, dir, db)
	if code != 0 || !strings.Contains(out, "wsgi-migrate: SQLite: the database file is this instance's own, no fleet lock needed") ||
		!strings.Contains(out, "Applying shop.0001_initial... OK") || !strings.Contains(out, "wsgi-migrate: migrate finished in") {
		t.Errorf("SQLite, one migration to apply: exit %d\n%s", code, out)
	}
	out, code = runMigrate(t, py, dir, db)
	if code != 0 || !strings.Contains(out, "No migrations to apply.") {
		t.Errorf("SQLite, applied already: exit %d\n%s", code, out)
	}

	// A migrate that fails in the helper's own process (SQLite, no command): its exception is the reason.
	out, code = runMigrate(t, py, dir, "DB="+filepath.Join(dir, "nonexistent", "db.sqlite3"))
	if want := "s: django.db.utils.OperationalError: unable to open database file\n"; code != 1 || !strings.Contains(out, "wsgi-migrate: migrate failed after ") || !strings.HasSuffix(out, want) {
		t.Errorf("SQLite, a migrate that fails: exit %d, want 1 and a last line ending in %q\n%s", code, want, out)
	}

	out, code = runMigrate(t, py, dir, "DB=dummy")
	if want := `wsgi-migrate: no fleet-wide migration lock for the database backend django.db.backends.dummy (PostgreSQL and MySQL/MariaDB have one): set django_migrate_lock = "off" and migrate once per release yourself`; code != 1 || !strings.Contains(out, want) {
		t.Errorf("a backend without a lock: exit %d, want 1 and %q\n%s", code, want, out)
	}

	out, code = runMigrate(t, py, dir, "DB=dummy", "WSGI_MIGRATE_LOCK=off", "WSGI_MIGRATE_COMMAND=echo custom migrate ran; exit 3")
	// The reason of a failed migrate is its last line on stderr.
	if out2, code2 := runMigrate(t, py, dir, "DB=dummy", "WSGI_MIGRATE_LOCK=off", "WSGI_MIGRATE_COMMAND=echo Traceback >&2; echo 'RuntimeError: broken' >&2; exit 1"); code2 != 1 ||
		!strings.HasSuffix(out2, "s: RuntimeError: broken\n") {
		t.Errorf("a failing migrate's reason: exit %d\n%s", code2, out2)
	}
	if !strings.Contains(out, `no fleet lock (django_migrate_lock = "off")`) || !strings.Contains(out, "custom migrate ran") ||
		code != 1 || !strings.Contains(out, "wsgi-migrate: migrate exited with status 3 after") || !strings.HasSuffix(out, "s: no error output\n") {
		t.Errorf("lock off, a custom command that fails: exit %d\n%s", code, out)
	}

	// collectstatic in the same process, before migrate: its files, or its own failure line.
	static := filepath.Join(dir, "collected")
	writeFile(t, filepath.Join(dir, "shop", "static", "shop.css"), []byte("body {}\n"), 0o644)
	staticApps := []string{"DJANGO_SETTINGS_MODULE=static_settings", "WSGI_COLLECTSTATIC=1"}
	writeFile(t, filepath.Join(dir, "static_settings.py"), []byte(`from site_settings import *
INSTALLED_APPS = ["django.contrib.staticfiles", "shop"]
STATIC_URL = "/static/"
import os
STATIC_ROOT = os.environ.get("STATIC_ROOT")
`), 0o644)
	out, code = runMigrate(t, py, dir, append(staticApps, db, "STATIC_ROOT="+static)...)
	if _, err := os.Stat(filepath.Join(static, "shop.css")); code != 0 || err != nil || !strings.Contains(out, "1 static file copied") ||
		!strings.Contains(out, "No migrations to apply.") {
		t.Errorf("collectstatic then migrate: exit %d, %s/shop.css: %v\n%s", code, static, err, out)
	}
	out, code = runMigrate(t, py, dir, append(staticApps, db)...)
	if want := "wsgi-collectstatic: django.core.exceptions.ImproperlyConfigured: "; code != 1 || !strings.Contains(out, want) || strings.Contains(out, "wsgi-migrate: migrate") {
		t.Errorf("collectstatic without STATIC_ROOT: exit %d, want 1, %q and no migrate\n%s", code, want, out)
	}
}

// A SQLite file that migrate creates holds nothing yet: its migrations skip the sync after each
// commit, and the file and its folder are synced once at the end. strace counts the syncs; a file
// that exists already keeps SQLite's own.
func TestMigrateHelperNewSQLiteFile(t *testing.T) {
	py := djangoPython(t)
	strace := requireTool(t, "strace")
	dir := migrateDir(t)
	trace := filepath.Join(dir, "syncs.trace")
	traced := filepath.Join(dir, "traced-python3")
	writeFile(t, traced, []byte("#!/bin/sh\nexec "+strace+" -f -qq -o "+trace+" -e trace=fsync,fdatasync "+py+` "$@"`+"\n"), 0o755)
	syncs := func() int {
		b, err := os.ReadFile(trace)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "fsync(") + strings.Count(string(b), "fdatasync(")
	}
	const newLine = "wsgi-migrate: a new SQLite file: synced once after the last migration, not after each"

	fresh := "DB=" + filepath.Join(dir, "fresh.sqlite3")
	out, code := runMigrate(t, traced, dir, fresh)
	if n := syncs(); code != 0 || !strings.Contains(out, newLine) || !strings.Contains(out, "Applying shop.0001_initial... OK") || n != 2 {
		t.Errorf("a new SQLite file: exit %d, %d syncs (want 2: the file, its folder)\n%s", code, n, out)
	}
	// The file is whole: the next migrate reads every migration as applied.
	if out, code = runMigrate(t, traced, dir, fresh); code != 0 || !strings.Contains(out, "No migrations to apply.") || strings.Contains(out, newLine) {
		t.Errorf("the same file again: exit %d\n%s", code, out)
	}

	// A file that holds a database already (one table, none of the app's): SQLite syncs every commit.
	existing := filepath.Join(dir, "existing.sqlite3")
	if b, err := exec.Command(py, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE kept (v)'); c.commit()", existing).CombinedOutput(); err != nil {
		t.Fatalf("creating %s: %v\n%s", existing, err, b)
	}
	out, code = runMigrate(t, traced, dir, "DB="+existing)
	if n := syncs(); code != 0 || strings.Contains(out, newLine) || !strings.Contains(out, "Applying shop.0001_initial... OK") || n <= 2 {
		t.Errorf("an existing SQLite file: exit %d, %d syncs (want SQLite's own, more than 2)\n%s", code, n, out)
	}
}

// Done, the helper leaves without the interpreter's teardown: an app thread that never ends does
// not hold the deploy, and the app's exit handlers still run.
func TestMigrateHelperLeaves(t *testing.T) {
	py := djangoPython(t)
	dir := migrateDir(t)
	ran := filepath.Join(dir, "exit-handler-ran")
	out, code := runMigrate(t, py, dir, "DB="+filepath.Join(dir, "db.sqlite3"), "EXIT_HANDLER_FILE="+ran)
	if code != 0 || !strings.Contains(out, "wsgi-migrate: migrate finished in") {
		t.Errorf("exit %d (-1: killed after %v, waiting for the app's thread that never ends)\n%s", code, migrateTimeout, out)
	}
	if b, err := os.ReadFile(ran); err != nil || string(b) != "ran" {
		t.Errorf("the app's exit handler did not run: %q, %v", b, err)
	}
}
