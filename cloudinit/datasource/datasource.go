//go:generate packer-sdc mapstructure-to-hcl2 -type Config,Output

// Package datasource is the `data "wsgi-cloudinit"` Packer data source: the first-boot payload
// of package cloudinit, configured in HCL, with the raw and the gzip+base64 user data as outputs.
package datasource

import (
	"errors"
	"fmt"
	"log"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/zclconf/go-cty/cty"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

// Config is the HCL body of `data "wsgi-cloudinit"`. The stack keys have the names, meanings
// and defaults of the wsgi-stack provisioner's and must match what the image was baked with;
// only the ones first boot reads are here. The numeric stack keys are pointers so that an
// explicit 0 is reported instead of becoming the default.
type Config struct {
	// Name of the app, as baked. Default "app".
	AppName string `mapstructure:"app_name"`
	// System user that runs Gunicorn and the hooks, as baked. Default "wsgi".
	User string `mapstructure:"user"`
	// Group of that user, as baked. Default: the same as user.
	Group string `mapstructure:"group"`
	// Number of socket-activated Gunicorn units, as baked. Default 3.
	Sockets *int `mapstructure:"sockets"`
	// Where the baked Gunicorn came from, "pip" or "distro"; "distro" implies system_site_packages.
	// Default "pip".
	GunicornSource string `mapstructure:"gunicorn_source"`
	// Let the release's venv see the distribution's Python packages (as the baked venv does).
	// Default false; always true with gunicorn_source = "distro".
	SystemSitePackages *bool `mapstructure:"system_site_packages"`
	// Port NGINX listens on, used by the health check. Default 80.
	ListenPort *int `mapstructure:"listen_port"`
	// URL path of the health check: first boot waits for HTTP 200 there. Default "/healthz".
	HealthPath string `mapstructure:"health_path"`
	// The baked virtualenv. Default "/opt/wsgi/venv".
	VenvDir string `mapstructure:"venv_dir"`
	// Releases and the current symlink. Default "/srv/wsgi".
	SrvDir string `mapstructure:"srv_dir"`
	// wsgi.env and gunicorn.conf.py. Default "/etc/wsgi".
	EtcDir string `mapstructure:"etc_dir"`
	// The UNIX sockets. Default "/run/wsgi".
	RunDir string `mapstructure:"run_dir"`

	cloudinit.App `mapstructure:",squash"`
}

// Output is what the data source gives to the rest of the template.
type Output struct {
	// The raw user data: #cloud-config, or MIME multipart with extra_part blocks.
	UserData string `mapstructure:"user_data"`
	// user_data gzip-compressed and base64-encoded: EC2's UserData field takes it as is.
	UserDataGzipBase64 string `mapstructure:"user_data_gzip_base64"`
	// Size of user_data in bytes, which EC2 limits to 16384.
	SizeBytes int `mapstructure:"size_bytes"`
	// Size of the gzip form in bytes (before base64).
	GzipSizeBytes int `mapstructure:"gzip_size_bytes"`
	// Paths the payload writes on the instance.
	Files []string `mapstructure:"files"`
	// Problems that did not stop the build, such as a size near EC2's limit.
	Warnings []string `mapstructure:"warnings"`
}

// Datasource renders the payload in Configure, so every problem is reported before any build
// starts, and hands it out in Execute.
type Datasource struct {
	config  Config
	payload *cloudinit.Payload
}

// ConfigSpec is the HCL layout of the data source's body.
func (d *Datasource) ConfigSpec() hcldec.ObjectSpec { return d.config.FlatMapstructure().HCL2Spec() }

// OutputSpec is the HCL layout of the outputs.
func (d *Datasource) OutputSpec() hcldec.ObjectSpec {
	return (&Output{}).FlatMapstructure().HCL2Spec()
}

// Configure decodes, validates and renders. Every problem is returned, one per error, each
// starting with its HCL key.
func (d *Datasource) Configure(raws ...interface{}) error {
	if err := config.Decode(&d.config, &config.DecodeOpts{PluginType: "wsgi-cloudinit"}, raws...); err != nil {
		return fmt.Errorf("wsgi-cloudinit: %w", err)
	}
	var errs *packersdk.MultiError
	// A zero stack key is reported, and the rest is still validated with its default, so one
	// run lists every problem.
	stack, stackErr := d.config.Stack()
	if stackErr != nil {
		errs = packersdk.MultiErrorAppend(errs, stackErr)
	}
	payload, err := cloudinit.Build(stack, d.config.App)
	var ve *cloudinit.ValidationError
	switch {
	case errors.As(err, &ve):
		for _, p := range ve.Problems {
			errs = packersdk.MultiErrorAppend(errs, errors.New(p.String()))
		}
	case err != nil:
		errs = packersdk.MultiErrorAppend(errs, err)
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	d.payload = payload
	for _, w := range d.payload.Warnings {
		log.Printf("[WARN] wsgi-cloudinit: %s", w)
	}
	return nil
}

// Stack is the image.Stack the keys describe, with the defaults filled in.
func (c Config) Stack() (image.Stack, error) {
	s := image.Stack{
		AppName:        c.AppName,
		User:           c.User,
		Group:          c.Group,
		GunicornSource: image.GunicornSource(c.GunicornSource),
		HealthPath:     c.HealthPath,
		VenvDir:        c.VenvDir,
		SrvDir:         c.SrvDir,
		EtcDir:         c.EtcDir,
		RunDir:         c.RunDir,
	}
	var errs []error
	setInt := func(key string, p *int, dst *int) {
		if p == nil {
			return
		}
		if *p == 0 {
			errs = append(errs, fmt.Errorf("%s: must not be 0; leave it out for the default", key))
			return
		}
		*dst = *p
	}
	setInt("sockets", c.Sockets, &s.Sockets)
	setInt("listen_port", c.ListenPort, &s.ListenPort)
	if c.SystemSitePackages != nil {
		s.SystemSitePackages = *c.SystemSitePackages
	}
	return s.WithDefaults(), errors.Join(errs...)
}

// Execute returns the payload rendered by Configure.
func (d *Datasource) Execute() (cty.Value, error) {
	if d.payload == nil {
		return cty.NullVal(cty.EmptyObject), errors.New("wsgi-cloudinit: Execute called before a successful Configure")
	}
	out := Output{
		UserData:           string(d.payload.UserData),
		UserDataGzipBase64: d.payload.GzipBase64,
		SizeBytes:          d.payload.SizeBytes(),
		GzipSizeBytes:      len(d.payload.Gzip),
		Files:              d.payload.Files,
		Warnings:           d.payload.Warnings,
	}
	return hcl2helper.HCL2ValueFromConfig(out, d.OutputSpec()), nil
}

var _ packersdk.Datasource = (*Datasource)(nil)
