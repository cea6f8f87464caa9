package cloudinit

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const testSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// FlaskApp and DjangoApp are the default configurations whose sizes the docs quote.
func flaskApp() App {
	return App{
		Source:    Source{TarballURL: "https://releases.example.com/hello-1.0.tar.gz", SHA256: testSHA},
		WSGIApp:   "app:app",
		Framework: FrameworkFlask,
	}
}

func djangoApp() App {
	return App{
		Source:               Source{GitURL: "https://git.example.com/shop.git", GitRef: "v2.3.1"},
		WSGIApp:              "mysite.wsgi:application",
		Framework:            FrameworkDjango,
		DjangoSettingsModule: "mysite.settings",
		Env:                  map[string]string{"DJANGO_ALLOWED_HOSTS": "*", "DATABASE_PATH": "/var/lib/wsgi-app/db.sqlite3"},
		Secrets:              map[string]string{"DJANGO_SECRET_KEY": "ssm:/shop/prod/secret-key"},
	}
}

// goldenCases are kept under testdata/<name>/user-data.
func goldenCases() map[string]App {
	s3 := App{
		Source:            Source{S3URI: "s3://shop-releases/app/2024-05-01.tar.zst", SHA256: testSHA, Retries: 3, TimeoutSeconds: 120},
		WSGIApp:           "shop.app:create_app()",
		RequirementsFile:  "requirements/prod.txt",
		PipNoIndex:        true,
		PipFindLinks:      []string{"/opt/wheelhouse"},
		Secrets:           map[string]string{"DATABASE_URL": "secretsmanager:prod/shop/db", "API_SIGNING_KEY": "ssm:/shop/signing"},
		Env:               map[string]string{"LOG_LEVEL": "info", "QUOTE": `it's "quoted" $HOME`},
		HooksBeforeSwitch: []string{"python -m shop.migrate"},
		AWSRegion:         "eu-central-1",
		AWSEndpoints:      map[string]string{"s3": "https://bucket.vpce-0a1b.s3.eu-central-1.vpce.amazonaws.com", "ssm": "https://vpce-0c2d.ssm.eu-central-1.vpce.amazonaws.com"},
		HealthPath:        "/-/ready",
	}
	multi := flaskApp()
	multi.PipIndexURL = "http://127.0.0.1:8000/simple/?mirror=eu&arch=x86_64"
	multi.PipExtraIndexURLs = []string{"https://pypi.example.com/simple/"}
	multi.PipConstraintsFile = "constraints.txt"
	multi.ExtraParts = []Part{
		{ContentType: "text/cloud-config", Filename: "extra.cfg", Content: "#cloud-config\ntimezone: Europe/Berlin\npackages: [htop]\n"},
		{ContentType: "text/x-shellscript", Content: "#!/bin/sh\necho extra part ran >/var/log/extra-part.log\n"},
	}
	return map[string]App{
		"flask-default":  flaskApp(),
		"django-default": djangoApp(),
		"s3-secrets":     s3,
		"multipart":      multi,
	}
}

func mustBuild(t *testing.T, app App) *Payload {
	t.Helper()
	app = app.WithDefaults()
	if err := app.Validate().Err(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	p, err := Build(app)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return p
}

func TestBuildGolden(t *testing.T) {
	for name, c := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			p := mustBuild(t, c)
			golden := filepath.Join("testdata", name, "user-data")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, p.UserData, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./cloudinit -update writes it)", err)
			}
			if !bytes.Equal(p.UserData, want) {
				t.Errorf("user data differs from %s (go test ./cloudinit -update rewrites it):\n%s", golden, p.UserData)
			}
			t.Logf("%s: %d bytes raw, %d gzip, %d base64", name, p.SizeBytes(), len(p.Gzip), len(p.GzipBase64))
		})
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	for name, c := range goldenCases() {
		first := mustBuild(t, c)
		for i := 0; i < 20; i++ { // maps iterate in a new order each time
			again := mustBuild(t, c)
			if !bytes.Equal(first.UserData, again.UserData) || first.GzipBase64 != again.GzipBase64 {
				t.Fatalf("%s: build %d differs from the first", name, i)
			}
		}
	}
}

func TestBuildStructure(t *testing.T) {
	for name, c := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			p := mustBuild(t, c)
			if len(c.ExtraParts) == 0 && !bytes.HasPrefix(p.UserData, []byte("#cloud-config\n")) {
				t.Error("user data does not start with #cloud-config")
			}
			for i, doc := range p.CloudConfigs {
				if !bytes.HasPrefix(doc, []byte("#cloud-config\n")) {
					t.Errorf("cloud-config %d does not start with #cloud-config", i)
				}
			}
			var cfg cloudConfig
			if err := yaml.Unmarshal(p.CloudConfigs[0], &cfg); err != nil {
				t.Fatal(err)
			}
			if want := [][]string{{contract.DeployProgram}}; fmt.Sprint(cfg.Runcmd) != fmt.Sprint(want) {
				t.Errorf("runcmd = %v, want only the baked deploy %v (its exit status is runcmd's)", cfg.Runcmd, want)
			}
			if want := []string{contract.AppFile}; fmt.Sprint(p.Files) != fmt.Sprint(want) {
				t.Errorf("Files = %v, want %v", p.Files, want)
			}
			f := cfg.WriteFiles[0]
			if f.Permissions != "0600" || f.Owner != "root:root" {
				t.Errorf("app file: owner %s mode %s, want root:root 0600", f.Owner, f.Permissions)
			}
			for k, ref := range c.Secrets {
				if !strings.Contains(string(f.Content), k+"="+ref) {
					t.Errorf("app file lacks the reference of secret %s", k)
				}
			}
			if strings.Contains(string(f.Content), "#!/bin/") {
				t.Error("the payload carries a script: the deploy belongs to the image")
			}
			if got, want := strings.Join(p.Needs, " "), strings.Join(c.WithDefaults().Needs(), " "); got != want {
				t.Errorf("Needs = %q, want %q", got, want)
			}
			zr, err := gzip.NewReader(bytes.NewReader(mustDecode(t, p.GzipBase64)))
			if err != nil {
				t.Fatal(err)
			}
			back, _ := io.ReadAll(zr)
			if !bytes.Equal(back, p.UserData) {
				t.Error("user_data_gzip_base64 does not decode to user_data")
			}
			if p.SizeBytes() > WarnUserDataBytes {
				t.Errorf("a golden case is %d bytes, near EC2's limit", p.SizeBytes())
			}
		})
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildMultipart(t *testing.T) {
	c := goldenCases()["multipart"]
	p := mustBuild(t, c)
	if n, err := countParts(p.UserData); err != nil || n != 3 {
		t.Fatalf("parts = %d, %v; want 3", n, err)
	}
	doc := string(p.UserData)
	for _, want := range []string{
		"Content-Type: multipart/mixed; boundary=",
		"Content-Type: text/cloud-config; charset=\"utf-8\"",
		"Content-Disposition: attachment; filename=\"wsgi-deploy.cfg\"",
		"Content-Disposition: attachment; filename=\"extra.cfg\"",
		"Content-Disposition: attachment; filename=\"part-2\"",
		"Content-Type: text/x-shellscript; charset=\"utf-8\"",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("multipart lacks %q", want)
		}
	}
	if len(p.CloudConfigs) != 2 {
		t.Errorf("CloudConfigs = %d documents, want the deploy's and the extra part", len(p.CloudConfigs))
	}
}

func TestBuildSizeLimit(t *testing.T) {
	base := mustBuild(t, flaskApp())
	near := flaskApp()
	near.Env = map[string]string{"PADDING": strings.Repeat("x", WarnUserDataBytes-base.SizeBytes()+100)}
	p, err := Build(near.WithDefaults())
	if err != nil {
		t.Fatalf("a payload below the limit failed: %v", err)
	}
	if p.SizeBytes() <= WarnUserDataBytes || p.SizeBytes() > MaxUserDataBytes {
		t.Fatalf("test padding gave %d bytes; adjust it to land between %d and %d", p.SizeBytes(), WarnUserDataBytes, MaxUserDataBytes)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "16384") {
		t.Errorf("warnings = %q, want one about EC2's limit", p.Warnings)
	}

	over := flaskApp()
	over.Env = map[string]string{"PADDING": strings.Repeat("x", MaxUserDataBytes)}
	_, err = Build(over.WithDefaults())
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize payload: got %v, want ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "above EC2's limit of 16384") {
		t.Errorf("oversize error does not say the limit: %v", err)
	}
}

// requireTool skips when a validator is absent, unless WSGI_REQUIRE_VALIDATORS=1 (CI), where
// a missing validator fails: CI must never pass with the validators skipped.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("WSGI_REQUIRE_VALIDATORS") == "1" {
			t.Fatalf("%s not found and WSGI_REQUIRE_VALIDATORS=1: install it (see .ci/run)", name)
		}
		t.Skipf("%s not found: skipping this validator (CI installs it)", name)
	}
	return p
}

// schemaCheck runs the real `cloud-init schema` on one document.
func schemaCheck(t *testing.T, ci string, doc []byte) ([]byte, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(f, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	return exec.Command(ci, "schema", "--config-file", f).CombinedOutput()
}

func TestValidatorsCloudInitSchema(t *testing.T) {
	ci := requireTool(t, "cloud-init")
	for name, c := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			p := mustBuild(t, c)
			for i, doc := range p.CloudConfigs {
				out, err := schemaCheck(t, ci, doc)
				if err != nil || !bytes.Contains(out, []byte("Valid cloud-config")) {
					t.Errorf("cloud-init schema, document %d: %v\n%s", i, err, out)
				}
			}
		})
	}
	// The validator must be able to fail, or a green run means nothing.
	out, err := schemaCheck(t, ci, []byte("#cloud-config\nwrite_files: not-a-list\nruncmd: 3\n"))
	if err == nil {
		t.Errorf("cloud-init schema accepted a broken document:\n%s", out)
	}
}

// TestDjangoPayloadSize holds the default Django payload to its budget: the app half only.
func TestDjangoPayloadSize(t *testing.T) {
	p := mustBuild(t, djangoApp())
	if len(p.Gzip) > 1536 {
		t.Errorf("the default Django payload is %d bytes gzip, over the 1.5 KiB budget", len(p.Gzip))
	}
	t.Logf("default Django payload: %d bytes raw, %d gzip", p.SizeBytes(), len(p.Gzip))
}

// parseScript lists the parts cloud-init's own user-data processor finds in a file (it inflates
// gzip first, as on an instance), one "content-type filename" line each.
const parseScript = `
import sys
from cloudinit import helpers, user_data
msg = user_data.UserDataProcessor(helpers.Paths({})).process(open(sys.argv[1], "rb").read())
for part in msg.walk():
    if part.get_content_maintype() != "multipart":
        print(part.get_content_type(), part.get_filename())
`

// cloudInitPython is the interpreter cloud-init itself runs with (its shebang).
func cloudInitPython(t *testing.T) string {
	t.Helper()
	ci := requireTool(t, "cloud-init")
	b, err := os.ReadFile(ci)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	py, ok := strings.CutPrefix(first, "#!")
	if !ok {
		t.Skipf("%s has no shebang", ci)
	}
	return strings.Fields(py)[0]
}

func TestValidatorsCloudInitReadsUserData(t *testing.T) {
	py := cloudInitPython(t)
	for name, c := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			p := mustBuild(t, c)
			first := "part-001" // cloud-init's own name for a document that is not multipart
			if len(c.ExtraParts) > 0 {
				first = "wsgi-deploy.cfg"
			}
			want := []string{"text/cloud-config " + first}
			for i, part := range c.ExtraParts {
				name := part.Filename
				if name == "" {
					name = fmt.Sprintf("part-%d", i+1)
				}
				want = append(want, part.ContentType+" "+name)
			}
			dir := t.TempDir()
			for form, data := range map[string][]byte{"raw": p.UserData, "gzip": p.Gzip} {
				f := filepath.Join(dir, form)
				if err := os.WriteFile(f, data, 0o644); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command(py, "-c", parseScript, f).CombinedOutput()
				if err != nil {
					t.Fatalf("%s: cloud-init's user-data processor: %v\n%s", form, err, out)
				}
				if got := strings.Split(strings.TrimSpace(string(out)), "\n"); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s: cloud-init sees parts %q, want %q", form, got, want)
				}
			}
		})
	}
}
