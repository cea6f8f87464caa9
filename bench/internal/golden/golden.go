// Package golden bakes the golden image the benchmarks measure: the real packer with the null
// builder and wsgi-stack over SSH into a fresh machine of a base image, then a snapshot, the
// stand-in for the AMI.
package golden

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// template bakes the stack of Options.Stack, by default the distribution's Gunicorn (PyPI is
// not reachable here) and everything else the provisioner's default configuration.
const template = `
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
STACK
  }
}
`

// DefaultStack is the wsgi-stack block's body without Options.Stack.
const DefaultStack = `    gunicorn_source = "distro"`

// Options say where and how to bake.
type Options struct {
	Repo string // the repository root, whose plugin is built and installed
	Base string // the base image tarball
	Work string // scratch folder for keys, Packer's config and the plugin
	Out  string // the golden image tarball to write
	Name string // the build machine's name
	Log  io.Writer
	// Stack is the body of the wsgi-stack block, HCL. Default DefaultStack.
	Stack string
	// BeforeBuild, if set, runs on the fresh machine before packer build (e.g. an index the
	// bake installs from).
	BeforeBuild func(m *harness.Machine) error
	// Prepare, if set, runs on the baked machine before the snapshot (e.g. test fixtures).
	Prepare func(m *harness.Machine) error
}

// Bake runs the real packer with wsgi-stack against a fresh machine of o.Base and snapshots it.
func Bake(ctx context.Context, o Options) error {
	key, pub, err := harness.NewSSHKey(o.Work)
	if err != nil {
		return err
	}
	m, err := harness.Boot(ctx, harness.BootOptions{Image: o.Base, Name: o.Name, UserData: harness.SSHUserData("packer", pub), WorkDir: o.Work, Log: o.Log})
	if err != nil {
		return err
	}
	defer m.Close()

	packer, err := harness.Packer(ctx, o.Repo)
	if err != nil {
		return err
	}
	plugin := filepath.Join(o.Work, "packer-plugin-wsgi")
	env := harness.PackerEnv(filepath.Join(o.Work, "packer"))
	tmpl := filepath.Join(o.Work, "golden.pkr.hcl")
	stack := o.Stack
	if stack == "" {
		stack = DefaultStack
	}
	if err := os.WriteFile(tmpl, []byte(strings.Replace(template, "STACK", stack, 1)), 0o644); err != nil {
		return err
	}
	if o.BeforeBuild != nil {
		if err := o.BeforeBuild(m); err != nil {
			return err
		}
	}
	steps := []struct {
		dir  string
		args []string
	}{
		{o.Repo, []string{"go", "build", "-o", plugin, "."}},
		{o.Work, []string{packer, "plugins", "install", "--path", plugin, "github.com/wsgi-ami/wsgi"}},
		{o.Work, []string{packer, "build", "-var", "host=" + m.IP(), "-var", "key=" + key, tmpl}},
	}
	for _, s := range steps {
		cmd := exec.CommandContext(ctx, s.args[0], s.args[1:]...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = s.dir, env, o.Log, o.Log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%v: %w", s.args, err)
		}
	}
	if o.Prepare != nil {
		if err := o.Prepare(m); err != nil {
			return err
		}
	}
	return m.Snapshot(ctx, o.Out)
}
