package cloudinit

import (
	"errors"
	"strings"
	"testing"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/report"
)

// TestBuildRejects asserts every rejection names its HCL key and says what is right.
func TestBuildRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(a *App)
		want []string // each must appear in the error
	}{
		{"no source", func(a *App) { a.Source = Source{} },
			[]string{"source: set exactly one of git_url, tarball_url or s3_uri, got none"}},
		{"two sources", func(a *App) { a.Source.GitURL, a.Source.GitRef = "https://g.example.com/x.git", "main" },
			[]string{"source: set exactly one of git_url, tarball_url or s3_uri, got git_url and tarball_url"}},
		{"bad tarball url", func(a *App) { a.Source.TarballURL = "ftp://example.com/a.tgz" },
			[]string{`source.tarball_url: must be an http(s) URL, got "ftp://example.com/a.tgz"`}},
		{"tarball url not a url", func(a *App) { a.Source.TarballURL = "releases/app.tgz" },
			[]string{`source.tarball_url: must be an http(s) URL`}},
		{"missing sha256", func(a *App) { a.Source.SHA256 = "" },
			[]string{"source.sha256: required with tarball_url"}},
		{"bad sha256", func(a *App) { a.Source.SHA256 = "abc123" },
			[]string{`source.sha256: must be 64 lower-case hex digits, got "abc123"`}},
		{"bad git url", func(a *App) { a.Source = Source{GitURL: "file:///srv/repo", GitRef: "main"} },
			[]string{`source.git_url: must be an https://, http://, ssh:// or git:// URL or user@host:path, got "file:///srv/repo"`}},
		{"git url with token", func(a *App) {
			a.Source = Source{GitURL: "https://x-access-token:ghs_abc@github.com/o/r.git", GitRef: "main"}
		}, []string{"source.git_url: must not carry a password"}},
		{"git without ref", func(a *App) { a.Source = Source{GitURL: "https://g.example.com/x.git"} },
			[]string{"source.git_ref: required with git_url"}},
		{"bad git ref", func(a *App) { a.Source = Source{GitURL: "git@github.com:o/r.git", GitRef: "-x ..y"} },
			[]string{`source.git_ref: must be a commit, tag or branch name, got "-x ..y"`}},
		{"sha256 with git", func(a *App) {
			a.Source = Source{GitURL: "https://g.example.com/x.git", GitRef: "main", SHA256: testSHA}
		}, []string{"source.sha256: not used with git_url"}},
		{"bad s3 uri", func(a *App) { a.Source = Source{S3URI: "s3://Bad_Bucket"} },
			[]string{`source.s3_uri: must be s3://bucket/key, got "s3://Bad_Bucket"`}},
		{"retries out of range", func(a *App) { a.Source.Retries = 99 },
			[]string{"source.retries: must be between 1 and 20, got 99"}},
		{"timeout out of range", func(a *App) { a.Source.TimeoutSeconds = -1 },
			[]string{"source.timeout_seconds: must be between 1 and 3600, got -1"}},
		{"bad wsgi app", func(a *App) { a.WSGIApp = "app.py" },
			[]string{`wsgi_app: must be module:callable such as app:app or mysite.wsgi:application, got "app.py"`}},
		{"unknown framework", func(a *App) { a.Framework = "rails" },
			[]string{`framework: must be one of generic, flask, django, got "rails"`}},
		{"django settings without django", func(a *App) { a.DjangoSettingsModule = "x.settings" },
			[]string{`django_settings_module: only used with framework = "django", got framework "flask"`}},
		{"bad django settings", func(a *App) { a.Framework, a.DjangoSettingsModule = FrameworkDjango, "my-site/settings" },
			[]string{`django_settings_module: must be a dotted Python module such as mysite.settings, got "my-site/settings"`}},
		{"migrate lock without django", func(a *App) { a.DjangoMigrateLock, a.DjangoMigrateCommand = "off", "true" },
			[]string{`django_migrate_lock: only used with framework = "django", got framework "flask"`,
				`django_migrate_command: only used with framework = "django", got framework "flask"`}},
		{"migrate lock timeout without django", func(a *App) { a.DjangoMigrateLockTimeoutSeconds = 5 },
			[]string{`django_migrate_lock_timeout_seconds: only used with framework = "django", got framework "flask"`}},
		{"unknown migrate lock", func(a *App) { a.Framework, a.DjangoMigrateLock = FrameworkDjango, "advisory" },
			[]string{`django_migrate_lock: must be one of database, off, got "advisory"`}},
		{"migrate lock timeout out of range", func(a *App) { a.Framework, a.DjangoMigrateLockTimeoutSeconds = FrameworkDjango, 7200 },
			[]string{"django_migrate_lock_timeout_seconds: must be between 1 and 3600, got 7200"}},
		{"blank migrate command", func(a *App) { a.Framework, a.DjangoMigrateCommand = FrameworkDjango, " \t" },
			[]string{"django_migrate_command: must not be empty"}},
		{"bad lifecycle hook", func(a *App) { a.LifecycleHook = "launch hook;x" },
			[]string{`lifecycle_hook: must be the name of an Auto Scaling lifecycle hook: 1-255 letters, digits, '-', '_' or '/', got "launch hook;x"`}},
		{"long lifecycle hook", func(a *App) { a.LifecycleHook = strings.Repeat("h", 256) },
			[]string{"lifecycle_hook: must be the name of an Auto Scaling lifecycle hook"}},
		{"requirements outside release", func(a *App) { a.RequirementsFile = "../etc/passwd" },
			[]string{`requirements_file: must be a clean path relative to the release root such as requirements.txt, got "../etc/passwd"`}},
		{"absolute constraints", func(a *App) { a.PipConstraintsFile = "/tmp/c.txt" },
			[]string{`pip_constraints_file: must be a clean path relative to the release root`}},
		{"bad index url", func(a *App) { a.PipIndexURL = "pypi.org/simple" },
			[]string{`pip_index_url: must be an http(s) URL, got "pypi.org/simple"`}},
		{"index url with password", func(a *App) { a.PipExtraIndexURLs = []string{"https://u:p4ss@pypi.example.com/simple"} },
			[]string{"pip_extra_index_urls[0]: must not carry a password"}},
		{"bad find links", func(a *App) { a.PipFindLinks = []string{"/opt/../wheels"} },
			[]string{`pip_find_links[0]: must be a clean absolute path or an http(s) URL, got "/opt/../wheels"`}},
		{"no index without find links", func(a *App) { a.PipNoIndex = true },
			[]string{"pip_no_index: needs pip_find_links"}},
		{"bad env name", func(a *App) { a.Env = map[string]string{"1BAD-NAME": "x"} },
			[]string{"env.1BAD-NAME: must be a variable name"}},
		{"reserved env", func(a *App) { a.Env = map[string]string{"WSGI_APP": "x:y"} },
			[]string{"env.WSGI_APP: is set by the deploy or systemd"}},
		{"aws key in env", func(a *App) { a.Env = map[string]string{"S3_ID": "AKIAIOSFODNN7EXAMPLE"} },
			[]string{"env.S3_ID: looks like a secret (an AWS access key id)", `put it in secrets as "ssm:/name"`}},
		{"private key in env", func(a *App) {
			a.Env = map[string]string{"TLS": "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"}
		}, []string{"env.TLS: looks like a secret (a private key)"}},
		{"password assignment in env", func(a *App) { a.Env = map[string]string{"DB_OPTS": "host=db password=hunter2"} },
			[]string{"env.DB_OPTS: looks like a secret (a password=... style assignment)"}},
		{"url with password in env", func(a *App) { a.Env = map[string]string{"DATABASE_URL": "postgres://app:hunter2@db/app"} },
			[]string{"env.DATABASE_URL: looks like a secret (a URL with a password)"}},
		{"secret by name in env", func(a *App) { a.Env = map[string]string{"DJANGO_SECRET_KEY": "s3cr3t-value"} },
			[]string{"env.DJANGO_SECRET_KEY: looks like a secret (its name says it holds a secret)"}},
		{"github token in env", func(a *App) { a.Env = map[string]string{"GH": "ghp_" + strings.Repeat("a", 36)} },
			[]string{"env.GH: looks like a secret (an API token)"}},
		{"env and secret twice", func(a *App) {
			a.Env = map[string]string{"API_URL": "https://api.example.com"}
			a.Secrets = map[string]string{"API_URL": "ssm:/x"}
		}, []string{"env.API_URL: is also set in secrets"}},
		{"secret value instead of reference", func(a *App) { a.Secrets = map[string]string{"DB_PASSWORD": "hunter2"} },
			[]string{`secrets.DB_PASSWORD: must be a reference "ssm:/parameter/name" or "secretsmanager:name-or-arn", not a value`}},
		{"bad ssm name", func(a *App) { a.Secrets = map[string]string{"K": "ssm:/a b"} },
			[]string{`secrets.K: ssm name "/a b" has characters the store does not allow`}},
		{"empty hook", func(a *App) { a.HooksBeforeSwitch = []string{"  "} },
			[]string{"hooks_before_switch[0]: must not be empty"}},
		{"secret in hook", func(a *App) { a.HooksAfterSwitch = []string{"curl -u admin --password=hunter2 x"} },
			[]string{"hooks_after_switch[0]: contains what looks like a secret"}},
		{"health timeout", func(a *App) { a.HealthTimeoutSeconds = 7200 },
			[]string{"health_timeout_seconds: must be between 1 and 3600, got 7200"}},
		{"bad region", func(a *App) { a.AWSRegion = "Europe" },
			[]string{`aws_region: must be a region name such as eu-west-1, got "Europe"`}},
		{"bad part type", func(a *App) { a.ExtraParts = []Part{{ContentType: "application/json", Content: "{}"}} },
			[]string{`extra_part[0].content_type: must be one of text/cloud-config`}},
		{"empty part", func(a *App) { a.ExtraParts = []Part{{ContentType: "text/x-shellscript"}} },
			[]string{"extra_part[0].content: must not be empty"}},
		{"bad part filename", func(a *App) {
			a.ExtraParts = []Part{{ContentType: "text/x-shellscript", Filename: "a b\"", Content: "#!/bin/sh\n"}}
		}, []string{`extra_part[0].filename: must be 1-64 letters`}},
		{"part without header", func(a *App) { a.ExtraParts = []Part{{ContentType: "text/cloud-config", Content: "packages: [htop]\n"}} },
			[]string{`extra_part[0].content: a text/cloud-config part must start with a "#cloud-config" line`}},
		{"part not yaml", func(a *App) {
			a.ExtraParts = []Part{{ContentType: "text/cloud-config", Content: "#cloud-config\n: [\n"}}
		},
			[]string{"extra_part[0].content: is not valid YAML"}},
		{"part takes runcmd", func(a *App) {
			a.ExtraParts = []Part{{ContentType: "text/cloud-config", Content: "#cloud-config\nruncmd: [[echo, hi]]\n"}}
		}, []string{"extra_part[0].content: sets runcmd, which the deploy owns"}},
		{"part with private key", func(a *App) {
			a.ExtraParts = []Part{{ContentType: "text/x-shellscript", Content: "#!/bin/sh\necho '-----BEGIN OPENSSH PRIVATE KEY-----' > /root/k\n"}}
		}, []string{"extra_part[0].content: contains what looks like a secret (a private key)"}},
		{"several problems", func(a *App) { a.Framework, a.HealthPath = "rails", "health" },
			[]string{`health_path: must be a URL path such as /healthz, got "health"`, `framework: must be one of`}},
		{"unknown endpoint service", func(a *App) { a.AWSEndpoints = map[string]string{"sqs": "https://sqs.example.com"} },
			[]string{"aws_endpoints.sqs: must be one of autoscaling, s3, secretsmanager, ssm"}},
		{"endpoint not a url", func(a *App) { a.AWSEndpoints = map[string]string{"s3": "s3.internal"} },
			[]string{`aws_endpoints.s3: must be an http(s) URL, got "s3.internal"`}},
		{"deploy's variable in env", func(a *App) { a.Env = map[string]string{"WSGI_SOURCE_URL": "x"} },
			[]string{"env.WSGI_SOURCE_URL: is set by the deploy or systemd"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			app := flaskApp()
			c.edit(&app)
			err := app.WithDefaults().Validate().Err()
			if err == nil {
				t.Fatal("Validate accepted the input")
			}
			if !errors.Is(err, report.ErrInvalid) {
				t.Errorf("error is not ErrInvalid: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestValidateAccepts keeps the secret checks from refusing ordinary configuration.
func TestValidateAccepts(t *testing.T) {
	app := djangoApp()
	app.Env = map[string]string{
		"TOKEN_TTL":            "3600",
		"FEATURE_SECRET":       "false",
		"GOOGLE_CREDENTIALS":   "/run/secrets/google.json",
		"DATABASE_URL":         "postgres://app@db.internal/app?sslmode=require",
		"PASSWORD_MIN_LENGTH":  "12",
		"DJANGO_ALLOWED_HOSTS": "example.com,.example.org",
	}
	app.HooksBeforeSwitch = []string{`python manage.py createsuperuser --noinput --username admin --password="$ADMIN_PASSWORD" || true`}
	app.Source = Source{GitURL: "ssh://git@github.com/o/r.git", GitRef: "0123abc"}
	app.ExtraParts = []Part{{ContentType: "text/cloud-config", Content: "#cloud-config\npackages: [htop]\n"}}
	if err := app.WithDefaults().Validate().Err(); err != nil {
		t.Fatalf("ordinary configuration refused: %v", err)
	}
	scp := djangoApp()
	scp.Source = Source{GitURL: "git@github.com:o/r.git", GitRef: "release/2024.05"}
	scp.Framework, scp.DjangoSettingsModule, scp.DjangoManagePy = FrameworkDjango, "", "src/manage.py"
	if err := scp.WithDefaults().Validate().Err(); err != nil {
		t.Fatalf("scp-style git URL refused: %v", err)
	}
	fleet := djangoApp()
	fleet.LifecycleHook, fleet.DjangoMigrateLock, fleet.DjangoMigrateLockTimeoutSeconds = "wsgi-launch/blue_1", MigrateLockOff, 3600
	fleet.DjangoMigrateCommand = "python manage.py migrate --noinput --database primary"
	if err := fleet.WithDefaults().Validate().Err(); err != nil {
		t.Fatalf("lifecycle hook and migrate settings refused: %v", err)
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	app := App{Framework: "rails", Source: Source{TarballURL: "x"}}
	r := app.WithDefaults().Validate()
	keys := map[string]bool{}
	for _, p := range r.Problems {
		keys[p.Path] = true
	}
	for _, k := range []string{"source.tarball_url", "source.sha256", "wsgi_app", "framework"} {
		if !keys[k] {
			t.Errorf("no problem reported at %s; got %v", k, r.Problems)
		}
	}
	if err := r.Err(); !errors.Is(err, report.ErrInvalid) || strings.Count(err.Error(), "\n") != len(r.Problems)-1 {
		t.Errorf("Err() = %v", err)
	}
}
