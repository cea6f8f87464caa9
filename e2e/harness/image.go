package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// imageFormat changes whenever the way an image is built changes in a way
// the spec below does not capture, so old cache entries stop matching.
const imageFormat = 2

// BasePackages are installed in every base image, the same for every
// release. The image stands in for Debian's published EC2 image, so it
// carries what that image's build (debian-cloud-images: its CLOUD, EC2 and
// EXTRAS package classes) installs and nothing a test would like to find
// there: awscli, cloud-init, cloud-guest-utils, amazon-ec2-utils,
// openssh-server, sudo, curl, ca-certificates, less; and NOT git, which
// Debian's EC2 image lacks: a test whose app comes from git must install it
// through the product (wsgi-stack), as a user on AWS would have to.
//
// Beyond that: systemd, systemd-sysv, dbus, systemd-resolved (Debian's cloud
// images enable resolved), iproute2, netbase and procps make a machine that
// boots under nspawn (the kernel, grub and growroot of the real image do not
// apply); locales with one generated UTF-8 locale stands in for the real
// image's locales-all, without which cloud-init's locale module fails.
//
// testAppPackages are not in Debian's image: the tests' Flask and Django
// apps need them and they cannot be installed inside an nspawn machine
// (python3-django pulls tzdata, whose postinst cannot replace the
// /etc/localtime that nspawn bind-mounts), so they are preinstalled here and
// a bake's `extra_packages` finds them already there. mmdebstrap installs no
// Recommends, so Django's are named: what `apt-get install python3-django`
// would bring on an instance (on trixie the admin's jquery is a dangling
// symlink without libjs-jquery, and collectstatic fails).
var BasePackages = append([]string{
	"amazon-ec2-utils", "awscli", "ca-certificates", "cloud-guest-utils", "cloud-init",
	"curl", "dbus", "iproute2", "less", "locales", "netbase", "openssh-server",
	"procps", "python3", "sudo", "systemd", "systemd-resolved", "systemd-sysv",
}, testAppPackages...)

var testAppPackages = []string{"libjs-jquery", "python3-django", "python3-flask", "python3-tz"}

// mmdebstrap customize hooks, run in order with the root as "$1".
var imageHooks = []string{
	// nspawn's host0 gets DHCP from systemd's stock 80-container-host0.network.
	`chroot "$1" systemctl enable systemd-networkd`,
	// cloud-init's locale module wants a generated UTF-8 locale.
	`echo "en_US.UTF-8 UTF-8" > "$1/etc/locale.gen" && chroot "$1" locale-gen && echo LANG=en_US.UTF-8 > "$1/etc/default/locale"`,
	// Only NoCloud (the seed directory) and the None fallback: no probing
	// of clouds that are not there. Networking is left to networkd, which
	// already configures host0; cloud-init's fallback would fight it.
	`printf 'datasource_list: [ NoCloud, None ]\nnetwork: {config: disabled}\n' > "$1/etc/cloud/cloud.cfg.d/90-wsgi-e2e.cfg"`,
}

// ImageOption changes what BaseImage builds.
type ImageOption func(*imageSpec)

// WithCacheDir sets the image cache folder (default DefaultCacheDir).
func WithCacheDir(dir string) ImageOption {
	return func(s *imageSpec) { s.cacheDir = dir }
}

// WithPackages adds Debian packages to the image, for example a variant
// with python3-flask preinstalled. The cache key includes them.
func WithPackages(pkgs ...string) ImageOption {
	return func(s *imageSpec) { s.Packages = append(s.Packages, pkgs...) }
}

// WithMirror sets the Debian mirror (default http://deb.debian.org/debian,
// or $WSGI_E2E_MIRROR) and security mirror (default
// http://deb.debian.org/debian-security, or $WSGI_E2E_SECURITY_MIRROR).
func WithMirror(mirror, securityMirror string) ImageOption {
	return func(s *imageSpec) {
		if mirror != "" {
			s.mirror = mirror
		}
		if securityMirror != "" {
			s.securityMirror = securityMirror
		}
	}
}

// imageSpec is everything that decides an image's content; its JSON form
// is hashed for the cache key.
type imageSpec struct {
	Format   int      `json:"format"`
	Variant  string   `json:"variant"`
	Suite    string   `json:"suite"`
	Packages []string `json:"packages"`
	Sources  []string `json:"sources"`
	Hooks    []string `json:"hooks"`

	mirror, securityMirror, cacheDir string
}

func newImageSpec(release Release, opts []ImageOption) imageSpec {
	if release.Suite == "" {
		release = DefaultRelease
	}
	s := imageSpec{
		Format:         imageFormat,
		Variant:        "apt",
		Suite:          release.Suite,
		Packages:       slices.Clone(BasePackages),
		Hooks:          slices.Clone(imageHooks),
		mirror:         envOr("WSGI_E2E_MIRROR", "http://deb.debian.org/debian"),
		securityMirror: envOr("WSGI_E2E_SECURITY_MIRROR", "http://deb.debian.org/debian-security"),
	}
	for _, o := range opts {
		o(&s)
	}
	slices.Sort(s.Packages)
	s.Packages = slices.Compact(s.Packages)
	// Without -updates and -security the packages are months stale.
	s.Sources = []string{
		fmt.Sprintf("deb %s %s main", s.mirror, s.Suite),
		fmt.Sprintf("deb %s %s-updates main", s.mirror, s.Suite),
		fmt.Sprintf("deb %s %s-security main", s.securityMirror, s.Suite),
	}
	return s
}

func (s imageSpec) key() string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // only strings and ints: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

func (s imageSpec) mmdebstrapArgs(out string) []string {
	args := []string{
		"--variant=" + s.Variant,
		"--include=" + strings.Join(s.Packages, ","),
	}
	for _, h := range s.Hooks {
		args = append(args, "--customize-hook="+h)
	}
	args = append(args, s.Suite, out)
	return append(args, s.Sources...)
}

// BaseImage returns the path of a root file system tarball (.tar.zst) of
// the Debian release built with mmdebstrap (the zero Release means
// DefaultRelease), building it first unless the cache already holds one
// with the same inputs (release, packages, sources, hooks). A build takes
// one to two minutes and writes its full log next to the image; progress
// lines go to log (may be nil). Concurrent callers, in this process or
// another, build an image once; different releases build side by side.
// Delete the cache folder to pick up newer Debian packages.
func BaseImage(ctx context.Context, release Release, log io.Writer, opts ...ImageOption) (string, error) {
	spec := newImageSpec(release, opts)
	cacheDir := spec.cacheDir
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return "", err
		}
		cacheDir = d
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("base image: %w", err)
	}
	key := spec.key()
	out := filepath.Join(cacheDir, fmt.Sprintf("debian-%s-%s.tar.zst", spec.Suite, key))

	unlock, err := lockFile(ctx, filepath.Join(cacheDir, "."+key+".lock"))
	if err != nil {
		return "", fmt.Errorf("base image: %w", err)
	}
	defer unlock()
	if _, err := os.Stat(out); err == nil {
		logf(log, "base image %s (cached)", out)
		return out, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return "", fmt.Errorf("base image: %w (apt-get install mmdebstrap zstd)", err)
	}

	// Holding the key's lock, any build folder of this key is a dead
	// build's: clear it (it may still have /proc and /sys mounted).
	stale, _ := filepath.Glob(filepath.Join(cacheDir, ".build-"+key+"-*"))
	for _, p := range stale {
		_ = unmountUnder(p)
		if err := removeTree(p); err != nil {
			return "", fmt.Errorf("base image: stale build: %w", err)
		}
	}
	work := filepath.Join(cacheDir, fmt.Sprintf(".build-%s-%d", key, os.Getpid()))
	if err := os.Mkdir(work, 0o700); err != nil {
		return "", fmt.Errorf("base image: %w", err)
	}
	defer func() {
		_ = unmountUnder(work)
		_ = removeTree(work)
	}()
	tmp := filepath.Join(work, "image.tar.zst")
	buildLog := strings.TrimSuffix(out, ".tar.zst") + ".build.log"
	lf, err := os.Create(buildLog)
	if err != nil {
		return "", fmt.Errorf("base image: %w", err)
	}
	defer lf.Close()
	args := spec.mmdebstrapArgs(tmp)
	logf(log, "building base image %s (log %s)", out, buildLog)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// mmdebstrap makes its chroot under TMPDIR, so the chroot is inside
	// work and the deferred cleanup finds whatever it left mounted. On
	// cancel the whole process group goes at once: mmdebstrap's own
	// SIGTERM handling waits for the package installation to finish.
	cmd.Env = append(os.Environ(), "PATH="+machinePath, "LC_ALL=C.UTF-8", "TMPDIR="+work)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("base image: mmdebstrap: %w", err)
	}
	// Its own process group gets no terminal Ctrl-C: stop it, and clear
	// its folder, when a signal stops this process.
	untrack := AtInterrupt(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		for i := 0; i < 100 && syscall.Kill(-cmd.Process.Pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond) // until the whole group is gone
		}
		_ = unmountUnder(work)
		_ = removeTree(work)
	})
	err = cmd.Wait()
	untrack()
	if err != nil {
		// Children (dpkg in the chroot) may outlive a failed mmdebstrap.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return "", fmt.Errorf("base image: mmdebstrap: %w:\n%s", err, tailFile(buildLog, 30))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("base image: %w", err)
	}
	// A readable record of what the hash stands for.
	desc, _ := json.MarshalIndent(spec, "", "  ")
	_ = os.WriteFile(strings.TrimSuffix(out, ".tar.zst")+".json", append(desc, '\n'), 0o644)
	logf(log, "built base image %s in %s", spec.Suite, time.Since(start).Round(100*time.Millisecond))
	return out, nil
}

// DefaultCacheDir is $WSGI_E2E_CACHE, or e2e/.cache in the module that
// contains the working directory (git-ignored).
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("WSGI_E2E_CACHE"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("default cache dir: %w", err)
	}
	return filepath.Join(root, "e2e", ".cache"), nil
}

// RepoRoot walks up from the working directory to the folder holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// lockFile takes an exclusive flock on path, waiting until ctx is done.
// The kernel drops the lock if the process dies, so it never goes stale.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
