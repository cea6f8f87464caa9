package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// goldenTemplate bakes the default stack with the distribution's Gunicorn (PyPI is not
// reachable here), as bench/stackbench does; Flask comes with the base image.
const goldenTemplate = `
variable "host" { type = string }
variable "key"  { type = string }

packer {
  required_plugins {
    wsgi = { source = "github.com/wsgi-ami/wsgi", version = ">= 0.0.1" }
  }
}

source "null" "machine" {
  communicator         = "ssh"
  ssh_host             = var.host
  ssh_username         = "packer"
  ssh_private_key_file = var.key
  ssh_timeout          = "2m"
}

build {
  sources = ["source.null.machine"]
  provisioner "wsgi-stack" {
    gunicorn_source = "distro"
  }
}
`

// buildGolden runs the real packer with wsgi-stack against a fresh machine of base, adds the
// fixture server, and snapshots it to out: the stand-in for the AMI.
func buildGolden(ctx context.Context, repo, base, work, out string, log io.Writer) error {
	key, pub, err := harness.NewSSHKey(work)
	if err != nil {
		return err
	}
	m, err := harness.Boot(ctx, harness.BootOptions{Image: base, Name: "fbb-bake", UserData: harness.SSHUserData("packer", pub), WorkDir: work, Log: log})
	if err != nil {
		return err
	}
	defer m.Close()

	packer, err := harness.Packer(ctx, repo)
	if err != nil {
		return err
	}
	plugin := filepath.Join(work, "packer-plugin-wsgi")
	env := harness.PackerEnv(filepath.Join(work, "packer"))
	steps := [][]string{
		{"go", "build", "-o", plugin, "."},
		{packer, "plugins", "install", "--path", plugin, "github.com/wsgi-ami/wsgi"},
	}
	for _, s := range steps {
		if err := runIn(ctx, repo, env, log, s...); err != nil {
			return err
		}
	}
	tmpl := filepath.Join(work, "golden.pkr.hcl")
	if err := os.WriteFile(tmpl, []byte(goldenTemplate), 0o644); err != nil {
		return err
	}
	if err := runIn(ctx, work, env, log, packer, "build", "-var", "host="+m.IP(), "-var", "key="+key, tmpl); err != nil {
		return err
	}
	if err := installFixtures(m.Root()); err != nil {
		return err
	}
	return m.Snapshot(ctx, out)
}

// stockHygiene is what wsgi-stack's last step does to the golden image (templates/files/
// hygiene.sh.tmpl), so both images boot as equally fresh instances: new SSH host keys, a new
// machine-id, no cloud-init logs or apt lists.
const stockHygiene = `apt-get clean
rm -rf /var/lib/apt/lists/*
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id`

// buildStock boots the base image once with no user data, adds the same fixture server and
// snapshots it like the golden image, without the bake: the image people start from.
func buildStock(ctx context.Context, base, work, out string, log io.Writer) error {
	m, err := harness.Boot(ctx, harness.BootOptions{Image: base, Name: "fbb-stock", WorkDir: work, Log: log})
	if err != nil {
		return err
	}
	defer m.Close()
	if err := installFixtures(m.Root()); err != nil {
		return err
	}
	if _, stderr, err := m.Exec(ctx, "sh", "-eu", "-c", stockHygiene); err != nil {
		return fmt.Errorf("stock image hygiene: %w: %s", err, stderr)
	}
	return m.Snapshot(ctx, out)
}

func runIn(ctx context.Context, dir string, env []string, log io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %w", args, err)
	}
	return nil
}
