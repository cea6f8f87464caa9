//go:generate packer-sdc mapstructure-to-hcl2 -type Config

package stack

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

// FamilyAuto asks Provision to read the family from /etc/os-release on the machine.
const FamilyAuto = "auto"

// DefaultExecuteCommand runs a command as root: through sudo -n when the SSH user is not root,
// so a sudo that wants a password fails at once instead of hanging the build.
const DefaultExecuteCommand = "{{if .Sudo}}sudo -n {{end}}{{.Command}}"

// Config is the HCL body of `provisioner "wsgi-stack"`. Every Stack field has a key of its own;
// a key left out takes the default of image.Default. The numeric keys are pointers so that
// an explicit 0 is reported as an error instead of silently becoming the default.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// Name of the app: the NGINX upstream and the Gunicorn process titles. Default "app".
	AppName string `mapstructure:"app_name"`
	// System user that runs Gunicorn. Default "wsgi".
	User string `mapstructure:"user"`
	// Group of that user. Default: the same as user.
	Group string `mapstructure:"group"`
	// Number of socket-activated Gunicorn units (wsgi@1..N), 1 to 16. Default 3.
	Sockets *int `mapstructure:"sockets"`
	// Gunicorn workers per unit, 1 to 64. Default 1.
	Workers *int `mapstructure:"workers"`
	// Gunicorn worker class: sync, gthread, gevent, eventlet or tornado. Default "gthread".
	WorkerClass string `mapstructure:"worker_class"`
	// Threads per worker (gthread only), 1 to 256. Default 16 with gthread, else 1.
	Threads *int `mapstructure:"threads"`
	// Gunicorn worker timeout in seconds (Gunicorn's --timeout). Default 30. Not called
	// `timeout`: Packer itself reads that argument of every provisioner block as a duration.
	WorkerTimeout *int `mapstructure:"worker_timeout"`
	// Seconds a worker has to finish its requests on a graceful stop. Default 25.
	GracefulTimeout *int `mapstructure:"graceful_timeout"`
	// Seconds Gunicorn keeps an idle NGINX connection open. Default 75.
	KeepAlive *int `mapstructure:"keepalive"`
	// Requests after which a worker is recycled; 0 never recycles. Default 0.
	MaxRequests *int `mapstructure:"max_requests"`
	// Listen backlog of each socket, 16 to 65535. Default 2048.
	Backlog *int `mapstructure:"backlog"`

	// Package-manager family of the machine: "apt" (Debian, Ubuntu), "dnf" (Amazon Linux 2023)
	// or "auto", which reads ID and ID_LIKE from /etc/os-release. Default "auto".
	DistroFamily string `mapstructure:"distro_family"`
	// Interpreter that creates the venv: python3, python3.X or an absolute path. Default "python3".
	Python string `mapstructure:"python"`
	// Where Gunicorn comes from: "pip" (a pinned version into the venv) or "distro" (the
	// distribution's package, seen through system site packages). Default "pip".
	GunicornSource string `mapstructure:"gunicorn_source"`
	// Exact Gunicorn version with gunicorn_source = "pip". Default "23.0.0".
	GunicornVersion string `mapstructure:"gunicorn_version"`
	// Python package index (PEP 503) pip installs from. Default: pip's own default (PyPI).
	PipIndexURL string `mapstructure:"pip_index_url"`
	// Extra URL or absolute path on the machine with wheels (pip --find-links).
	PipFindLinks string `mapstructure:"pip_find_links"`
	// Let the venv see the distribution's Python packages. Default false; always true with
	// gunicorn_source = "distro".
	SystemSitePackages *bool `mapstructure:"system_site_packages"`
	// Further distribution packages baked into the image, for example ["libpq5"].
	ExtraPackages []string `mapstructure:"extra_packages"`

	// Port NGINX listens on. Default 80.
	ListenPort *int `mapstructure:"listen_port"`
	// NGINX server_name. Default "_".
	ServerName string `mapstructure:"server_name"`
	// NGINX client_max_body_size. Default "10m".
	ClientMaxBodySize string `mapstructure:"client_max_body_size"`
	// NGINX proxy_read_timeout in seconds. Default 60.
	ProxyReadTimeout *int `mapstructure:"proxy_read_timeout"`
	// URL path of the health check, passed to the app. Default "/healthz".
	HealthPath string `mapstructure:"health_path"`
	// URL prefix NGINX serves from the release's static/ folder. Default "/static/".
	StaticURL string `mapstructure:"static_url"`
	// Address ranges of the load balancer: only a peer in one of them may set X-Forwarded-For and
	// X-Forwarded-Proto; a direct client's are replaced by its own address and scheme. Default
	// the private ranges ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], which hold any VPC's
	// range; set the load balancer's subnets to trust nothing else in the VPC.
	TrustedProxyCIDRs []string `mapstructure:"trusted_proxy_cidrs"`

	// The baked virtualenv. Default "/opt/wsgi/venv".
	VenvDir string `mapstructure:"venv_dir"`
	// Releases and the current symlink. Default "/srv/wsgi".
	SrvDir string `mapstructure:"srv_dir"`
	// wsgi.env and gunicorn.conf.py. Default "/etc/wsgi".
	EtcDir string `mapstructure:"etc_dir"`
	// The UNIX sockets, below /run. Default "/run/wsgi".
	RunDir string `mapstructure:"run_dir"`
	// The maintenance page. Default "/usr/share/wsgi".
	ShareDir string `mapstructure:"share_dir"`

	// Clean the machine for imaging as the very last command: cloud-init state and logs, machine
	// id, SSH host keys, package caches, shell history. Default true.
	ImageHygiene *bool `mapstructure:"image_hygiene"`
	// Wait for cloud-init to finish (`cloud-init status --wait`) before installing anything, so
	// the install does not race cloud-init's own package runs. Default true.
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

	if c.DistroFamily == "" {
		c.DistroFamily = FamilyAuto
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

	var errs *packersdk.MultiError
	add := func(err error) { errs = packersdk.MultiErrorAppend(errs, err) }

	family := image.Family(c.DistroFamily)
	switch c.DistroFamily {
	case FamilyAuto:
		// Provision detects it; validate the rest against the apt layout meanwhile, since no
		// other check depends on the family.
		family = image.FamilyApt
	case string(image.FamilyApt), string(image.FamilyDnf):
	default:
		add(fmt.Errorf("distro_family: must be %q, %q (Debian, Ubuntu) or %q (Amazon Linux 2023), got %q",
			FamilyAuto, image.FamilyApt, image.FamilyDnf, c.DistroFamily))
		family = image.FamilyApt
	}
	if err := c.Stack(family).Validate(); err != nil {
		// One error per problem, so Packer lists them one per line like its own.
		var verr *image.ValidationError
		if errors.As(err, &verr) {
			for _, p := range verr.Problems {
				add(errors.New(p))
			}
		} else {
			add(err)
		}
	}

	if !stagingDirRe.MatchString(c.StagingDir) || path.Clean(c.StagingDir) != c.StagingDir {
		add(fmt.Errorf("staging_dir: must be a clean absolute path without spaces or quotes, such as /tmp, got %q", c.StagingDir))
	}
	if err := c.checkExecuteCommand(); err != nil {
		add(err)
	}

	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	return nil
}

// checkExecuteCommand makes sure the template renders, with Packer's template functions, and
// runs the command it is given.
func (c *Config) checkExecuteCommand() error {
	if !strings.Contains(c.ExecuteCommand, ".Command") {
		return fmt.Errorf("execute_command: must contain {{.Command}}, got %q", c.ExecuteCommand)
	}
	if _, err := c.rootCommand("true", true); err != nil {
		return fmt.Errorf("execute_command: %w", errors.Unwrap(err))
	}
	return nil
}

// Stack is the on-instance layout the configuration asks for, on a machine of the given family.
// Unset keys take image.Default; keys given explicitly win even when they are zero, so that
// Validate can report them.
func (c *Config) Stack(family image.Family) image.Stack {
	s := image.Stack{
		AppName:           c.AppName,
		User:              c.User,
		Group:             c.Group,
		WorkerClass:       c.WorkerClass,
		Family:            family,
		Python:            c.Python,
		GunicornSource:    image.GunicornSource(c.GunicornSource),
		GunicornVersion:   c.GunicornVersion,
		PipIndexURL:       c.PipIndexURL,
		PipFindLinks:      c.PipFindLinks,
		ExtraPackages:     c.ExtraPackages,
		ServerName:        c.ServerName,
		ClientMaxBodySize: c.ClientMaxBodySize,
		HealthPath:        c.HealthPath,
		StaticURL:         c.StaticURL,
		TrustedProxyCIDRs: c.TrustedProxyCIDRs,
		VenvDir:           c.VenvDir,
		SrvDir:            c.SrvDir,
		EtcDir:            c.EtcDir,
		RunDir:            c.RunDir,
		ShareDir:          c.ShareDir,
	}
	// Threads defaults by worker class, so it must be known before WithDefaults runs.
	if c.Threads != nil {
		s.Threads = *c.Threads
	}
	s = s.WithDefaults()
	for _, f := range []struct {
		dst *int
		src *int
	}{
		{&s.Sockets, c.Sockets},
		{&s.WorkersPerUnit, c.Workers},
		{&s.Threads, c.Threads},
		{&s.TimeoutSeconds, c.WorkerTimeout},
		{&s.GracefulTimeoutSeconds, c.GracefulTimeout},
		{&s.KeepAliveSeconds, c.KeepAlive},
		{&s.MaxRequests, c.MaxRequests},
		{&s.Backlog, c.Backlog},
		{&s.ListenPort, c.ListenPort},
		{&s.ProxyReadTimeout, c.ProxyReadTimeout},
	} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if c.SystemSitePackages != nil {
		s.SystemSitePackages = *c.SystemSitePackages
	}
	return s
}

func boolPtr(b bool) *bool { return &b }
