// Command firstboot measures first boot: the time from machine start to the first HTTP 200 of
// the app through NGINX, as seen from the host, for the golden image with the payload of
// package cloudinit, next to the same image with no payload (the floor: start to cloud-init
// done and to multi-user) and a stock image whose cloud-init installs NGINX and Gunicorn from
// Debian's mirror and starts the same app (what people do without a golden image). The Django
// set (-set django) boots a Django app with a requirements file three ways: a golden image baked
// with its wheelhouse, the golden image without one installing from an index at boot, and the
// old path emulated (pip bootstrapped into the release venv), each against the floor of its
// image. Variants alternate run by run; medians and ratios are printed as Markdown for
// docs/BENCHMARKS.md, with the payload sizes of the default Flask and Django configurations.
//
// It needs root and the e2e host tools (make deps). Run it with `go run ./bench/firstboot`.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

type options struct {
	runs   int
	images string
	set    string
}

// variant is one way to reach a serving (or, for the floor, a booted) machine.
type variant struct {
	key, title string
	image      func(imgs) string
	userData   []byte
	http       bool   // wait for the app's first 200 through NGINX
	deploy     bool   // read the deploy's steps from its journal
	floor      string // the key of the floor it is compared with
	// check, if set, proves the machine took the path the variant is named for.
	check func(ctx context.Context, m *harness.Machine) error
}

type imgs struct{ golden, stock, wheelhouse string }

// The sets of variants -set chooses from.
const (
	setFlask  = "flask"
	setDjango = "django"
	setAll    = "all"
)

// sample is one run's figures, each from just before harness.Boot.
type sample struct {
	first200  time.Duration // first 200 of the app through NGINX (zero without HTTP)
	cloudInit time.Duration // Boot returned: result.json seen
	running   time.Duration // systemctl is-system-running --wait returned
	state     string        // what it returned
	blame     map[string]time.Duration
	stages    map[string]stageSpan // cloud-init's stages, see cloudInitStages
	deploy    []time.Duration      // the deploy script's steps, see deploySteps
	deployAt  time.Duration        // the deploy's first line
	// Whether the first unit's worker had imported the app while first boot's gate was there,
	// and if so when it had and when the gate let it serve (see parseGateLog).
	held               bool
	imported, released time.Duration
	// The host's cores busy (0-1): from the deploy's first line to the first 200, and over the
	// whole boot (to the first 200, or to cloud-init done without HTTP); -1 without samples.
	cpuDeploy, cpuBoot float64
	venv               [2]time.Duration // floor only: the deploy's venv command, with pip and without
	migrate            migrateTimes     // whl only, after its boot: see migrateWays
}

// venvCmds are the deploy's `python -m venv` on the baked interpreter as it runs it, and the
// same without pip: timed in the floor machine, where nothing else runs.
var venvCmds = [2]string{
	"/opt/wsgi/venv/bin/python -m venv --system-site-packages /var/tmp/bench-venv-pip",
	"/opt/wsgi/venv/bin/python -m venv --system-site-packages --without-pip /var/tmp/bench-venv-nopip",
}

// blamed are the cloud-init modules where the variants differ: the stock image's apt, and
// runcmd (the deploy script on the golden image, the stock image's setup script).
var blamed = []string{"modules-final/config-package-update-upgrade-install", "modules-final/config-scripts-user"}

func main() {
	var o options
	flag.IntVar(&o.runs, "n", 3, "runs per variant, alternating (the median counts)")
	flag.StringVar(&o.images, "images", "", "folder for the golden and stock images; reused when they are there (default: a temporary folder, removed)")
	flag.StringVar(&o.set, "set", setAll, "which variants: flask (the app without requirements, the floor, the stock image), django (the app with requirements: wheelhouse image, boot-time index, old path, and their floors) or all")
	onlySizes := flag.Bool("sizes", false, "print the payload sizes and stop (no root, no machine)")
	flag.Parse()
	if *onlySizes {
		if _, sha, err := flaskTarball(); err != nil || sizes(sha) != nil {
			fmt.Fprintln(os.Stderr, "firstboot: sizes failed:", err)
			os.Exit(1)
		}
		return
	}
	// Ctrl-C and SIGTERM cancel the run, so that its defers remove the machines and files.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "firstboot:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	if o.runs < 1 {
		return fmt.Errorf("-n: must be at least 1, got %d", o.runs)
	}
	if o.set != setFlask && o.set != setDjango && o.set != setAll {
		return fmt.Errorf("-set: must be flask, django or all, got %q", o.set)
	}
	flask, django := o.set != setDjango, o.set != setFlask
	if os.Geteuid() != 0 {
		return errors.New("needs root (systemd-nspawn, ip, nft)")
	}
	defer func() {
		harness.CloseAll()
		if left := harness.Leftovers(); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("left behind after Close:\n%s", strings.Join(left, "\n")))
		}
	}()
	log := os.Stderr
	repo, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "firstboot-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dir := o.images
	if dir == "" {
		dir = filepath.Join(work, "images")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	tgz, sha, err := flaskTarball()
	if err != nil {
		return err
	}
	if err := sizes(sha); err != nil {
		return err
	}

	// Flask and Django in the base image, as in the e2e tests, so the image cache is shared.
	base, err := harness.BaseImage(ctx, harness.DefaultRelease, log)
	if err != nil {
		return err
	}
	im := imgs{golden: filepath.Join(dir, "golden.tar.zst"), stock: filepath.Join(dir, "stock.tar.zst"), wheelhouse: filepath.Join(dir, "golden-wheelhouse.tar.zst")}
	// The shop's wheels come from the wheelhouse bake; the golden image serves them as the
	// boot-time index, so it is baked again when it was baked without them (marker beside it).
	var shop *shopFixture
	shopDir, shopMarker := filepath.Join(dir, "shop"), im.golden+".shop"
	if django {
		if shop, err = loadShop(shopDir); err != nil {
			return err
		}
		if shop == nil || !exists(im.wheelhouse) {
			start := time.Now()
			if shop, err = buildWheelhouse(ctx, repo, base, work, im.wheelhouse, shopDir, log); err != nil {
				return fmt.Errorf("golden image with the wheelhouse: %w", err)
			}
			fmt.Printf("Golden image with the wheelhouse: packer build with wsgi-stack (requirements_file, compiling the C extension) and snapshot: %s\n\n", secs(time.Since(start)))
			_ = os.Remove(shopMarker)
		}
	}
	if !exists(im.golden) || (django && !exists(shopMarker)) {
		start := time.Now()
		if err := buildGolden(ctx, repo, base, work, im.golden, shop, log); err != nil {
			return fmt.Errorf("golden image: %w", err)
		}
		fmt.Printf("Golden image: packer build with wsgi-stack (gunicorn_source = \"distro\") and snapshot: %s\n\n", secs(time.Since(start)))
		if shop != nil {
			if err := os.WriteFile(shopMarker, []byte(shop.sha+"\n"), 0o644); err != nil {
				return err
			}
		}
	}
	if flask && !exists(im.stock) {
		if err := buildStock(ctx, base, work, im.stock, log); err != nil {
			return fmt.Errorf("stock image: %w", err)
		}
	}

	payload, err := cloudinit.Render(flaskApp(sha))
	if err != nil {
		return err
	}
	stock, err := stockUserData(sha)
	if err != nil {
		return err
	}
	var variants []variant
	warm := []string{im.golden}
	if flask {
		variants = append(variants,
			variant{key: "pay", title: "golden image + generated payload", image: func(i imgs) string { return i.golden }, userData: payload.UserData, http: true, deploy: true, floor: "flr"},
			variant{key: "stk", title: "stock image, cloud-init installs nginx-light + python3-gunicorn from the mirror", image: func(i imgs) string { return i.stock }, userData: stock, http: true, floor: "flr"})
		warm = append(warm, im.stock)
	}
	variants = append(variants, variant{key: "flr", title: "golden image, empty #cloud-config (floor)", image: func(i imgs) string { return i.golden }, userData: []byte("#cloud-config\n{}\n")})
	if django {
		dv, err := djangoVariants(shop)
		if err != nil {
			return err
		}
		variants = append(variants, dv...)
		warm = append(warm, im.wheelhouse)
	}

	// One unmeasured boot per image: the first boot of an image unpacks it into the shared
	// lower layer of the machines' overlays, which later boots skip.
	for _, img := range warm {
		m, err := harness.Boot(ctx, harness.BootOptions{Image: img, Name: "fbb-warm", WorkDir: work, Log: log})
		if err != nil {
			return fmt.Errorf("warm-up boot: %w", err)
		}
		m.Close()
	}

	fmt.Printf("Load average before the runs: %s\n\n", loadAvg())
	samples := map[string][]sample{}
	for r := 1; r <= o.runs; r++ {
		for _, v := range variants {
			s, err := measure(ctx, v, v.image(im), fmt.Sprintf("fbb-%s%d", v.key, r), work, log)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", v.title, r, err)
			}
			fmt.Fprintf(log, "firstboot: %s, run %d: first 200 %v, cloud-init done %v, %s %v\n", v.key, r, s.first200, s.cloudInit, s.state, s.running)
			samples[v.key] = append(samples[v.key], s)
		}
	}
	fmt.Printf("Load average after the runs: %s\n\n", loadAvg())
	if flask {
		report(o, only(variants, "pay", "flr", "stk"), samples, len(tgz), len(payload.UserData), len(stock))
	}
	if django {
		reportDjango(o, only(variants, "whl", "wgl", "wsq", "flw", "idx", "old", "flr"), samples)
	}
	return nil
}

// measure boots one fresh instance and times it from just before harness.Boot: the app's
// first 200 through NGINX from the host (GET / every 100 ms from the moment the machine has an
// address), cloud-init done (Boot returns when result.json is there) and multi-user
// (`systemctl is-system-running --wait`).
func measure(ctx context.Context, v variant, image, name, work string, log io.Writer) (sample, error) {
	w := newIPWatcher(name, log)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var s sample
	start := time.Now()
	// cloud-init stamps its stages with the kernel's uptime, which the machine shares with the host.
	startUptime, err := uptime()
	if err != nil {
		return s, err
	}
	cpu := sampleCPU(ctx, start)
	defer cpu.Stop()
	first := make(chan time.Duration, 1)
	if v.http {
		go poll(pctx, w.ip, start, first)
	}
	m, err := harness.Boot(ctx, harness.BootOptions{Image: image, Name: name, InstanceID: instanceID(), UserData: v.userData, WorkDir: work, Log: w, Timeout: 10 * time.Minute})
	if err != nil {
		return s, err
	}
	defer m.Close()
	s.cloudInit = time.Since(start)
	out, _, err := m.Exec(ctx, "systemctl", "is-system-running", "--wait")
	s.running, s.state = time.Since(start), strings.TrimSpace(out)
	// "degraded" exits 1 and is still the end of startup; report it as it is.
	if s.state == "" {
		return s, fmt.Errorf("systemctl is-system-running --wait: %w", err)
	}
	if out, _, err := m.Exec(ctx, "cloud-init", "analyze", "blame"); err == nil {
		s.blame = parseBlame(out)
	}
	out, _, err = m.Exec(ctx, "cat", "/run/cloud-init/status.json")
	if err != nil {
		return s, fmt.Errorf("/run/cloud-init/status.json: %w", err)
	}
	if s.stages, err = parseStages(out, startUptime); err != nil {
		return s, err
	}
	if v.key == "flr" {
		for i, c := range venvCmds {
			t0 := time.Now()
			if _, stderr, err := m.Exec(ctx, "sh", "-c", c); err != nil {
				return s, fmt.Errorf("%s: %w: %s", c, err, stderr)
			}
			s.venv[i] = time.Since(t0)
		}
	}
	if !v.http {
		s.cpuBoot, s.cpuDeploy = busyBetween(cpu.Stop(), 0, s.cloudInit), -1
		return s, nil
	}
	if v.deploy {
		out, _, err := m.Exec(ctx, "journalctl", "-t", "wsgi-deploy", "-o", "short-unix", "--no-pager")
		if err != nil {
			return s, err
		}
		var first float64
		if s.deploy, first, err = parseDeploySteps(out); err != nil {
			return s, err
		}
		s.deployAt = sinceStart(first, start)
		out, _, err = m.Exec(ctx, "journalctl", "-u", "wsgi@1.service", "-o", "short-unix", "--no-pager")
		if err != nil {
			return s, err
		}
		g, err := parseGateLog(out)
		if err != nil {
			return s, err
		}
		s.held = g.held
		if g.held {
			s.imported, s.released = sinceStart(g.imported, start), sinceStart(g.released, start)
		}
	}
	select {
	case s.first200 = <-first:
	case <-time.After(3 * time.Minute):
		body, _, _ := m.Exec(ctx, "sh", "-c", "curl -sS -m 5 http://127.0.0.1/; tail -n 30 /var/log/cloud-init-output.log")
		return s, fmt.Errorf("no 200 with the app's answer through NGINX at %s 3 min after cloud-init done:\n%s", m.IP(), body)
	}
	samples := cpu.Stop()
	s.cpuBoot, s.cpuDeploy = busyBetween(samples, 0, s.first200), -1
	if v.deploy {
		s.cpuDeploy = busyBetween(samples, s.deployAt, s.first200)
	}
	if v.check != nil {
		if err := v.check(ctx, m); err != nil {
			return s, err
		}
	}
	if v.key == "whl" {
		if s.migrate, err = timeMigrate(ctx, m); err != nil {
			return s, err
		}
	}
	return s, nil
}

// poll sends the time of the first 200 whose body is the app's. Every probe is a new
// connection, as a load balancer's health check is.
func poll(ctx context.Context, ipc <-chan string, start time.Time, first chan<- time.Duration) {
	var ip string
	select {
	case ip = <-ipc:
	case <-ctx.Done():
		return
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok := get200(ctx, client, "http://"+ip+"/"); ok {
			first <- time.Since(start)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func get200(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), appMarker)
}

func report(o options, variants []variant, samples map[string][]sample, tarball, payload, stock int) {
	pick := picker(samples)
	gold := median(pick("pay", byFirst200))
	floor := median(pick("flr", byCloudInit))

	fmt.Printf("From just before harness.Boot, %d runs per variant alternating, median (every run in brackets, seconds). "+
		"First 200: GET / from the host every 100 ms, a 200 carrying the app's answer.\n\n", o.runs)
	fmt.Println("| variant | first 200 through NGINX | cloud-init done | multi-user (is-system-running) | first 200 vs golden + payload |")
	fmt.Println("| --- | ---: | ---: | ---: | ---: |")
	for _, v := range variants {
		f, c, m := pick(v.key, byFirst200), pick(v.key, byCloudInit), pick(v.key, byRunning)
		fs, rs := "-", "-"
		if v.http {
			fs = fmt.Sprintf("%s (%s)", secs(median(f)), runsList(f))
			rs = ratio(median(f), gold)
		}
		fmt.Printf("| %s | %s | %s (%s) | %s (%s) | %s |\n", v.title, fs, secs(median(c)), runsList(c), secs(median(m)), runsList(m), rs)
	}
	states := map[string]int{}
	for _, v := range variants {
		for _, s := range samples[v.key] {
			states[s.state]++
		}
	}
	fmt.Printf("\nGolden image + payload vs the floor (its cloud-init done): %s, %s more for the deploy. "+
		"Stock image vs golden image + payload: %s. is-system-running said %v.\n\n",
		ratio(gold, floor), secs(gold-floor), ratio(median(pick("stk", byFirst200)), gold), states)
	fmt.Println("Where the variants differ, from `cloud-init analyze blame` in each machine (median, seconds):")
	fmt.Println()
	grid("cloud-init module", titles(variants), blamed, func(c, r int) string {
		return secs(median(pick(variants[c].key, func(s sample) time.Duration { return s.blame[blamed[r]] })))
	})
	fmt.Println()
	fmt.Println("The deploy script on the golden image, from its journal lines (median, seconds):")
	fmt.Println()
	fmt.Println("| step of wsgi-deploy | time |")
	fmt.Println("| --- | ---: |")
	for i, st := range deploySteps {
		fmt.Printf("| %s | %s |\n", st.title, stepSecs(pick("pay", func(s sample) time.Duration { return s.deploy[i] })))
	}
	fmt.Println()
	fmt.Println("The venv step alone, run again in the floor machine after boot (median, seconds):")
	fmt.Println()
	fmt.Println("| command | time |")
	fmt.Println("| --- | ---: |")
	for i, c := range venvCmds {
		fmt.Printf("| `%s` | %s |\n", c, secs(median(pick("flr", func(s sample) time.Duration { return s.venv[i] }))))
	}
	fmt.Println()
	fmt.Printf("User data of these runs: the generated payload %d bytes (%d gzip), the stock image's cloud-config %d bytes (%d gzip); release archive %d bytes.\n\n",
		payload, gzipLenOf("pay", variants), stock, gzipLenOf("stk", variants), tarball)
}

// only are the variants of keys, in that order.
func only(vs []variant, keys ...string) []variant {
	var out []variant
	for _, k := range keys {
		for _, v := range vs {
			if v.key == k {
				out = append(out, v)
			}
		}
	}
	return out
}

// stepSecs is the median of a deploy step's runs, "-" when the step was absent.
func stepSecs(ds []time.Duration) string { return medianOrDash(ds, secs) }

// fineSecs is stepSecs to the hundredth, for spans of a tenth of a second or so.
func fineSecs(ds []time.Duration) string {
	return medianOrDash(ds, func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) })
}

// medianOrDash formats the median of ds, or "-" without runs or when a run lacks the span.
func medianOrDash(ds []time.Duration, format func(time.Duration) string) string {
	if len(ds) == 0 || slices.Contains(ds, absent) {
		return "-"
	}
	return format(median(ds))
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func gzipLenOf(key string, variants []variant) int {
	for _, v := range variants {
		if v.key == key {
			return gzipLen(v.userData)
		}
	}
	return 0
}

// sizes prints the payload sizes of the default Flask and Django configurations: the default
// stack (image.Default) and the apps with nothing but what they need.
func sizes(sha string) error {
	fmt.Println("| payload (any image) | raw bytes | gzip bytes | of EC2's 16,384-byte limit |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	for _, c := range []struct {
		name string
		app  cloudinit.App
	}{
		{"Flask: tarball + sha256, app:app", flaskApp(sha)},
		{"Django: git tag, migrate + collectstatic, one env var", djangoApp()},
	} {
		p, err := cloudinit.Render(c.app)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		fmt.Printf("| %s | %d | %d | %.0f %% |\n", c.name, p.SizeBytes(), len(p.Gzip), 100*float64(p.SizeBytes())/cloudinit.MaxUserDataBytes)
	}
	fmt.Println()
	return nil
}

func instanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "i-" + hex.EncodeToString(b)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// grid prints a Markdown table with a row per label and a column per header, the cells from cell.
func grid(corner string, cols, rows []string, cell func(col, row int) string) {
	fmt.Printf("| %s |", corner)
	for _, c := range cols {
		fmt.Printf(" %s |", c)
	}
	fmt.Print("\n| --- |")
	for range cols {
		fmt.Print(" ---: |")
	}
	fmt.Println()
	for r, label := range rows {
		fmt.Printf("| %s |", label)
		for c := range cols {
			fmt.Printf(" %s |", cell(c, r))
		}
		fmt.Println()
	}
}

func titles(vs []variant) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.title)
	}
	return out
}

// keys are the variants' short names, for the columns of a wide table.
func keys(vs []variant) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.key)
	}
	return out
}

// sinceStart is a Unix time of the machine's journal from the clock's start (the host's clock
// and the machine's are one: a container).
func sinceStart(unix float64, start time.Time) time.Duration {
	return time.Duration((unix - float64(start.UnixNano())/1e9) * float64(time.Second))
}
