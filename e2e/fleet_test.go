//go:build e2e

package e2e

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// fleetSize is how many instances of one release boot at the same time: enough to have waiters
// behind the one that migrates, few enough for a 2-core host.
const fleetSize = 3

// migrationSeconds is how long release 1's migration sleeps inside its transaction.
const migrationSeconds = 6

// fleetApp is a Django app on PostgreSQL. Release 1's migration creates two tables, sleeps
// (the window in which the other instances must wait), records which host ran it and when it
// finished; the health view records each host's first successful answer, and fails while the
// table does not exist. Release 2 adds a migration that fails.
var fleetApp = map[string]string{
	"manage.py":          djangoFiles["manage.py"],
	"mysite/__init__.py": "",
	"mysite/settings.py": `import os

SECRET_KEY = "e2e-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.staticfiles", "fleet"]
ROOT_URLCONF = "mysite.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "HOST": os.environ["DB_HOST"],
                         "PORT": os.environ["DB_PORT"], "NAME": "postgres", "USER": "postgres"}}
STATIC_URL = "/static/"
STATIC_ROOT = os.environ["STATIC_ROOT"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
`,
	"mysite/urls.py": `import os
import socket

from django.db import connection
from django.http import HttpResponse
from django.urls import path


def health(request):
    # Fails (500) until release 1's schema is in place; records this host's first answer.
    with connection.cursor() as c:
        c.execute("INSERT INTO fleet_served (host, first_at) VALUES (%s, clock_timestamp()) ON CONFLICT (host) DO NOTHING",
                  [socket.gethostname()])
    return HttpResponse("ok\n")


def index(request):
    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM fleet_migrationrun")
        runs = c.fetchone()[0]
    return HttpResponse("unit=%s fleet host=%s runs=%d\n" % (os.environ.get("WSGI_UNIT"), socket.gethostname(), runs))


urlpatterns = [path("healthz", health), path("", index)]
`,
	"mysite/wsgi.py":               djangoFiles["mysite/wsgi.py"],
	"fleet/__init__.py":            "",
	"fleet/migrations/__init__.py": "",
	"fleet/migrations/0001_initial.py": fmt.Sprintf(`import socket
import time

from django.db import migrations, models


def forward(apps, schema_editor):
    time.sleep(%d)
    with schema_editor.connection.cursor() as c:
        c.execute("INSERT INTO fleet_migrationrun (host, finished_at) VALUES (%%s, clock_timestamp())", [socket.gethostname()])


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel("MigrationRun", [("id", models.BigAutoField(primary_key=True)), ("host", models.TextField()),
                                                ("finished_at", models.DateTimeField())]),
        migrations.CreateModel("Served", [("host", models.TextField(primary_key=True)), ("first_at", models.DateTimeField())]),
        migrations.RunPython(forward),
    ]
`, migrationSeconds),
}

var fleetRelease2 = map[string]string{
	"fleet/migrations/0002_broken.py": `import time

from django.db import migrations


def forward(apps, schema_editor):
    time.sleep(2)
    raise RuntimeError("e2e: release 2's migration fails")


class Migration(migrations.Migration):
    dependencies = [("fleet", "0001_initial")]
    operations = [migrations.RunPython(forward)]
`,
}

// TestFleet boots a fleet for real: three instances of one golden image, at the same time, with
// the same payload (a Django app on a PostgreSQL server on the host, reached through Publish,
// and a launch lifecycle hook). The migration must run exactly once, every instance must serve,
// none before the schema was in place, and each must complete the hook with CONTINUE. Then
// three instances of a release whose migration fails must all end in cloud-init error with the
// 503 page and the reason, and ABANDON the hook.
func TestFleet(t *testing.T) { harness.OnFirstRelease(t, testFleet) }

func testFleet(t *testing.T, release harness.Release) {
	ctx, log, repoRoot := begin(t, 40*time.Minute)
	scratch := t.TempDir()

	pg := startPostgres(ctx, t)
	pgURL, err := harness.Publish("postgres://127.0.0.1:" + pg.port)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	asg := startLifecycleStandIn(t)
	asgURL, err := harness.Publish(asg.proxy.URL)
	if err != nil {
		t.Fatal(err)
	}

	img, err := harness.BaseImage(ctx, release, log)
	if err != nil {
		t.Fatal(err)
	}
	pb, pub := newPackerRun(ctx, t, repoRoot, scratch)
	build := boot(ctx, t, harness.BootOptions{Image: img, Name: "fl-bake", UserData: harness.SSHUserData("packer", pub), WorkDir: scratch, Log: log})
	// psycopg2 through the product: wsgi-stack installs it into the image like any package.
	if _, took, err := pb.build(ctx, "fleet-bake", build.IP(), stackTemplate(`    gunicorn_source = "distro"
    extra_packages  = ["python3-django", "python3-psycopg2"]
    first_boot      = ["schema-1", "git", "aws-requests"]`)); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("CHECK packer build of the golden image (distro Gunicorn, Django, psycopg2 from extra_packages): %v", took.Round(100*time.Millisecond))
	}
	installFixtures(t, build.Root())
	writeFleetRepo(t, build.Root())
	golden := filepath.Join(scratch, "golden-fleet.tar.zst")
	if err := build.Snapshot(ctx, golden); err != nil {
		t.Fatal(err)
	}
	build.Close()

	app := func(ref string) []byte {
		p, err := cloudinit.Render(cloudinit.App{
			Source:               cloudinit.Source{GitURL: fixtureGit + "/fleet.git", GitRef: ref},
			WSGIApp:              "mysite.wsgi:application",
			Framework:            cloudinit.FrameworkDjango,
			DjangoSettingsModule: "mysite.settings",
			Env:                  map[string]string{"DB_HOST": u.Hostname(), "DB_PORT": u.Port()},
			LifecycleHook:        "wsgi-launch",
			AWSEndpoints:         map[string]string{"autoscaling": asgURL},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("payload %s: %d bytes raw, %d gzip, needs %s", ref, p.SizeBytes(), len(p.Gzip), strings.Join(p.Needs, " "))
		return p.UserData
	}

	t.Run("release 1: migrated once, all serve", func(t *testing.T) {
		start := time.Now()
		fleet := bootFleet(ctx, t, golden, "fl1", app("v1"), scratch, log, false)
		t.Logf("CHECK %d instances booted at once, all cloud-init done %v after the first boot started", fleetSize, time.Since(start).Round(100*time.Millisecond))
		for _, m := range fleet {
			checkServing(ctx, t, m, "fleet host="+m.Name())
		}
		runs := pg.query(ctx, t, "SELECT host || ' ' || to_char(finished_at, 'HH24:MI:SS.MS') FROM fleet_migrationrun")
		applied := pg.query(ctx, t, "SELECT name FROM django_migrations WHERE app = 'fleet'")
		if len(runs) != 1 || !slices.Equal(applied, []string{"0001_initial"}) {
			t.Errorf("the migration ran %d times (%v), django_migrations has %v for fleet; want once and [0001_initial]", len(runs), runs, applied)
		}
		early := pg.query(ctx, t, "SELECT s.host FROM fleet_served s, fleet_migrationrun r WHERE s.first_at < r.finished_at")
		served := pg.query(ctx, t, "SELECT s.host || ' +' || to_char(extract(epoch FROM s.first_at - r.finished_at), 'FM990.00') || 's' FROM fleet_served s, fleet_migrationrun r ORDER BY s.host")
		if len(early) != 0 || len(served) != fleetSize {
			t.Errorf("first health answers after the migration's end: %v (before it: %v); want all %d after", served, early, fleetSize)
		}
		migrated, waited := 0, 0
		for _, m := range fleet {
			out := mustExec(ctx, t, m, "grep", "^wsgi-migrate: ", "/var/log/wsgi-deploy.log")
			switch {
			case strings.Contains(out, "migrate finished in"):
				migrated++
			case strings.Contains(out, "another instance applied the migrations while this one waited") ||
				strings.Contains(out, "no migrations to apply"):
				waited++
			}
			t.Logf("%s wsgi-migrate:\n%s", m.Name(), out)
		}
		if migrated != 1 || waited != fleetSize-1 {
			t.Errorf("%d instances migrated and %d found it done; want 1 and %d", migrated, waited, fleetSize-1)
		}
		asg.check(t, fleet, "CONTINUE")
		t.Logf("CHECK release 1: migration run once by %v, django_migrations fleet %v, first health 200 after the migration's end: %v; %d migrated, %d waited",
			runs, applied, served, migrated, waited)
	})

	t.Run("scale-out of release 1: nothing to migrate, no lock", func(t *testing.T) {
		asg.reset()
		m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "fl1-d", InstanceID: fleetInstance("fl1", fleetSize),
			UserData: app("v1"), WorkDir: scratch, Log: log})
		checkServing(ctx, t, m, "fleet host=fl1-d runs=1")
		out := mustExec(ctx, t, m, "grep", "^wsgi-migrate: ", "/var/log/wsgi-deploy.log")
		if !strings.HasPrefix(out, "wsgi-migrate: no migrations to apply (checked in ") || strings.Contains(out, "lock (key") {
			t.Errorf("a release with nothing to migrate took the lock or migrated:\n%s", out)
		}
		asg.check(t, []*harness.Machine{m}, "CONTINUE")
		t.Logf("CHECK scale-out of release 1: %s", out)
	})

	t.Run("release 2: a failed migration fails every instance", func(t *testing.T) {
		asg.reset()
		start := time.Now()
		fleet := bootFleet(ctx, t, golden, "fl2", app("v2"), scratch, log, true)
		t.Logf("CHECK %d instances of release 2 booted at once, all cloud-init finished %v after the first boot started", fleetSize, time.Since(start).Round(100*time.Millisecond))
		for _, m := range fleet {
			// The journal's reason is the migration's own error.
			checkFailed(ctx, t, m, "django migrate", "RuntimeError: e2e: release 2's migration fails")
			if _, _, err := m.Exec(ctx, "grep", "-qF", "RuntimeError: e2e: release 2's migration fails", "/var/log/wsgi-deploy.log"); err != nil {
				t.Errorf("%s: the migration's own error is not in /var/log/wsgi-deploy.log", m.Name())
			}
		}
		if applied := pg.query(ctx, t, "SELECT name FROM django_migrations WHERE app = 'fleet' ORDER BY name"); !slices.Equal(applied, []string{"0001_initial"}) {
			t.Errorf("django_migrations for fleet after the failed release: %v, want [0001_initial] (0002 rolled back)", applied)
		}
		asg.check(t, fleet, "ABANDON")
	})
}

// bootFleet boots fleetSize instances of image with the same user data, all at once, and
// waits for cloud-init on each.
func bootFleet(ctx context.Context, t *testing.T, image, prefix string, userData []byte, dir string, log testLog, failing bool) []*harness.Machine {
	t.Helper()
	fleet := make([]*harness.Machine, fleetSize)
	errs := make([]error, fleetSize)
	var wg sync.WaitGroup
	for i := range fleet {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fleet[i], errs[i] = harness.Boot(ctx, harness.BootOptions{
				Image: image, Name: fmt.Sprintf("%s-%c", prefix, 'a'+i), InstanceID: fleetInstance(prefix, i),
				UserData: userData, WorkDir: dir, Log: log, Timeout: 12 * time.Minute, AllowCloudInitErrors: failing,
			})
		}()
	}
	wg.Wait()
	for i, m := range fleet {
		if m != nil {
			t.Cleanup(m.Close)
		}
		if errs[i] != nil {
			t.Fatalf("boot %s-%c: %v", prefix, 'a'+i, errs[i])
		}
	}
	return fleet
}

func fleetInstance(prefix string, i int) string {
	return fmt.Sprintf("i-0f1ee7%s%010d", strings.TrimPrefix(prefix, "fl"), i+1) // 17 hex digits, as EC2's
}

// writeFleetRepo puts the fleet app's git repository, tags v1 and v2, under the fixtures' git
// daemon of the image.
func writeFleetRepo(t *testing.T, root string) {
	t.Helper()
	work := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for name, content := range fleetApp {
		writeFixture(t, filepath.Join(work, name), content)
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "fleet 1")
	git("tag", "v1")
	for name, content := range fleetRelease2 {
		writeFixture(t, filepath.Join(work, name), content)
	}
	git("add", ".")
	git("commit", "-q", "-m", "fleet 2: a migration that fails")
	git("tag", "v2")
	git("clone", "-q", "--bare", work, filepath.Join(root, fixtureDir, "git/fleet.git"))
}

// ---------------------------------------------------------------- PostgreSQL on the host

// postgres is a throwaway cluster of Debian's postgresql package: its own folder, a free
// loopback port, trust authentication (nothing but loopback reaches it), stopped and removed
// when the test ends.
type postgres struct {
	bin, dir, port string
}

func startPostgres(ctx context.Context, t *testing.T) *postgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		t.Fatal("PostgreSQL not found (/usr/lib/postgresql/*/bin/pg_ctl): make deps installs Debian's postgresql")
	}
	sort.Strings(bins)
	// The folder must be the postgres user's, outside the test's root-only temp folder.
	dir, err := os.MkdirTemp("", "e2e-postgres-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	pg := &postgres{bin: filepath.Dir(bins[len(bins)-1]), dir: dir, port: port}
	if out, err := exec.CommandContext(ctx, "chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v\n%s", dir, err, out)
	}
	data := filepath.Join(dir, "data")
	pg.run(ctx, t, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8")
	// Clients come from the machines' addresses, DNATed to loopback.
	f, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "host all all 0.0.0.0/0 trust")
	f.Close()
	pg.run(ctx, t, "pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60",
		"-o", "-c listen_addresses=127.0.0.1 -p "+port+" -k "+dir+" -c fsync=off", "start")
	t.Cleanup(func() {
		out, err := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pg.bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop").CombinedOutput()
		if err != nil {
			t.Errorf("stopping PostgreSQL: %v\n%s", err, out)
		}
	})
	return pg
}

func (pg *postgres) run(ctx context.Context, t *testing.T, tool string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(pg.bin, tool)}, args...)...)
	cmd.Dir = pg.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
}

// query runs SQL with psql over the cluster's socket and returns one line per row.
func (pg *postgres) query(ctx context.Context, t *testing.T, q string) []string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", filepath.Join(pg.bin, "psql"),
		"-h", pg.dir, "-p", pg.port, "-U", "postgres", "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", q)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", q, err, out)
	}
	var rows []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			rows = append(rows, l)
		}
	}
	return rows
}

// ---------------------------------------------------------------- the Auto Scaling stand-in

// lifecycleStandIn answers the two Auto Scaling calls of a launch hook from the test proxy
// (moto 5.2.1 has no CompleteLifecycleAction): every instance is waiting in Pending:Wait in
// group web-fleet, and each completion is recorded.
type lifecycleStandIn struct {
	proxy *awsproxy.Proxy
	mu    sync.Mutex
	done  []url.Values
}

const fleetGroup = "web-fleet"

func startLifecycleStandIn(t *testing.T) *lifecycleStandIn {
	t.Helper()
	// Nothing is forwarded: both actions are answered here.
	p, err := awsproxy.Start("http://127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	s := &lifecycleStandIn{proxy: p}
	s.register()
	return s
}

func (s *lifecycleStandIn) register() {
	s.proxy.Handle("autoscaling", "DescribeAutoScalingInstances", func(w http.ResponseWriter, call *awsproxy.Call) {
		type member struct {
			InstanceId, AutoScalingGroupName, AvailabilityZone, LifecycleState, HealthStatus string
		}
		var res struct {
			XMLName xml.Name `xml:"AutoScalingInstances"`
			Members []member `xml:"member"`
		}
		res.Members = []member{{call.Form.Get("InstanceIds.member.1"), fleetGroup, "us-east-1a", "Pending:Wait", "HEALTHY"}}
		_ = awsproxy.WriteQueryResult(w, call, res)
	})
	s.proxy.Handle("autoscaling", "CompleteLifecycleAction", func(w http.ResponseWriter, call *awsproxy.Call) {
		s.mu.Lock()
		s.done = append(s.done, call.Form)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><CompleteLifecycleActionResult/><ResponseMetadata><RequestId>awsproxy</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>`)
	})
}

func (s *lifecycleStandIn) reset() {
	s.proxy.Reset()
	s.mu.Lock()
	s.done = nil
	s.mu.Unlock()
	s.register()
}

// check asserts one completion per instance, with its id, the hook, the group and result, each
// signed for the metadata service's region.
func (s *lifecycleStandIn) check(t *testing.T, fleet []*harness.Machine, result string) {
	t.Helper()
	s.mu.Lock()
	done := slices.Clone(s.done)
	s.mu.Unlock()
	var want, got []string
	for _, m := range fleet {
		want = append(want, fmt.Sprintf("%s %s %s %s", m.InstanceID(), "wsgi-launch", fleetGroup, result))
	}
	for _, f := range done {
		got = append(got, fmt.Sprintf("%s %s %s %s", f.Get("InstanceId"), f.Get("LifecycleHookName"), f.Get("AutoScalingGroupName"), f.Get("LifecycleActionResult")))
	}
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("CompleteLifecycleAction calls:\n%s\nwant one per instance:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range s.proxy.Calls() {
		if c.Service != "autoscaling" || c.Region != "us-east-1" {
			t.Errorf("call %s signed for %s in %q, want autoscaling in us-east-1 (the metadata service's region)", c.Action, c.Service, c.Region)
		}
	}
	t.Logf("CHECK lifecycle hook: %d CompleteLifecycleAction calls through the proxy, one per instance: %s", len(got), strings.Join(got, "; "))
}
