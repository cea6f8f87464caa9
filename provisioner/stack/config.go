//go:generate packer-sdc mapstructure-to-hcl2 -type Config

package stack

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/report"
)

// DefaultExecuteCommand runs a command as root: through sudo -n when the SSH user is not root,
// so a sudo that wants a password fails at once instead of hanging the build.
const DefaultExecuteCommand = "{{if .Sudo}}sudo -n {{end}}{{.Command}}"

// Config is the HCL body of `provisioner "wsgi-stack"`: the stack's keys (image.Config, declared
// once there) and the provisioner's own.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`
	image.Config        `mapstructure:",squash"`

	// Clean the machine for imaging as the very last command: cloud-init state and logs, machine
	// id, SSH host keys, package caches, shell history. Default true.
	ImageHygiene *bool `mapstructure:"image_hygiene"`
	// Wait for cloud-init to finish (`cloud-init status --wait`) before installing anything, so
	// the install does not race cloud-init's own package runs. Default true. Skipped when the
	// builder already waited (wsgi-ami does, and says so in its generated data).
	WaitForCloudInit *bool `mapstructure:"wait_for_cloud_init"`
	// Folder on the machine in which a private staging folder for the rendered files is made
	// (and removed afterwards). Default "/tmp".
	StagingDir string `mapstructure:"staging_dir"`
	// How a command that needs root is run. {{.Command}} is the command, {{.Sudo}} is true when
	// the SSH user is not root. Default "{{if .Sudo}}sudo -n {{end}}{{.Command}}". The command
	// reads the hygiene script from standard input, so the wrapper must pass stdin through.
	ExecuteCommand string `mapstructure:"execute_command"`

	ctx interpolate.Context
}

var stagingDirRe = regexp.MustCompile(`^(/[A-Za-z0-9._+-]+)+$`)

// Prepare decodes raws into c, applies defaults and validates every key.
func (c *Config) Prepare(raws ...interface{}) error {
	err := config.Decode(c, &config.DecodeOpts{
		PluginType:         "wsgi-stack",
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter:  &interpolate.RenderFilter{Exclude: []string{"execute_command"}},
	}, raws...)
	if err != nil {
		return fmt.Errorf("wsgi-stack: %w", err)
	}

	if c.StagingDir == "" {
		c.StagingDir = "/tmp"
	}
	if c.ExecuteCommand == "" {
		c.ExecuteCommand = DefaultExecuteCommand
	}
	if c.ImageHygiene == nil {
		c.ImageHygiene = boolPtr(true)
	}
	if c.WaitForCloudInit == nil {
		c.WaitForCloudInit = boolPtr(true)
	}

	r := c.Config.Prepare()
	if !stagingDirRe.MatchString(c.StagingDir) || path.Clean(c.StagingDir) != c.StagingDir {
		r.Add("staging_dir", "must be a clean absolute path without spaces or quotes, such as /tmp, got %q", c.StagingDir)
	}
	c.checkExecuteCommand(&r)
	return report.Packer("wsgi-stack", r.Err())
}

// checkExecuteCommand makes sure the template renders, with Packer's template functions, and
// runs the command it is given.
func (c *Config) checkExecuteCommand(r *report.Report) {
	if !strings.Contains(c.ExecuteCommand, ".Command") {
		r.Add("execute_command", "must contain {{.Command}}, got %q", c.ExecuteCommand)
		return
	}
	if _, err := c.rootCommand("true", true); err != nil {
		r.Add("execute_command", "%v", errors.Unwrap(err))
	}
}

func boolPtr(b bool) *bool { return &b }
