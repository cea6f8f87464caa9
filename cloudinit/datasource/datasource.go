//go:generate packer-sdc mapstructure-to-hcl2 -type Config,Output

// Package datasource is the `data "wsgi-cloudinit"` Packer data source: the first-boot payload
// of package cloudinit, configured in HCL, with the raw and the gzip+base64 user data as outputs.
package datasource

import (
	"errors"
	"fmt"
	"log"
	"slices"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/zclconf/go-cty/cty"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/report"
)

// Config is the HCL body of `data "wsgi-cloudinit"`: the app only. The image owns the stack, so
// the stack keys (app_name, sockets, run_dir, ...) are wsgi-stack's; the ones this data source
// used to take are still decoded, only to say where they went.
type Config struct {
	cloudinit.App `mapstructure:",squash"`

	// Moved to wsgi-stack: the image owns the stack. Setting any of them is an error.
	Moved movedKeys `mapstructure:",squash"`
}

// movedKeys are the stack keys this data source took before the image owned the stack.
type movedKeys struct {
	AppName            *string `mapstructure:"app_name" undocumented:"true"`
	User               *string `mapstructure:"user" undocumented:"true"`
	Group              *string `mapstructure:"group" undocumented:"true"`
	Sockets            *int    `mapstructure:"sockets" undocumented:"true"`
	GunicornSource     *string `mapstructure:"gunicorn_source" undocumented:"true"`
	SystemSitePackages *bool   `mapstructure:"system_site_packages" undocumented:"true"`
	ListenPort         *int    `mapstructure:"listen_port" undocumented:"true"`
	VenvDir            *string `mapstructure:"venv_dir" undocumented:"true"`
	SrvDir             *string `mapstructure:"srv_dir" undocumented:"true"`
	EtcDir             *string `mapstructure:"etc_dir" undocumented:"true"`
	RunDir             *string `mapstructure:"run_dir" undocumented:"true"`
}

// set lists the moved keys that are set, in declaration order.
func (m movedKeys) set() []string {
	var out []string
	for key, isSet := range map[string]bool{
		"app_name": m.AppName != nil, "user": m.User != nil, "group": m.Group != nil, "sockets": m.Sockets != nil,
		"gunicorn_source": m.GunicornSource != nil, "system_site_packages": m.SystemSitePackages != nil,
		"listen_port": m.ListenPort != nil, "venv_dir": m.VenvDir != nil, "srv_dir": m.SrvDir != nil,
		"etc_dir": m.EtcDir != nil, "run_dir": m.RunDir != nil,
	} {
		if isSet {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
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
	// What the payload needs from the image it boots on, such as ["git", "schema-1"]: hand it to
	// wsgi-stack (`first_boot = data.wsgi-cloudinit.NAME.needs`) so the bake installs it, and the
	// post-processor checks it against the AMI's wsgi:stack-provides tag.
	Needs []string `mapstructure:"needs"`
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
	app := d.config.App.WithDefaults()
	r := app.Validate()
	for _, key := range d.config.Moved.set() {
		r.Add(key, "is a stack key and moved to the wsgi-stack provisioner: the image owns the stack, and the payload "+
			"describes only the app; set it in wsgi-stack (once) and remove it here")
	}
	if err := r.Err(); err != nil {
		return report.Packer("wsgi-cloudinit", err)
	}
	payload, err := cloudinit.Build(app)
	if err != nil {
		return fmt.Errorf("wsgi-cloudinit: %w", err)
	}
	d.payload = payload
	for _, w := range d.payload.Warnings {
		log.Printf("[WARN] wsgi-cloudinit: %s", w)
	}
	return nil
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
		Needs:              d.payload.Needs,
	}
	return hcl2helper.HCL2ValueFromConfig(out, d.OutputSpec()), nil
}

var _ packersdk.Datasource = (*Datasource)(nil)
