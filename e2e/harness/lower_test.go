package harness

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOverlayReads(t *testing.T) {
	const lower = "/img/.golden.tar.zst.10-20.root"
	mi := strings.Join([]string{
		"25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
		"900 25 0:77 / /tmp/m1/root rw,relatime shared:400 - overlay overlay rw,lowerdir=" + lower + ",upperdir=/tmp/m1/upper,workdir=/tmp/m1/work,uuid=on",
		"901 25 0:78 / /tmp/m2/root rw,relatime shared:401 - overlay overlay rw,lowerdir=/a:/img/.stacked.root,upperdir=/u,workdir=/w",
		"902 25 0:79 / /tmp/m3 rw - tmpfs tmpfs rw,lowerdir=/img/.tmpfs.root",
	}, "\n")
	for _, tc := range []struct {
		dir  string
		want bool
	}{
		{lower, true},
		{"/img/.stacked.root", true}, // one of several lower folders
		{"/a", true},
		{"/img/.golden.tar.zst.10-2", false}, // a prefix of a lower is not it
		{"/img/.tmpfs.root", false},          // not an overlay
		{"/tmp/m1/upper", false},
	} {
		if got := overlayReads(mi, tc.dir); got != tc.want {
			t.Errorf("overlayReads(%s) = %v, want %v", tc.dir, got, tc.want)
		}
	}
}

// A rewritten image leaves its earlier lower folders behind; pruneLowers removes those that are
// free, and no other image's, not one whose lock another process holds, and not one a mounted
// overlay reads.
func TestPruneLowers(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "golden.tar.zst")
	writeTestFile(t, image, "tarball")
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "usr", "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, p+".ok", "")
		writeTestFile(t, p+".lock", "")
		return p
	}
	keep := mk(".golden.tar.zst.7-300.root")
	old := mk(".golden.tar.zst.7-100.root")
	busy := mk(".golden.tar.zst.7-200.root")
	read := mk(".golden.tar.zst.7-250.root")
	other := mk(".other.tar.zst.7-100.root")
	// A machine's overlay still reads one of the earlier versions.
	mountinfoFile = filepath.Join(t.TempDir(), "mountinfo")
	t.Cleanup(func() { mountinfoFile = "/proc/self/mountinfo" })
	writeTestFile(t, mountinfoFile, "25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"+
		"900 25 0:77 / /tmp/m1/root rw,relatime shared:400 - overlay overlay rw,lowerdir="+read+",upperdir=/tmp/m1/upper,workdir=/tmp/m1/work\n")
	unlock, err := lockFile(context.Background(), busy+".lock")
	if err != nil {
		t.Fatal(err)
	}

	var log bytes.Buffer
	pruneLowers(context.Background(), image, keep, &log)
	for _, p := range []string{old, old + ".ok", old + ".lock"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s: still there (%v), want it pruned", p, err)
		}
	}
	for _, p := range []string{keep, keep + ".ok", busy, busy + ".ok", read, read + ".ok", other, other + ".ok", image} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
	if log.Len() != 0 {
		t.Errorf("nothing to report, got %q", log.String())
	}

	// Once its lock is free, the busy one goes too; from a relative image path as well.
	unlock()
	t.Chdir(dir)
	pruneLowers(context.Background(), "golden.tar.zst", keep, &log)
	if _, err := os.Stat(busy); !os.IsNotExist(err) {
		t.Errorf("%s: still there (%v) after its lock was freed", busy, err)
	}
	for _, p := range []string{keep, read} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
}

func writeTestFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
