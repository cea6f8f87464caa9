// Package stack is the `wsgi-stack` provisioner: it renders the WSGI stack of package templates
// for the machine it is given, uploads the files, runs the install script as root over the
// communicator with a progress line per phase, and finally cleans the machine for imaging.
package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2/hcldec"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

// Provisioner implements provisioner "wsgi-stack".
type Provisioner struct {
	config Config
}

var _ packersdk.Provisioner = (*Provisioner)(nil)

// ConfigSpec describes the HCL body.
func (p *Provisioner) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

// Prepare decodes and validates the configuration; every problem names its HCL key.
func (p *Provisioner) Prepare(raws ...interface{}) error { return p.config.Prepare(raws...) }

// Provision installs the stack on the machine behind comm.
func (p *Provisioner) Provision(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, generated map[string]interface{}) error {
	return p.provision(ctx, ui, comm, generated[GeneratedCloudInitDone] == "true")
}

// GeneratedCloudInitDone is the builder's generated-data key that says it already waited for
// cloud-init on this machine (the wsgi-ami builder sets it), so the wait happens once per build.
const GeneratedCloudInitDone = "CloudInitDone"

// Commands the provisioner runs as the SSH user. The rest go through execute_command.
const (
	cmdCloudInit = "cloud-init status --wait"
	cmdWhoami    = "id -u"
	// os-release(5): /etc/os-release, falling back to /usr/lib/os-release.
	cmdOSRelease = "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release"
)

// cloud-init status exit codes: 2 is "done, with recoverable errors" (cloud-init 23.4+);
// 127 is the shell's "command not found".
const (
	cloudInitDegraded = 2
	commandNotFound   = 127
)

func (p *Provisioner) provision(ctx context.Context, ui packersdk.Ui, comm remote, cloudInitDone bool) error {
	r := &runner{comm: comm, ui: ui}
	c := &p.config

	if *c.WaitForCloudInit && !cloudInitDone {
		if err := waitForCloudInit(ctx, r, ui); err != nil {
			return err
		}
	}

	uid, err := r.mustRun(ctx, cmdWhoami, runOpts{})
	if err != nil {
		return fmt.Errorf("wsgi-stack: find the SSH user: %w", err)
	}
	sudo := strings.TrimSpace(uid.Stdout) != "0"

	family := image.Family(c.DistroFamily)
	if c.DistroFamily == image.FamilyAuto {
		res, err := r.mustRun(ctx, cmdOSRelease, runOpts{})
		if err != nil {
			return fmt.Errorf("wsgi-stack: distro_family = %q needs /etc/os-release on the machine: %w", image.FamilyAuto, err)
		}
		rel := parseOSRelease(res.Stdout)
		if family, err = familyOf(rel); err != nil {
			return fmt.Errorf("wsgi-stack: %w", err)
		}
		ui.Say(fmt.Sprintf("Detected %s: %s family", nonEmpty(rel.PrettyName, rel.ID), family))
	}

	// Prepare validated the stack; the family it detected changes no check, only the layout.
	stack := c.Config.Stack(family)
	bundle := image.Render(stack)
	gunicorn := "distro Gunicorn"
	if stack.GunicornSource == image.GunicornFromPip {
		gunicorn = "Gunicorn " + stack.GunicornVersion + " from pip"
	}
	ui.Say(fmt.Sprintf("Installing the WSGI stack %q: %d socket-activated units, %s", stack.AppName, stack.Sockets, gunicorn))

	asRoot := func(command string) (string, error) { return c.rootCommand(command, sudo) }

	if sudo {
		cmd, err := asRoot("true")
		if err != nil {
			return err
		}
		if _, err := r.mustRun(ctx, cmd, runOpts{}); err != nil {
			return fmt.Errorf("wsgi-stack: the SSH user is not root and cannot use sudo without a password "+
				"(give it NOPASSWD sudo, or set execute_command): %w", err)
		}
	}

	stage, err := makeStage(ctx, r, c.StagingDir, bundle)
	if err != nil {
		return err
	}
	removed := false
	removeStage := func() error {
		removed = true
		_, err := r.mustRun(ctx, "rm -rf "+stage, runOpts{})
		return err
	}
	defer func() {
		// Best effort after a failure: the error that stopped the build is the one to report.
		if !removed && ctx.Err() == nil {
			_ = removeStage()
		}
	}()

	if err := upload(r, path.Join(stage, "install.sh"), bundle.InstallScript); err != nil {
		return err
	}
	for _, f := range bundle.Files {
		if err := upload(r, path.Join(stage, "files", f.Path), f.Content); err != nil {
			return err
		}
	}

	install, err := asRoot(fmt.Sprintf("/bin/sh %s/install.sh %s/files", stage, stage))
	if err != nil {
		return err
	}
	if _, err := r.mustRun(ctx, install, runOpts{stream: true, phases: countPhases(bundle.InstallScript)}); err != nil {
		return fmt.Errorf("wsgi-stack: install: %w", err)
	}
	if err := removeStage(); err != nil {
		return fmt.Errorf("wsgi-stack: remove the staging folder: %w", err)
	}

	if !*c.ImageHygiene {
		ui.Say("Image hygiene skipped (image_hygiene = false)")
		return nil
	}
	// The script comes on standard input so that nothing is left on disk to clean afterwards:
	// this is the last command of the provisioner.
	hygiene, err := asRoot("/bin/sh -s")
	if err != nil {
		return err
	}
	if _, err := r.mustRun(ctx, hygiene, runOpts{stdin: bundle.HygieneScript, stream: true, phases: countPhases(bundle.HygieneScript)}); err != nil {
		return fmt.Errorf("wsgi-stack: image hygiene: %w", err)
	}
	return nil
}

// waitForCloudInit waits until cloud-init has finished, so the install does not race its
// package runs or user creation.
func waitForCloudInit(ctx context.Context, r *runner, ui packersdk.Ui) error {
	ui.Say("Waiting for cloud-init to finish")
	res, err := r.run(ctx, cmdCloudInit, runOpts{stream: true})
	if err != nil {
		return fmt.Errorf("wsgi-stack: wait for cloud-init: %w", err)
	}
	switch res.Status {
	case 0:
		return nil
	case cloudInitDegraded:
		ui.Say("Warning: cloud-init finished with recoverable errors (exit status 2); see `cloud-init status --long` on the machine. Continuing.")
		return nil
	case commandNotFound:
		ui.Say("cloud-init is not installed on this machine; not waiting for it")
		return nil
	default:
		return fmt.Errorf("wsgi-stack: cloud-init failed on the build machine (set wait_for_cloud_init = false to go on regardless): %w", res.err())
	}
}

// stageRe is what mktemp may print for the staging folder.
var stageRe = regexp.MustCompile(`^(/[A-Za-z0-9._+-]+)+$`)

// makeStage makes a private staging folder below dir with the folders of every file to upload
// and returns its path. mktemp picks a new name, so a second build never finds old files there.
func makeStage(ctx context.Context, r *runner, dir string, b *image.Bundle) (string, error) {
	dirs := []string{}
	for _, f := range b.Files {
		d := path.Join("files", path.Dir(f.Path))
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	cmd := fmt.Sprintf(`umask 077 && d=$(mktemp -d %s/wsgi-stack.XXXXXXXX) && cd "$d" && mkdir -p %s && echo "$d"`,
		dir, strings.Join(dirs, " "))
	res, err := r.mustRun(ctx, cmd, runOpts{})
	if err != nil {
		return "", fmt.Errorf("wsgi-stack: make the staging folder in staging_dir %s: %w", dir, err)
	}
	stage := lastLine(res.Stdout)
	if !stageRe.MatchString(stage) || !strings.HasPrefix(stage, dir+"/wsgi-stack.") {
		return "", fmt.Errorf("wsgi-stack: make the staging folder in staging_dir %s: unexpected output %q", dir, res.Stdout)
	}
	return stage, nil
}

func upload(r *runner, dst string, content []byte) error {
	if err := r.comm.Upload(dst, bytes.NewReader(content), nil); err != nil {
		return fmt.Errorf("wsgi-stack: upload %s: %w", dst, err)
	}
	return nil
}

// commandData is what execute_command sees.
type commandData struct {
	Command string
	Sudo    bool
}

// rootCommand wraps command in execute_command.
func (c *Config) rootCommand(command string, sudo bool) (string, error) {
	ictx := c.ctx
	ictx.Data = &commandData{Command: command, Sudo: sudo}
	out, err := interpolate.Render(c.ExecuteCommand, &ictx)
	if err != nil {
		return "", fmt.Errorf("wsgi-stack: execute_command: %w", err)
	}
	if strings.TrimSpace(out) == "" {
		return "", errors.New("wsgi-stack: execute_command: renders to an empty command")
	}
	return out, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func nonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
