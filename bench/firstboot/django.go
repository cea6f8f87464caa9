package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/pyfixture"
)

// The Django set: the shop of TestWheelhouse (Django with a requirements file of five pins, one
// of them a C extension) three ways, each against the floor of its image.

// wheelhouseDir is wsgi-stack's default wheelhouse_dir, where the bake leaves the wheels.
const wheelhouseDir = "/opt/wsgi/wheelhouse"

// shopFixture is the shop's release and the wheels the wheelhouse bake built for it.
type shopFixture struct {
	reqs   string
	tgz    []byte
	sha    string
	wheels map[string][]byte // file name → wheel
}

func newShop(reqs string, wheels map[string][]byte) (*shopFixture, error) {
	if len(wheels) == 0 {
		return nil, fmt.Errorf("no wheels for the shop's index")
	}
	tgz, err := pyfixture.TarGz(pyfixture.ShopFiles(reqs))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(tgz)
	return &shopFixture{reqs: reqs, tgz: tgz, sha: hex.EncodeToString(sum[:]), wheels: wheels}, nil
}

// save keeps the requirements and the wheels in dir, beside the images they belong to.
func (s *shopFixture) save(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "wheels"), 0o755); err != nil {
		return err
	}
	for n, b := range s.wheels {
		if err := os.WriteFile(filepath.Join(dir, "wheels", n), b, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "requirements.txt"), []byte(s.reqs), 0o644)
}

// loadShop reads what save kept; nil when it is not there.
func loadShop(dir string) (*shopFixture, error) {
	reqs, err := os.ReadFile(filepath.Join(dir, "requirements.txt"))
	if os.IsNotExist(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	wheels, err := readWheels(filepath.Join(dir, "wheels"))
	if err != nil {
		return nil, err
	}
	return newShop(string(reqs), wheels)
}

func readWheels(dir string) (map[string][]byte, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.whl"))
	if err != nil {
		return nil, err
	}
	wheels := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		wheels[filepath.Base(n)] = b
	}
	if len(wheels) == 0 {
		return nil, fmt.Errorf("no wheels in %s", dir)
	}
	return wheels, nil
}

// shopApp is the shop's payload: the archive from the fixture server, migrate and collectstatic
// built in (SQLite, so the database's lock is not needed), one environment variable.
func shopApp(sha string) cloudinit.App {
	return cloudinit.App{
		Source:               cloudinit.Source{TarballURL: shopURL, SHA256: sha},
		WSGIApp:              "mysite.wsgi:application",
		Framework:            cloudinit.FrameworkDjango,
		DjangoSettingsModule: "mysite.settings",
		Env:                  map[string]string{"DATABASE_PATH": "/var/lib/wsgi-app/db.sqlite3"},
	}
}

// oldPathScript turns the image's deploy back into the one before issue 14 for one boot: the
// release venv gets its own pip (`python -m venv` without --without-pip, which copies pip in
// with ensurepip) and that pip installs the requirements (`.venv/bin/python -m pip install`),
// instead of the image's pip with --python. It fails when the deploy no longer has either
// command, so the emulation cannot silently measure the new path.
const oldPathScript = `set -eu
f=/usr/local/sbin/wsgi-deploy
grep -qF -- '-m venv --without-pip' "$f"
grep -qF -- "/opt/wsgi/venv/bin/python' -m pip --python \"\$REL/.venv/bin/python\" install" "$f"
sed -i -e 's|-m venv --without-pip|-m venv|' \
	-e "s|'/opt/wsgi/venv/bin/python' -m pip --python \"\$REL/.venv/bin/python\" install|\"\$REL/.venv/bin/python\" -m pip install|" "$f"
`

// leaveCall finds the baked helper's call of leave() (a grep pattern), and noLeave is the sed
// expression that turns it into the interpreter's teardown at the end (the helper before leave()).
const (
	leaveCall = `^        leave()$`
	noLeave   = `s/` + leaveCall + `/        pass/`
)

// earlyGate finds the deploy's removal of first boot's gate right after migrate (a grep and sed
// pattern); lateGateScript deletes it for one boot, so the gate goes only after the checks of
// the first unit, as before; it fails when the deploy has no such line.
const (
	earlyGate      = `^[[:space:]]*\[ -z "\$EARLY" ] || rm -f `
	lateGateScript = `set -eu
f=/usr/local/sbin/wsgi-deploy
grep -q '` + earlyGate + `' "$f"
sed -i '/` + earlyGate + `/d' "$f"
`
)

// bootcmdPart is an extra cloud-config part whose bootcmd runs script in cloud-init's init stage,
// long before the deploy in the final stage.
func bootcmdPart(filename, script string) (cloudinit.Part, error) {
	b, err := yaml.Marshal(map[string][][]string{"bootcmd": {{"sh", "-c", script}}})
	if err != nil {
		return cloudinit.Part{}, err
	}
	return cloudinit.Part{ContentType: "text/cloud-config", Filename: filename, Content: cloudinit.CloudConfigHeader + "\n" + string(b)}, nil
}

// djangoVariants are the Django set: the wheelhouse image with the plain payload, the golden
// image without a wheelhouse with the payload naming the boot-time index, the same with the
// old path emulated, and the floor of each image.
func djangoVariants(shop *shopFixture) ([]variant, error) {
	plain, err := cloudinit.Render(shopApp(shop.sha))
	if err != nil {
		return nil, err
	}
	idxApp := shopApp(shop.sha)
	idxApp.PipIndexURL = indexURL
	idx, err := cloudinit.Render(idxApp)
	if err != nil {
		return nil, err
	}
	part, err := bootcmdPart("old-path.cfg", oldPathScript)
	if err != nil {
		return nil, err
	}
	// The wheelhouse image's payload with the gate removed only after the first unit's checks,
	// to time what removing it right after migrate saves.
	lateApp := shopApp(shop.sha)
	latePart, err := bootcmdPart("late-gate.cfg", lateGateScript)
	if err != nil {
		return nil, err
	}
	lateApp.ExtraParts = []cloudinit.Part{latePart}
	late, err := cloudinit.Render(lateApp)
	if err != nil {
		return nil, err
	}
	oldApp := idxApp
	oldApp.ExtraParts = []cloudinit.Part{part}
	old, err := cloudinit.Render(oldApp)
	if err != nil {
		return nil, err
	}
	// The wheelhouse image's payload without first boot's overlap: with a hook (a no-op), the
	// deploy starts the units after migrate.
	seqApp := shopApp(shop.sha)
	seqApp.HooksBeforeSwitch = []string{"true"}
	seq, err := cloudinit.Render(seqApp)
	if err != nil {
		return nil, err
	}
	wh := func(i imgs) string { return i.wheelhouse }
	gold := func(i imgs) string { return i.golden }
	return []variant{
		{key: "whl", title: "Django: wheelhouse image + payload", image: wh, userData: plain.UserData, http: true, deploy: true, floor: "flw",
			check: shopCheck(`grep -qF "the image's baked venv" /var/log/wsgi-deploy.log && grep -qF "starting behind the gate" /var/log/wsgi-deploy.log`)},
		{key: "wgl", title: "Django: wheelhouse image + payload, first boot's gate removed after the first unit's checks, not right after migrate (a bootcmd part)", image: wh, userData: late.UserData, http: true, deploy: true, floor: "flw",
			check: shopCheck(`! grep -q '` + earlyGate + `' /usr/local/sbin/wsgi-deploy && grep -qF "starting behind the gate" /var/log/wsgi-deploy.log`)},
		{key: "wsq", title: "Django: wheelhouse image + payload with a no-op hook before the switch (units start after migrate)", image: wh, userData: seq.UserData, http: true, deploy: true, floor: "flw",
			check: shopCheck(`! grep -qF "starting behind the gate" /var/log/wsgi-deploy.log`)},
		{key: "flw", title: "wheelhouse image, empty #cloud-config (its floor)", image: wh, userData: []byte("#cloud-config\n{}\n")},
		{key: "idx", title: "Django: golden image + payload with pip_index_url (boot-time index)", image: gold, userData: idx.UserData, http: true, deploy: true, floor: "flr",
			check: shopCheck(`test ! -e /srv/wsgi/current/.venv/bin/pip`)},
		{key: "old", title: "Django: golden image + the same payload, old path emulated (pip in the release venv)", image: gold, userData: old.UserData, http: true, deploy: true, floor: "flr",
			check: shopCheck(`test -x /srv/wsgi/current/.venv/bin/pip`)},
	}, nil
}

// shopCheck proves a Django variant served the shop with its requirements from the release venv
// and took the path it is named for (cond, a shell test in the machine).
func shopCheck(cond string) func(ctx context.Context, m *harness.Machine) error {
	return func(ctx context.Context, m *harness.Machine) error {
		body, _, err := m.Exec(ctx, "curl", "-fsS", "-m", "10", "http://127.0.0.1/")
		if err != nil {
			return fmt.Errorf("GET / on the machine: %w", err)
		}
		if !strings.Contains(body, "triangle=5050 greeting="+pyfixture.Greeting) || !strings.Contains(body, "/.venv/lib/python3") {
			return fmt.Errorf("the shop does not answer with its requirements from the release venv: %q", body)
		}
		if _, _, err := m.Exec(ctx, "sh", "-c", cond); err != nil {
			log, _, _ := m.Exec(ctx, "tail", "-n", "40", "/var/log/wsgi-deploy.log")
			return fmt.Errorf("not the path this variant is for (%s): %w\n%s", cond, err, log)
		}
		return nil
	}
}

// reportDjango prints the Django set: each way to first boot against the floor of its image,
// and the deploy's steps of each.
func reportDjango(o options, variants []variant, samples map[string][]sample) {
	pick := picker(samples)
	whl := median(pick("whl", byFirst200))
	fmt.Printf("Django with requirements (the shop of TestWheelhouse), %d runs per variant alternating with the Flask set's, median (every run in brackets, seconds). "+
		"Each against the floor of its own image (its cloud-init done with an empty #cloud-config), and against the wheelhouse image with the plain payload.\n\n", o.runs)
	fmt.Println("| variant | first 200 through NGINX | cloud-init done | multi-user (is-system-running) | first 200 vs its floor | first 200 vs whl |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, v := range variants {
		f, c, m := pick(v.key, byFirst200), pick(v.key, byCloudInit), pick(v.key, byRunning)
		fs, rs, ws := "-", "-", "-"
		if v.http {
			fs = fmt.Sprintf("%s (%s)", secs(median(f)), runsList(f))
			rs = ratio(median(f), median(pick(v.floor, byCloudInit)))
			ws = ratio(median(f), whl)
		}
		fmt.Printf("| %s | %s | %s (%s) | %s (%s) | %s | %s |\n", v.title, fs, secs(median(c)), runsList(c), secs(median(m)), runsList(m), rs, ws)
	}
	fmt.Printf("\nTarget (issue 14): wheelhouse image + payload at most 1.25x its floor to the first 200: %s.\n",
		ratio(whl, median(pick("flw", byCloudInit))))
	paired := pairedRatios(pick("whl", byFirst200), pick("flw", byCloudInit))
	fmt.Printf("Boot by boot (each run's whl boot against the floor boot of the same run), median: %.2fx (%s).\n\n", median(paired), ratiosList(paired))

	deployed := []variant{}
	for _, v := range variants {
		if v.deploy {
			deployed = append(deployed, v)
		}
	}
	fmt.Println("The deploy's steps, from its journal lines (median, seconds):")
	fmt.Println()
	var steps []string
	for _, st := range deploySteps {
		steps = append(steps, st.title)
	}
	grid("step of wsgi-deploy", keys(deployed), steps, func(c, r int) string {
		return stepSecs(pick(deployed[c].key, func(s sample) time.Duration { return s.deploy[r] }))
	})
	rows := []struct {
		title string
		f     func(sample) time.Duration
	}{
		{"the whole deploy, its first line to its last", func(s sample) time.Duration {
			var sum time.Duration
			for _, d := range s.deploy {
				sum += max(d, 0)
			}
			return sum
		}},
		{"boot to the deploy's first line (the clock's start to `deploy of`)", func(s sample) time.Duration { return s.deployAt }},
	}
	for _, r := range rows {
		fmt.Printf("| %s |", r.title)
		for _, v := range deployed {
			fmt.Printf(" %s |", secs(median(pick(v.key, r.f))))
		}
		fmt.Println()
	}
	// The two paths beside each other behind first boot's gate: which one came last.
	type paths struct {
		migrated, toFirst200, waits []time.Duration
		held                        int
	}
	var ps []paths
	for _, v := range deployed {
		var p paths
		for _, s := range samples[v.key] {
			at := migrateDone(s)
			if at == absent {
				p.migrated, p.toFirst200 = append(p.migrated, absent), append(p.toFirst200, absent)
			} else {
				p.migrated, p.toFirst200 = append(p.migrated, at-s.deployAt), append(p.toFirst200, s.first200-at)
			}
			if s.held {
				p.held++
				p.waits = append(p.waits, s.released-s.imported)
			}
		}
		ps = append(ps, p)
	}
	for _, r := range []struct {
		title string
		cell  func(p paths, runs int) string
	}{
		{"migrate + collectstatic done, from the deploy's first line", func(p paths, _ int) string { return fineSecs(p.migrated) }},
		{"boots whose first worker had imported the app before migrate was done (it waited at the gate)", func(p paths, runs int) string { return fmt.Sprintf("%d of %d", p.held, runs) }},
		{"in those boots, the worker's wait at the gate", func(p paths, _ int) string { return fineSecs(p.waits) }},
		{"migrate done to the first 200", func(p paths, _ int) string { return fineSecs(p.toFirst200) }},
	} {
		fmt.Printf("| %s |", r.title)
		for i, v := range deployed {
			fmt.Printf(" %s |", r.cell(ps[i], len(samples[v.key])))
		}
		fmt.Println()
	}
	busy := func(key string, f func(sample) float64) string { return percent(figures(samples[key], f)) }
	fmt.Printf("| the host's %d cores busy, from the deploy's first line to the first 200 (/proc/stat every 100 ms) |", runtime.NumCPU())
	for _, v := range deployed {
		fmt.Printf(" %s |", busy(v.key, func(s sample) float64 { return s.cpuDeploy }))
	}
	fmt.Println()
	fmt.Printf("\nThe host's cores busy over the whole boot, median: ")
	for i, v := range variants {
		if i > 0 {
			fmt.Print("; ")
		}
		fmt.Printf("%s %s", v.key, busy(v.key, func(s sample) float64 { return s.cpuBoot }))
	}
	fmt.Println(" (to the first 200, or to cloud-init done for a floor).")
	fmt.Println()
	fmt.Println("cloud-init's stages, from /run/cloud-init/status.json: when each started and finished, from the clock's start (median, seconds):")
	fmt.Println()
	grid("stage", keys(variants), cloudInitStages, func(c, r int) string {
		span := func(f func(stageSpan) time.Duration) string {
			return secs(median(pick(variants[c].key, func(s sample) time.Duration { return f(s.stages[cloudInitStages[r]]) })))
		}
		return span(func(sp stageSpan) time.Duration { return sp.start }) + " – " + span(func(sp stageSpan) time.Duration { return sp.end })
	})
	fmt.Println()
	fmt.Printf("Migrate into a new SQLite file in the whl machine after its boot, as the deploy runs it, %d times each way per boot, alternating (median of all, every run in brackets, seconds):\n\n", migrateRuns)
	fmt.Println("| wsgi-migrate | time |")
	fmt.Println("| --- | ---: |")
	var took migrateTimes
	for _, s := range samples["whl"] {
		for i := range took {
			took[i] = append(took[i], s.migrate[i]...)
		}
	}
	for i, w := range migrateWays {
		runs := make([]string, len(took[i]))
		for j, d := range took[i] {
			runs[j] = fmt.Sprintf("%.2f", d.Seconds())
		}
		fmt.Printf("| %s | %.2f s (%s) |\n", w.title, median(took[i]).Seconds(), strings.Join(runs, ", "))
	}
	fmt.Println()
	for i := 1; i < len(migrateWays); i++ {
		fmt.Printf("The baked helper against %s: %s.\n", migrateWays[i].title, ratio(median(took[0]), median(took[i])))
	}
	fmt.Println()
	fmt.Println("Columns: whl = wheelhouse image (requirements_file baked) + the plain payload; idx = golden image without a wheelhouse, " +
		"payload with pip_index_url = the shop's index on the instance's loopback (the wheels the wheelhouse bake built, served by the fixture server); " +
		"wgl = whl plus a bootcmd part that deletes the deploy's removal of first boot's gate right after migrate, so the gate goes after the first unit's checks (systemctl calls); " +
		"wsq = whl with a no-op hook before the switch, so the units start after migrate; " +
		"old = the idx payload plus a bootcmd part that rewrites the image's deploy for this boot into the one before issue 14: " +
		"`python -m venv` with pip (ensurepip copies pip into the release venv) and the release venv's own pip installing from the same index.")
	fmt.Println()
}

// migrateRuns is how often the whl machine, once booted, migrates a new SQLite file each way.
const migrateRuns = 3

// migrateTimes are the times of each of migrateWays.
type migrateTimes [len(migrateWays)][]time.Duration

// migrateWays migrate the shop into a new SQLite file the way the deploy does (the app user, the
// app's environment, wsgi-migrate in the app's Django): with the baked helper, and with copies of
// it that each undo one of its savings (sed, checked to have changed the line). Each prints the
// nanoseconds it took.
var migrateWays = [...]struct{ title, cmd string }{
	{"the baked wsgi-migrate: one sync at the end, then it leaves (no interpreter teardown)", migrateCmd(bakedMigrate)},
	{"the interpreter's teardown at the end (the helper before leave())",
		migrateCopyCmd(noLeave, leaveCall, "/var/tmp/wsgi-migrate-teardown")},
	{"SQLite's syncs after each commit (the helper before the one sync)",
		migrateCopyCmd(`s/^    new_file = None if command else new_sqlite_file(connection)$/    new_file = None/`, `new_file = None if command`, "/var/tmp/wsgi-migrate-syncs")},
}

const bakedMigrate = "/usr/local/lib/wsgi/wsgi-migrate"

// migrateCopyCmd migrates with a copy of the baked helper at path, edited by sed's expr, after
// checking that the line the grep pattern gone finds is gone.
func migrateCopyCmd(expr, gone, path string) string {
	return `sed '` + expr + `' ` + bakedMigrate + ` >` + path + ` && ! grep -q '` + gone + `' ` + path + ` && chmod 0644 ` + path + ` && ` +
		migrateCmd(path)
}

func migrateCmd(helper string) string {
	return `db=/var/lib/wsgi-app/bench-migrate.sqlite3; rm -f "$db" && cd /srv/wsgi/current && t0=$(date +%s%N) &&
	runuser -u wsgi -- env -i PATH=/srv/wsgi/current/.venv/bin:/usr/bin:/bin HOME=/var/lib/wsgi-app LANG=C.UTF-8 sh -c '
		set -a; . /etc/wsgi/wsgi.env; set +a; export DATABASE_PATH="$1" PYTHONDONTWRITEBYTECODE=1
		exec python manage.py shell -c "import runpy; runpy.run_path(\"` + helper + `\", run_name=\"__main__\")"' sh "$db" >/dev/null &&
	t1=$(date +%s%N) && rm -f "$db" && echo $((t1 - t0))`
}

// timeMigrate runs migrateWays in turn, migrateRuns times each.
func timeMigrate(ctx context.Context, m *harness.Machine) (migrateTimes, error) {
	var took migrateTimes
	for range migrateRuns {
		for i, w := range migrateWays {
			out, stderr, err := m.Exec(ctx, "sh", "-c", w.cmd)
			if err != nil {
				return took, fmt.Errorf("migrating a new SQLite file (%s): %w: %s", w.title, err, stderr)
			}
			var ns int64
			if _, err := fmt.Sscan(out, &ns); err != nil {
				return took, fmt.Errorf("migrating a new SQLite file (%s): %q: %w", w.title, out, err)
			}
			took[i] = append(took[i], time.Duration(ns))
		}
	}
	return took, nil
}
