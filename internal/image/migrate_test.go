package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The fleet-wide migrate, run the way the deploy runs it: inside the app's Django through
// manage.py shell. The database locks are proven against a real PostgreSQL in `make e2e`
// (TestFleet); here, what needs no server: SQLite, a backend without a lock, the lock off.
const migrateHelperFile = "files/wsgi-migrate.py"

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
	// The deploy's command line, with the helper at its path in this tree.
	cmd := exec.Command(py, "manage.py", "shell", "-c", `import runpy; runpy.run_path("`+helper+`", run_name="__main__")`)
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

func TestMigrateHelper(t *testing.T) {
	py := ""
	// The system's python3 first: Debian's python3-django is what the image's app would use.
	for _, c := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(c); err == nil && exec.Command(p, "-c", "import django").Run() == nil {
			py = p
			break
		}
	}
	if py == "" {
		if os.Getenv("WSGI_REQUIRE_VALIDATORS") == "1" {
			t.Fatal("no python3 imports Django and WSGI_REQUIRE_VALIDATORS=1: install python3-django")
		}
		t.Skip("no python3 imports Django: skipping (apt-get install python3-django)")
	}
	dir := t.TempDir()
	for name, content := range migrateProject {
		writeFile(t, filepath.Join(dir, name), []byte(content), 0o644)
	}
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
