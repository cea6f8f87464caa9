package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BootOptions says what to boot. Exactly one of Image and RootDir is set.
type BootOptions struct {
	// Image is a root file system tarball (.tar.zst) from BaseImage or
	// Snapshot; it is unpacked into a fresh folder of the machine's own.
	Image string
	// RootDir boots an existing root folder in place instead. It is
	// changed (seed written, and Snapshot drops cloud-init state) and is
	// not removed by Close.
	RootDir string
	// Name of the machine, [a-z0-9-], at most 12 characters so that the
	// host's ve-NAME link name fits. Default: "wsgi-" and 6 random hex.
	Name string
	// InstanceID for the NoCloud meta-data; a new one makes cloud-init
	// treat the boot as a new instance. Default: "i-" and 16 random hex.
	InstanceID string
	// Hostname for the meta-data's local-hostname. Default: Name.
	Hostname string
	// UserData is the NoCloud user-data, e.g. from SSHUserData. Default:
	// an empty #cloud-config.
	UserData []byte
	// WorkDir is the parent of the machine's own folder (console log,
	// dnsmasq files, unpacked root). Default: os.TempDir().
	WorkDir string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Timeout bounds the boot, from start to cloud-init done. Default 5 min.
	Timeout time.Duration
	// Unpack gives the machine a private unpacked copy of Image (~10 s)
	// instead of the default: an overlay whose shared lower layer is the
	// image unpacked once beside the tarball, so later boots of the same
	// image skip the unpacking. Boot falls back to unpacking by itself
	// when the overlay cannot be mounted.
	Unpack bool
	// Metadata is what the machine's instance metadata service (IMDSv2,
	// at MetadataAddr as the machine sees it) serves besides InstanceID
	// and UserData: region, role credentials, identity. Cloud-init still
	// reads the NoCloud seed; the IMDS is for the software on the machine.
	Metadata Metadata
	// AllowCloudInitErrors makes Boot return the machine even when
	// cloud-init reported errors (WaitCloudInit still returns them).
	AllowCloudInitErrors bool
}

// Machine is a booted systemd-nspawn machine. Its methods are safe to call
// from several goroutines.
type Machine struct {
	name       string
	hostname   string
	instanceID string
	dir        string // the machine's own folder, removed by Close
	root       string
	ownRoot    bool
	overlay    bool // root is an overlay mount, unmounted by Close
	consoleLog string
	log        io.Writer

	mu        sync.Mutex
	nspawn    *exec.Cmd
	done      chan struct{} // closed when nspawn has exited
	leader    int           // PID of systemd inside, as seen from the host
	ip        string
	net       *hostNet
	imds      *IMDS
	closeOnce sync.Once
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,11}$`)

// Boot unpacks (or takes) a root file system, writes the NoCloud seed,
// boots it with systemd-nspawn, gives it a network, and returns once it has
// an address and cloud-init has finished. On error everything it made is
// already undone. Call Close when done with the machine (t.Cleanup(m.Close)).
func Boot(ctx context.Context, opts BootOptions) (m *Machine, err error) {
	if (opts.Image == "") == (opts.RootDir == "") {
		return nil, errors.New("boot: set exactly one of Image and RootDir")
	}
	if opts.Name == "" {
		opts.Name = "wsgi-" + randomHex(3)
	}
	if !nameRE.MatchString(opts.Name) {
		return nil, fmt.Errorf("boot: name %q: must be [a-z0-9-], at most 12 characters", opts.Name)
	}
	if opts.InstanceID == "" {
		opts.InstanceID = "i-" + randomHex(8)
	}
	if opts.Hostname == "" {
		opts.Hostname = opts.Name
	}
	if opts.UserData == nil {
		opts.UserData = []byte("#cloud-config\n{}\n")
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "ip", "dnsmasq", "nft", "tar", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("boot: %w", err)
		}
	}
	// Before taking a subnet: a dead process's dnsmasq would still hold
	// port 53 on that subnet's host address.
	reapStale(opts.Log)
	if err := claimName(opts.Name); err != nil {
		return nil, fmt.Errorf("boot: %w", err)
	}
	installSignalHandler()

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	start := time.Now()

	parent := opts.WorkDir
	if parent == "" {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "wsgi-e2e-"+opts.Name+"-")
	if err != nil {
		removeState(opts.Name)
		return nil, fmt.Errorf("boot: %w", err)
	}
	m = &Machine{
		name:       opts.Name,
		hostname:   opts.Hostname,
		instanceID: opts.InstanceID,
		dir:        dir,
		root:       opts.RootDir,
		consoleLog: filepath.Join(dir, "console.log"),
		log:        opts.Log,
		done:       make(chan struct{}),
	}
	if m.root == "" {
		m.root, m.ownRoot = filepath.Join(dir, "root"), true
	}
	register(m)
	// A failed boot returns a nil machine, so the deferred Close must
	// hold on to it here.
	made := m
	defer func() {
		if err != nil {
			made.Close()
		}
	}()

	if m.ownRoot {
		how := "overlay on"
		if opts.Unpack {
			how = "unpacked"
		} else if err := m.mountOverlay(ctx, opts.Image); err != nil {
			logf(m.log, "%s: no overlay (%v): unpacking instead", m.name, err)
			how = "unpacked"
		}
		if how == "unpacked" {
			if err := unpack(ctx, opts.Image, m.root); err != nil {
				return nil, fmt.Errorf("boot %s: %w", m.name, err)
			}
		}
		logf(m.log, "%s: root is %s %s (%s)", m.name, how, filepath.Base(opts.Image), time.Since(start).Round(100*time.Millisecond))
	}
	if err := writeSeed(m.root, opts.UserData, opts.InstanceID, opts.Hostname); err != nil {
		return nil, fmt.Errorf("boot %s: %w", m.name, err)
	}
	imds, err := startIMDS(opts.Metadata, opts.InstanceID, opts.UserData, m.IP)
	if err != nil {
		return nil, fmt.Errorf("boot %s: %w", m.name, err)
	}
	m.mu.Lock()
	m.imds = imds
	m.mu.Unlock()
	hn, err := allocSubnet(m.name, dir)
	if err != nil {
		return nil, fmt.Errorf("boot %s: %w", m.name, err)
	}
	hn.imdsPort = imds.Port()
	m.mu.Lock()
	m.net = hn
	m.mu.Unlock()
	if err := m.startNspawn(); err != nil {
		return nil, fmt.Errorf("boot %s: %w", m.name, err)
	}
	saveState(m)
	if err := hn.setup(ctx, dir, m.running); err != nil {
		saveState(m)
		return nil, m.bootErr("host network", err)
	}
	saveState(m)
	if err := m.waitLeader(ctx); err != nil {
		return nil, m.bootErr("finding systemd", err)
	}
	if err := m.waitIP(ctx); err != nil {
		return nil, m.bootErr("waiting for DHCP", err)
	}
	logf(m.log, "%s: address %s after %s", m.name, m.ip, time.Since(start).Round(100*time.Millisecond))
	if err := m.WaitCloudInit(ctx); err != nil && !(opts.AllowCloudInitErrors && errors.Is(err, ErrCloudInit)) {
		return nil, fmt.Errorf("boot %s: %w", m.name, err)
	}
	logf(m.log, "%s: cloud-init done after %s", m.name, time.Since(start).Round(100*time.Millisecond))
	return m, nil
}

// unpack extracts a .tar.zst root keeping owners, modes, xattrs and ACLs.
func unpack(ctx context.Context, image, root string) error {
	if _, err := os.Stat(image); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	_, err := run(ctx, "tar", "-C", root, "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
		"-I", "zstd", "-xpf", image)
	return err
}

// startNspawn boots the root. These exact flags matter on these hosts
// (HARNESS.md): without --register=no --keep-unit nspawn fails with no
// system bus, -U makes systemd exit 255, --console=pipe because there is
// no terminal. Setsid keeps a terminal's Ctrl-C from reaching it directly
// (the harness stops it in order instead); Pdeathsig halts it if the test
// process dies without cleaning up.
func (m *Machine) startNspawn() error {
	console, err := os.Create(m.consoleLog)
	if err != nil {
		return err
	}
	defer console.Close()
	cmd := exec.Command("systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-b",
		"-D", m.root, "-M", m.name, "--network-veth", "--console=pipe")
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Env = []string{"PATH=" + machinePath, "LANG=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("systemd-nspawn: %w", err)
	}
	m.mu.Lock()
	m.nspawn = cmd
	m.mu.Unlock()
	go func() { _ = cmd.Wait(); close(m.done) }()
	return nil
}

func (m *Machine) running() bool {
	select {
	case <-m.done:
		return false
	default:
		return m.nspawnStarted()
	}
}

func (m *Machine) nspawnStarted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nspawn != nil
}

// bootErr adds the console's tail, which is where a failed boot explains itself.
func (m *Machine) bootErr(stage string, err error) error {
	return fmt.Errorf("boot %s: %s: %w\nconsole (%s):\n%s", m.name, stage, err, m.consoleLog, tailFile(m.consoleLog, 40))
}

// waitLeader finds systemd, the container's PID 1, as nspawn's child.
func (m *Machine) waitLeader(ctx context.Context) error {
	for {
		if pid := childPID(m.nspawn.Process.Pid, "systemd"); pid > 0 {
			m.mu.Lock()
			m.leader = pid
			m.mu.Unlock()
			return nil
		}
		if err := m.pause(ctx); err != nil {
			return err
		}
	}
}

func (m *Machine) waitIP(ctx context.Context) error {
	for {
		if ip := m.net.lease(); ip != "" {
			m.mu.Lock()
			m.ip = ip
			m.mu.Unlock()
			return nil
		}
		if err := m.pause(ctx); err != nil {
			return fmt.Errorf("%w (dnsmasq log %s:\n%s)", err, filepath.Join(m.dir, "dnsmasq.log"), tailFile(filepath.Join(m.dir, "dnsmasq.log"), 10))
		}
	}
}

// pause waits one polling interval, failing if the machine died or ctx ended.
func (m *Machine) pause(ctx context.Context) error {
	select {
	case <-m.done:
		return errors.New("systemd-nspawn exited")
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(100 * time.Millisecond):
		return nil
	}
}

// childPID returns the PID of a child of parent whose command name is comm.
func childPID(parent int, comm string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
	if err != nil {
		return 0
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if procComm(pid) == comm {
			return pid
		}
	}
	return 0
}

func procComm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Name is the machine's name (nspawn -M); its host link is ve-NAME.
func (m *Machine) Name() string { return m.name }

// InstanceID is the instance-id of the machine's NoCloud meta-data.
func (m *Machine) InstanceID() string { return m.instanceID }

// IP is the machine's IPv4 address, reachable from the host.
func (m *Machine) IP() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ip
}

// Gateway is the host's address on the machine's link.
func (m *Machine) Gateway() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.net == nil {
		return ""
	}
	return m.net.gateway.String()
}

// IMDS is the machine's instance metadata service: what it serves and
// the requests it answered.
func (m *Machine) IMDS() *IMDS {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.imds
}

// HostResources are what a machine holds on the host while it lives, for
// checking from another process that a machine left nothing behind.
type HostResources struct {
	Nspawn, Dnsmasq int    // PIDs
	Link, Table     string // ve-NAME, and its nft table (family ip)
	Dir, StateFile  string
	IMDSAddr        string // 127.0.0.1:PORT
}

// Resources lists what the machine holds on the host.
func (m *Machine) Resources() HostResources {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := HostResources{Link: ifName(m.name), Table: nftTable(m.name), Dir: m.dir, StateFile: stateFile(m.name)}
	if m.nspawn != nil && m.nspawn.Process != nil {
		r.Nspawn = m.nspawn.Process.Pid
	}
	if m.net != nil && m.net.dnsmasq != nil && m.net.dnsmasq.Process != nil {
		r.Dnsmasq = m.net.dnsmasq.Process.Pid
	}
	if m.imds != nil {
		r.IMDSAddr = m.imds.Addr()
	}
	return r
}

// Leader is the PID, as the host sees it, of systemd inside the machine: what `nsenter -t` takes.
func (m *Machine) Leader() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leader
}

// Root is the host path of the machine's root file system. Files written
// there are seen inside (except under tmpfs mounts such as /run and /tmp).
func (m *Machine) Root() string { return m.root }

// ConsoleLog is the path of the file holding the machine's console output.
func (m *Machine) ConsoleLog() string { return m.consoleLog }

// Exec runs cmd inside the machine as root (nsenter into all of systemd's
// namespaces) with a clean environment, and returns its output. A non-zero
// exit is an error wrapping *exec.ExitError, with the command and stderr.
func (m *Machine) Exec(ctx context.Context, cmd ...string) (stdout, stderr string, err error) {
	if len(cmd) == 0 {
		return "", "", errors.New("exec: no command")
	}
	m.mu.Lock()
	leader := m.leader
	m.mu.Unlock()
	if leader == 0 || !m.running() {
		return "", "", fmt.Errorf("exec %s: machine %s is not running", cmd[0], m.name)
	}
	var out, errb bytes.Buffer
	c := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(leader), "-a", "--"}, cmd...)...)
	c.Env = []string{"PATH=" + machinePath, "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"}
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), errb.String(), fmt.Errorf("exec on %s: %s: %w: %s", m.name, strings.Join(cmd, " "), err, tailString(errb.String(), 20))
	}
	return out.String(), errb.String(), nil
}

// cloudInitResult is /run/cloud-init/result.json, written when the last
// stage (final) is over.
type cloudInitResult struct {
	V1 struct {
		Datasource string   `json:"datasource"`
		Errors     []string `json:"errors"`
	} `json:"v1"`
}

// WaitCloudInit waits until cloud-init has finished this boot. It returns
// an error wrapping ErrCloudInit when cloud-init reported errors. Note that
// cloud-init does not count a failing runcmd entry as an error: check what
// the commands did, not only this. cloud-init writes its result just
// before cloud-final.service ends, so systemd may say "starting" for a
// moment more: `systemctl is-system-running --wait` waits that out.
func (m *Machine) WaitCloudInit(ctx context.Context) error {
	m.mu.Lock()
	leader := m.leader
	m.mu.Unlock()
	if leader == 0 {
		return fmt.Errorf("cloud-init on %s: machine is not running", m.name)
	}
	// /run is the machine's tmpfs; the host reads it through PID 1's root.
	path := fmt.Sprintf("/proc/%d/root/run/cloud-init/result.json", leader)
	for {
		if b, err := os.ReadFile(path); err == nil {
			var r cloudInitResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("cloud-init on %s: result.json: %w", m.name, err)
			}
			if len(r.V1.Errors) > 0 {
				// What failed says why in the journal more often than in cloud-init's output.
				jctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				journal, _, _ := m.Exec(jctx, "journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-p", "warning", "-n", "25")
				cancel()
				return fmt.Errorf("%s: %w: %s\n/var/log/cloud-init-output.log:\n%s\njournal (warnings and worse):\n%s", m.name, ErrCloudInit,
					strings.Join(r.V1.Errors, "; "), tailFile(filepath.Join(m.root, "var/log/cloud-init-output.log"), 30), strings.TrimSpace(journal))
			}
			return nil
		}
		if err := m.pause(ctx); err != nil {
			st, _, _ := m.Exec(context.Background(), "cloud-init", "status", "--long")
			return fmt.Errorf("waiting for cloud-init on %s: %w\ncloud-init status: %s\nconsole (%s):\n%s", m.name, err,
				strings.TrimSpace(st), m.consoleLog, tailFile(m.consoleLog, 40))
		}
	}
}

// Stop halts the machine (SIGTERM to nspawn, which shuts systemd down in
// order; SIGKILL if it has not exited when ctx ends or after 30 s). The
// host network stays until Close. Stopping a stopped machine does nothing.
func (m *Machine) Stop(ctx context.Context) error {
	m.mu.Lock()
	cmd := m.nspawn
	m.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-m.done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	_ = cmd.Process.Kill()
	<-m.done
	return fmt.Errorf("stop %s: killed after it did not halt in time", m.name)
}

// Snapshot stops the machine and writes its root file system to outTar
// (.tar.zst): the stand-in for creating an AMI. Before packing it drops
// the NoCloud seed and cloud-init's per-instance state (what `cloud-init
// clean` removes, except scripts/), so a boot of the snapshot is a new
// instance with new user data. The machine cannot be started again.
func (m *Machine) Snapshot(ctx context.Context, outTar string) error {
	if err := m.Stop(ctx); err != nil {
		return err
	}
	for _, p := range []string{"seed", "instance", "instances", "data", "sem", "handlers"} {
		if err := os.RemoveAll(filepath.Join(m.root, "var/lib/cloud", p)); err != nil {
			return fmt.Errorf("snapshot %s: %w", m.name, err)
		}
	}
	tmp := outTar + ".part"
	if _, err := run(ctx, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
		"-I", "zstd -T0 -3", "-C", m.root, "-cf", tmp, "."); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("snapshot %s: %w", m.name, err)
	}
	if err := os.Rename(tmp, outTar); err != nil {
		return fmt.Errorf("snapshot %s: %w", m.name, err)
	}
	return nil
}

// Close stops the machine and undoes everything Boot made: the container,
// dnsmasq, the IMDS server, the nft table, the host address and link, ip_forward (if a
// harness turned it on and no other machine needs it), the subnet lock and
// the machine's folder. It is safe to call twice and from several
// goroutines; later calls wait for the first. Failures are written to the
// machine's log; Leftovers reports anything that survived.
func (m *Machine) Close() {
	m.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			logf(m.log, "%v", err)
		}
		m.mu.Lock()
		hn, imds := m.net, m.imds
		m.mu.Unlock()
		if hn != nil {
			_ = hn.teardown(m.log)
		}
		if imds != nil {
			imds.close()
		}
		if err := unmountUnder(m.dir); err != nil {
			logf(m.log, "close %s: %v", m.name, err)
		}
		if err := removeTree(m.dir); err != nil {
			logf(m.log, "close %s: %v", m.name, err)
		}
		removeState(m.name)
		unregister(m)
		logf(m.log, "%s: closed", m.name)
	})
}

// mountOverlay mounts the machine's root as an overlay: the image,
// unpacked once into a shared read-only lower folder, under a private
// upper folder that takes every change the machine makes.
func (m *Machine) mountOverlay(ctx context.Context, image string) error {
	lower, unlock, err := lowerFor(ctx, image)
	if err != nil {
		return err
	}
	// Held until the overlay is mounted: a prune in another process checks the mounts under
	// this lock, so it never removes a lower between lowerFor and the mount.
	mounted := false
	defer func() {
		unlock()
		// Then the roots of the image's earlier versions go; pruneLowers only tries their locks,
		// so this boot never waits on another process.
		if mounted {
			pruneLowers(ctx, image, lower, m.log)
		}
	}()
	upper, work := filepath.Join(m.dir, "upper"), filepath.Join(m.dir, "work")
	for _, d := range []string{upper, work, m.root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	for _, p := range []string{lower, upper, work} {
		if strings.ContainsAny(p, ",:") {
			return fmt.Errorf("path %q has a character overlay options cannot hold", p)
		}
	}
	if _, err := run(ctx, "mount", "-t", "overlay", "overlay",
		"-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work, m.root); err != nil {
		for _, d := range []string{upper, work, m.root} {
			_ = os.RemoveAll(d)
		}
		return err
	}
	mounted = true
	m.mu.Lock()
	m.overlay = true
	m.mu.Unlock()
	return nil
}

// unmountUnder unmounts every mount below dir, deepest first.
func unmountUnder(dir string) error {
	points, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range points {
		if _, err := run(context.Background(), "umount", p); err != nil {
			// Busy: detach it now, the kernel frees it when unused.
			if _, lerr := run(context.Background(), "umount", "-l", p); lerr != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// removeTree removes dir unless something is still mounted below it, in
// which case removing would reach into the mounted file system.
func removeTree(dir string) error {
	points, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	if len(points) > 0 {
		return fmt.Errorf("not removing %s: %s is mounted", dir, points[0])
	}
	return os.RemoveAll(dir)
}

// mountinfoFile is this process's mount table; a test points it at a file of its own.
var mountinfoFile = "/proc/self/mountinfo"

// mountsBelow lists the mount points below dir.
func mountsBelow(dir string) ([]string, error) {
	mi, err := os.ReadFile(mountinfoFile)
	if err != nil {
		return nil, err
	}
	var points []string
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	return points, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
