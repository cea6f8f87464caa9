//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/demo"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// TestDemo runs `make demo`'s path: wsgi-ami against moto with its SSH session on the local
// build machine (the key it imports through EC2 is the key sshd accepts), the real wsgi-stack
// over that session, the wsgi-cloudinit payload for the bundled Django app, and
// wsgi-launch-template with an instance refresh; then an instance of the golden image, booted
// with the user data read back from the launch template's new default version, must answer
// from every unit.
func TestDemo(t *testing.T) { harness.ForEachRelease(t, testDemo) }

func testDemo(t *testing.T, release harness.Release) {
	ctx, log, _ := begin(t, 20*time.Minute)
	res, err := demo.Run(ctx, demo.Options{Log: log, WorkDir: t.TempDir(), Release: release})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.AMI, "ami-") || res.Version != 2 || res.RefreshID == "" {
		t.Errorf("AMI %q, launch-template version %d, refresh %q: want the built AMI in version 2 and a started refresh", res.AMI, res.Version, res.RefreshID)
	}
	if !strings.HasPrefix(res.CopyAMI, "ami-") {
		t.Errorf("no region copy of the AMI: %q", res.CopyAMI)
	}
	if len(res.Units) != 3 {
		t.Errorf("units that answered: %v, want all 3", res.Units)
	}
	if res.StaticBytes == 0 {
		t.Error("no static file served by NGINX")
	}
	for _, p := range res.Phases {
		t.Logf("CHECK demo phase %-75s %s", p.Name, p.Took.Round(100*time.Millisecond))
	}
	t.Logf("CHECK demo: %s in %s version %d (%d bytes of gzip user data), refresh %s, served by %v; eu-west-1 copy %s, shared",
		res.AMI, res.LaunchTemplate, res.Version, res.UserDataBytes, res.RefreshID, res.Units, res.CopyAMI)
}
