//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// testLog sends the harness's progress lines to the test log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// nullTemplate is a build with the null builder over SSH into a harness machine (user packer,
// the key and address as variables) and one provisioner block.
func nullTemplate(provisioner string) string {
	return `
variable "host" { type = string }
variable "key"  { type = string }

source "null" "machine" {
  communicator         = "ssh"
  ssh_host             = var.host
  ssh_username         = "packer"
  ssh_private_key_file = var.key
  ssh_timeout          = "2m"
}

build {
  sources = ["source.null.machine"]
` + provisioner + `
}
`
}

// shellTemplate proves SSH, systemd and the route to Debian's mirror.
var shellTemplate = nullTemplate(`  provisioner "shell" {
    inline = [
      "uname -a && systemctl is-system-running --wait || true",
      "sudo apt-get update",
    ]
  }`)

// TestHarness drives the whole harness once: base image, a build machine
// with an SSH seed, the real packer over SSH with apt reaching Debian's
// mirror through the host's NAT, a snapshot, and two new instances of the
// snapshot booted side by side.
func TestHarness(t *testing.T) { harness.ForEachRelease(t, testHarness) }

func testHarness(t *testing.T, release harness.Release) {
	ctx, log, repoRoot := begin(t, 25*time.Minute)

	start := time.Now()
	img, err := harness.BaseImage(ctx, release, log)
	if err != nil {
		t.Fatal(err)
	}
	imageTime := time.Since(start)

	scratch := t.TempDir()
	key, pub, err := harness.NewSSHKey(scratch)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	build, err := harness.Boot(ctx, harness.BootOptions{
		Image:      img,
		Name:       "wsgi-build",
		InstanceID: "i-build-0001",
		Hostname:   "build-host",
		UserData:   harness.SSHUserData("packer", pub),
		WorkDir:    scratch,
		Log:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(build.Close)
	bootTime := time.Since(start)
	if build.IP() == "" {
		t.Fatal("booted machine has no address")
	}
	// cloud-init writes result.json just before cloud-final.service ends,
	// so the boot may still be "starting" for a moment: wait it out.
	state, _, err := build.Exec(ctx, "systemctl", "is-system-running", "--wait")
	if err != nil || strings.TrimSpace(state) != "running" {
		failed, _, _ := build.Exec(ctx, "systemctl", "--failed", "--no-legend")
		t.Errorf("build machine state %q (%v), failed units:\n%s", strings.TrimSpace(state), err, failed)
	}

	packer, err := harness.Packer(ctx, repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	tpl := filepath.Join(scratch, "null.pkr.hcl")
	if err := os.WriteFile(tpl, []byte(shellTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	cmd := exec.CommandContext(ctx, packer, "build", "-color=false",
		"-var", "host="+build.IP(), "-var", "key="+key, tpl)
	cmd.Dir = scratch
	cmd.Env = harness.PackerEnv(filepath.Join(scratch, "packer"))
	out, err := cmd.CombinedOutput()
	packerTime := time.Since(start)
	t.Logf("packer build output:\n%s", out)
	if err != nil {
		t.Fatalf("packer build: %v", err)
	}
	for _, want := range []string{
		"build-host",                         // uname -a shows the meta-data hostname
		"GNU/Linux",                          // uname -a
		"running",                            // systemctl is-system-running --wait
		release.Suite + "-updates InRelease", // sudo apt-get update reached the mirror
		"Reading package lists...",
		"Builds finished. The artifacts of successful builds are:",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("packer output lacks %q", want)
		}
	}

	golden := filepath.Join(scratch, "golden.tar.zst")
	start = time.Now()
	if err := build.Snapshot(ctx, golden); err != nil {
		t.Fatal(err)
	}
	snapTime := time.Since(start)
	st, err := os.Stat(golden)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := build.Exec(ctx, "true"); err == nil {
		t.Error("Exec succeeded on a machine stopped by Snapshot")
	}
	build.Close()

	// Two instances of the snapshot at once: each needs its own subnet.
	ids := []string{"i-golden-0001", "i-golden-0002"}
	machines := make([]*harness.Machine, len(ids))
	bootTimes := make([]time.Duration, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := time.Now()
			machines[i], errs[i] = harness.Boot(ctx, harness.BootOptions{
				Image:      golden,
				Name:       fmt.Sprintf("wsgi-gold%d", i),
				InstanceID: id,
				UserData:   []byte("#cloud-config\nruncmd:\n  - [sh, -c, 'echo \"$(cat /var/lib/cloud/data/instance-id)\" > /root/first-boot']\n"),
				WorkDir:    scratch,
				Log:        log,
			})
			bootTimes[i] = time.Since(s)
		}()
	}
	wg.Wait()
	for i, m := range machines {
		if m != nil {
			t.Cleanup(m.Close)
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	if machines[0].IP() == machines[1].IP() {
		t.Errorf("both instances got address %s", machines[0].IP())
	}
	for i, m := range machines {
		checkInstance(ctx, t, release, m, ids[i])
	}

	// A boot whose cloud-init fails is an error that says why, and
	// leaves nothing behind (the Leftovers check at the end covers it).
	bad, err := harness.Boot(ctx, harness.BootOptions{
		Image:    golden,
		Name:     "wsgi-bad",
		UserData: []byte("#cloud-config\nwrite_files:\n  - path: /proc/no-such-dir/file\n    content: x\n"),
		WorkDir:  scratch,
		Log:      log,
	})
	if bad != nil {
		bad.Close()
	}
	if !errors.Is(err, harness.ErrCloudInit) || !strings.Contains(err.Error(), "write-files") {
		t.Errorf("boot with a failing write_files: got %v, want an error wrapping ErrCloudInit naming write-files", err)
	}

	t.Logf("base image:                 %v (%s)", imageTime.Round(100*time.Millisecond), img)
	t.Logf("boot to cloud-init done:    %v (build machine, %s)", bootTime.Round(100*time.Millisecond), build.IP())
	t.Logf("packer build (null+shell):  %v", packerTime.Round(100*time.Millisecond))
	t.Logf("snapshot:                   %v (%.0f MB)", snapTime.Round(100*time.Millisecond), float64(st.Size())/1e6)
	for i, m := range machines {
		t.Logf("boot of snapshot %s: %v (%s)", ids[i], bootTimes[i].Round(100*time.Millisecond), m.IP())
	}
}

// checkInstance asserts that a machine booted from the snapshot is a new
// instance to cloud-init, kept what the build did, and reaches the mirror.
func checkInstance(ctx context.Context, t *testing.T, release harness.Release, m *harness.Machine, id string) {
	t.Helper()
	exec := func(cmd ...string) string {
		t.Helper()
		out, _, err := m.Exec(ctx, cmd...)
		if err != nil {
			t.Errorf("%s: %v", m.Name(), err)
		}
		return strings.TrimSpace(out)
	}
	if got := exec("cat", "/root/first-boot"); got != id {
		t.Errorf("%s: runcmd of the new instance wrote %q, want %q", m.Name(), got, id)
	}
	if got := exec("ls", "/var/lib/cloud/instances"); got != id {
		t.Errorf("%s: cloud-init instances %q, want only %q (build instance state dropped)", m.Name(), got, id)
	}
	var status struct {
		Status string   `json:"status"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(exec("cloud-init", "status", "--format=json")), &status); err != nil {
		t.Errorf("%s: cloud-init status: %v", m.Name(), err)
	} else if status.Status != "done" || len(status.Errors) > 0 {
		t.Errorf("%s: cloud-init status %q errors %v", m.Name(), status.Status, status.Errors)
	}
	// The build's work survived into the image: its user and apt lists.
	exec("id", "packer")
	if got := exec("sh", "-c", "ls /var/lib/apt/lists/ | grep -c "+release.Suite+"-updates"); got == "0" {
		t.Errorf("%s: apt lists from the build are missing", m.Name())
	}
	if got := exec("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
		"http://deb.debian.org/debian/dists/"+release.Suite+"/Release"); got != "200" {
		t.Errorf("%s: mirror answered %q, want 200", m.Name(), got)
	}
}

// begin is the start of every end-to-end test: root is required, the test gets a context with
// its time limit, a log into the test's output and the repository root, and at its very end
// (registered first, so it runs after every machine's Close) it fails if anything the harness
// started is left behind.
func begin(t *testing.T, timeout time.Duration) (context.Context, testLog, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the e2e tests need root (systemd-nspawn, ip, nft)")
	}
	t.Cleanup(func() {
		if left := harness.Leftovers(); len(left) > 0 {
			t.Errorf("left behind after Close:\n%s", strings.Join(left, "\n"))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	repoRoot, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return ctx, testLog{t}, repoRoot
}
