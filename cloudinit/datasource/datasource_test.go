package datasource

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclparse"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/zclconf/go-cty/cty"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
)

// decodeHCL turns an HCL body into the value Packer hands to Configure, through the data
// source's own spec, so the test covers the generated hcl2spec too.
func decodeHCL(t *testing.T, d *Datasource, src string) cty.Value {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCL([]byte(src), "test.pkr.hcl")
	if diags.HasErrors() {
		t.Fatalf("parse: %s", diags)
	}
	v, diags := hcldec.Decode(f.Body, d.ConfigSpec(), nil)
	if diags.HasErrors() {
		t.Fatalf("decode with ConfigSpec: %s", diags)
	}
	return v
}

const djangoHCL = `
wsgi_app    = "mysite.wsgi:application"
framework   = "django"
django_settings_module = "mysite.settings"
source {
  git_url = "https://git.example.com/shop.git"
  git_ref = "v2.3.1"
  retries = 2
}
env     = { DJANGO_ALLOWED_HOSTS = "*" }
secrets = { DJANGO_SECRET_KEY = "ssm:/shop/prod/secret-key" }
hooks_after_switch = ["python manage.py check"]
extra_part {
  content_type = "text/x-shellscript"
  filename     = "motd.sh"
  content      = "#!/bin/sh\necho hello > /etc/motd\n"
}
`

func TestConfigureExecuteHCL(t *testing.T) {
	d := &Datasource{}
	if err := d.Configure(decodeHCL(t, d, djangoHCL)); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	out, err := d.Execute()
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if err := out.Type().TestConformance(hcldec.ImpliedType(d.OutputSpec())); err != nil {
		t.Errorf("output does not conform to OutputSpec: %v", err)
	}

	// The same inputs given to cloudinit.Build directly must give the same bytes.
	want, err := cloudinit.Build(cloudinit.App{
		Source:               cloudinit.Source{GitURL: "https://git.example.com/shop.git", GitRef: "v2.3.1", Retries: 2},
		WSGIApp:              "mysite.wsgi:application",
		Framework:            "django",
		DjangoSettingsModule: "mysite.settings",
		Env:                  map[string]string{"DJANGO_ALLOWED_HOSTS": "*"},
		Secrets:              map[string]string{"DJANGO_SECRET_KEY": "ssm:/shop/prod/secret-key"},
		HooksAfterSwitch:     []string{"python manage.py check"},
		ExtraParts:           []cloudinit.Part{{ContentType: "text/x-shellscript", Filename: "motd.sh", Content: "#!/bin/sh\necho hello > /etc/motd\n"}},
	}.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	userData := out.GetAttr("user_data").AsString()
	if userData != string(want.UserData) {
		t.Errorf("user_data differs from cloudinit.Build with the same inputs:\n%s", userData)
	}
	for _, s := range []string{"WSGI_RETRIES=2", "WSGI_HOOKS_AFTER_SWITCH=('python manage.py check')", "filename=\"motd.sh\""} {
		if !strings.Contains(userData, s) {
			t.Errorf("user_data lacks %q", s)
		}
	}
	raw, err := base64.StdEncoding.DecodeString(out.GetAttr("user_data_gzip_base64").AsString())
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	inflated, _ := io.ReadAll(zr)
	if string(inflated) != userData {
		t.Error("user_data_gzip_base64 does not decode to user_data")
	}
	size, _ := out.GetAttr("size_bytes").AsBigFloat().Int64()
	if int(size) != len(userData) {
		t.Errorf("size_bytes = %d, want %d", size, len(userData))
	}
	gz, _ := out.GetAttr("gzip_size_bytes").AsBigFloat().Int64()
	if int(gz) != len(raw) {
		t.Errorf("gzip_size_bytes = %d, want %d", gz, len(raw))
	}
	var files []string
	for _, v := range out.GetAttr("files").AsValueSlice() {
		files = append(files, v.AsString())
	}
	if strings.Join(files, " ") != "/etc/wsgi-app.conf" {
		t.Errorf("files = %v", files)
	}
	var needs []string
	for _, v := range out.GetAttr("needs").AsValueSlice() {
		needs = append(needs, v.AsString())
	}
	if strings.Join(needs, " ") != "aws-requests git schema-1" {
		t.Errorf("needs = %v, want the git source's and the secrets'", needs)
	}
}

func TestConfigureRejects(t *testing.T) {
	cases := []struct {
		name string
		raw  map[string]interface{}
		want []string
	}{
		{"no source", map[string]interface{}{"wsgi_app": "app:app"},
			[]string{"source: set exactly one of git_url, tarball_url or s3_uri, got none"}},
		{"moved stack keys", map[string]interface{}{"wsgi_app": "app:app", "sockets": 2, "run_dir": "/run/shop",
			"source": map[string]interface{}{"tarball_url": "https://example.com/a.tgz"}},
			[]string{"wsgi-cloudinit: run_dir: is a stack key and moved to the wsgi-stack provisioner", "wsgi-cloudinit: sockets: is a stack key and moved",
				"source.sha256: required with tarball_url"}},
		{"several problems", map[string]interface{}{"wsgi_app": "nope", "framework": "rails",
			"source": map[string]interface{}{"tarball_url": "https://example.com/a.tgz"}},
			[]string{"source.sha256: required with tarball_url", "wsgi_app: must be module:callable", "framework: must be one of"}},
		{"secret in env", map[string]interface{}{"wsgi_app": "app:app",
			"source": map[string]interface{}{"git_url": "https://g.example.com/r.git", "git_ref": "main"},
			"env":    map[string]interface{}{"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}},
			[]string{"env.AWS_SECRET_ACCESS_KEY: looks like a secret"}},
		{"unknown key", map[string]interface{}{"wsgi_app": "app:app", "socket": 2},
			[]string{"socket"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &Datasource{}
			err := d.Configure(c.raw)
			if err == nil {
				t.Fatal("Configure accepted the input")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			var me *packersdk.MultiError
			if errors.As(err, &me) && len(c.want) > 1 && len(me.Errors) < len(c.want) {
				t.Errorf("got %d errors, want one per problem (%d):\n%v", len(me.Errors), len(c.want), err)
			}
			if _, err := d.Execute(); err == nil {
				t.Error("Execute after a failed Configure returned no error")
			}
		})
	}
}

// TestMovedKeysInHCL: an old template with stack keys in the data source gets the message that
// says where they went, through the real HCL spec.
func TestMovedKeysInHCL(t *testing.T) {
	d := &Datasource{}
	err := d.Configure(decodeHCL(t, d, "app_name = \"shop\"\n"+djangoHCL))
	if err == nil || !strings.Contains(err.Error(), "app_name: is a stack key and moved to the wsgi-stack provisioner") {
		t.Fatalf("Configure: %v", err)
	}
}
