//go:generate packer-sdc mapstructure-to-hcl2 -type App,Source,Part

// Package cloudinit is the first-boot domain: the app an instance of the golden image deploys
// (App: source, framework and hooks, env, secrets, pip options, health check) and the payload that
// hands it to the image's baked deploy: a typed #cloud-config document that writes the app
// description (contract.AppFile) and runs contract.DeployProgram once per instance, optionally
// inside a MIME multipart with the user's own parts, plus its gzip+base64 form for EC2. It knows
// nothing of how the image was baked: the image owns the stack. It is a pure pipeline: decode,
// validate, render, validate the output. The same inputs always give the same bytes.
package cloudinit

import (
	"maps"
	"slices"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// Source kinds the baked deploy can fetch a release from.
const (
	SourceGit     = "git"
	SourceTarball = "tarball"
	SourceS3      = "s3"
)

// Secret stores the baked deploy reads a secret from with the instance role.
const (
	SecretSSM            = "ssm"
	SecretSecretsManager = "secretsmanager"
)

// Frameworks the deploy knows. "django" adds the migrate and collectstatic hooks; "flask" and
// "generic" run only the user's hooks.
const (
	FrameworkGeneric = "generic"
	FrameworkFlask   = "flask"
	FrameworkDjango  = "django"
)

// Defaults applied by WithDefaults.
const (
	DefaultRequirementsFile = "requirements.txt"
	DefaultRetries          = 5
	DefaultTimeoutSeconds   = 300
	DefaultHealthTimeout    = 120
	DefaultDjangoManagePy   = "manage.py"
	DefaultMigrateLockWait  = 600
)

// Values of django_migrate_lock.
const (
	// MigrateLockDatabase: one instance of a release migrates under the database's own lock
	// (PostgreSQL advisory lock, MySQL/MariaDB GET_LOCK), the others wait for it.
	MigrateLockDatabase = "database"
	// MigrateLockOff: every instance runs migrate on its own, with no lock.
	MigrateLockOff = "off"
)

// Source is where the app's release comes from: exactly one of GitURL, TarballURL or S3URI.
type Source struct {
	// Git repository URL (https://, http://, ssh://, git:// or user@host:path). Needs git on the
	// image. Credentials in the URL are refused.
	GitURL string `mapstructure:"git_url"`
	// Commit, tag or branch to deploy from git_url. Required with git_url.
	GitRef string `mapstructure:"git_ref"`
	// HTTP(S) URL of a tar archive (gzip, xz, bzip2 or zstd); a single top folder is stripped.
	TarballURL string `mapstructure:"tarball_url"`
	// S3 object (s3://bucket/key) holding a tar archive, fetched with the instance role by the
	// image's own request signer (no AWS CLI needed).
	S3URI string `mapstructure:"s3_uri"`
	// Hex SHA-256 of the archive. Required with tarball_url, optional with s3_uri, not allowed
	// with git_url (the ref pins a git source).
	SHA256 string `mapstructure:"sha256"`
	// Extra attempts of a failed fetch (and of each secret read), with a growing pause. Default 5.
	Retries int `mapstructure:"retries"`
	// Bound of one fetch attempt and of pip's network timeout, in seconds. Default 300.
	TimeoutSeconds int `mapstructure:"timeout_seconds"`
}

// Part is one extra MIME part of the user data, after the deploy's #cloud-config.
type Part struct {
	// MIME type cloud-init knows: text/cloud-config, text/x-shellscript, text/cloud-boothook,
	// text/x-include-url, text/part-handler, text/jinja2 or text/x-shellscript-per-{boot,instance,once}.
	ContentType string `mapstructure:"content_type" required:"true"`
	// File name shown to cloud-init (Content-Disposition). Default part-N.
	Filename string `mapstructure:"filename"`
	// The part's text. A text/cloud-config part may not set runcmd or write_files: those keys
	// belong to the deploy and cloud-init would let the later part replace them.
	Content string `mapstructure:"content" required:"true"`
}

// App is everything first boot needs to know of the app; the image knows the rest.
type App struct {
	// Where the release comes from.
	Source Source `mapstructure:"source" required:"true"`
	// The WSGI entry point, module:callable (for example app:app or mysite.wsgi:application).
	WSGIApp string `mapstructure:"wsgi_app" required:"true"`
	// generic (default), flask or django. django runs `manage.py migrate` and `collectstatic`
	// before the switch.
	Framework string `mapstructure:"framework"`
	// DJANGO_SETTINGS_MODULE for the app and its hooks (django only).
	DjangoSettingsModule string `mapstructure:"django_settings_module"`
	// manage.py relative to the release root (django only). Default manage.py.
	DjangoManagePy string `mapstructure:"django_manage_py"`
	// How instances of one release share `manage.py migrate` (django only): "database" (default)
	// takes the database's own lock, so one instance migrates while the others wait and then
	// find nothing left to do (PostgreSQL and MySQL/MariaDB; SQLite needs no lock, other
	// backends are refused); "off" lets every instance migrate on its own.
	DjangoMigrateLock string `mapstructure:"django_migrate_lock"`
	// Seconds an instance waits for another one's migration before it fails (django only).
	// Default 600.
	DjangoMigrateLockTimeoutSeconds int `mapstructure:"django_migrate_lock_timeout_seconds"`
	// Shell command run as the app user in the release instead of `manage.py migrate --noinput`,
	// under the lock (django only). It always runs: the deploy cannot know what it migrates.
	DjangoMigrateCommand string `mapstructure:"django_migrate_command"`
	// Requirements file relative to the release root. Default requirements.txt, skipped when the
	// release has none; a file named here explicitly must exist.
	RequirementsFile string `mapstructure:"requirements_file"`
	// Constraints file relative to the release root (pip -c).
	PipConstraintsFile string `mapstructure:"pip_constraints_file"`
	// pip --index-url. Default: pip's own (PyPI).
	PipIndexURL string `mapstructure:"pip_index_url"`
	// pip --extra-index-url, in order.
	PipExtraIndexURLs []string `mapstructure:"pip_extra_index_urls"`
	// pip --find-links: wheelhouse folders on the image or URLs.
	PipFindLinks []string `mapstructure:"pip_find_links"`
	// pip --no-index: install only from pip_find_links.
	PipNoIndex bool `mapstructure:"pip_no_index"`
	// Non-secret environment of the app and its hooks. Values that look like secrets are refused.
	Env map[string]string `mapstructure:"env"`
	// Secret environment variables as references resolved at boot with the instance role:
	// "ssm:/param/name" (Parameter Store, decrypted) or "secretsmanager:name-or-arn".
	Secrets map[string]string `mapstructure:"secrets"`
	// Commands run as the app user in the new release before `current` is switched to it.
	HooksBeforeSwitch []string `mapstructure:"hooks_before_switch"`
	// Commands run as the app user after the switch, before the sockets start.
	HooksAfterSwitch []string `mapstructure:"hooks_after_switch"`
	// URL path first boot waits for HTTP 200 on, through NGINX and on every unit's socket.
	// Default: the image's health_path (wsgi-stack's, "/healthz" unless set there).
	HealthPath string `mapstructure:"health_path"`
	// Seconds to wait for HTTP 200 on the health path through NGINX. Default 120.
	HealthTimeoutSeconds int `mapstructure:"health_timeout_seconds"`
	// Region of the S3 bucket and the secrets. Default: the instance's, from IMDSv2.
	AWSRegion string `mapstructure:"aws_region"`
	// Endpoints for the instance's AWS requests, such as VPC endpoints: keys s3, ssm,
	// secretsmanager and autoscaling, values http(s) URLs. Default: the regional AWS endpoints.
	AWSEndpoints map[string]string `mapstructure:"aws_endpoints"`
	// Name of the Auto Scaling launch lifecycle hook the instance waits on. When set, first boot
	// completes it with CONTINUE once the instance serves and with ABANDON when the deploy
	// fails, signed with the instance role; nothing is done when the instance is not waiting on
	// a hook. The role needs autoscaling:DescribeAutoScalingInstances and
	// autoscaling:CompleteLifecycleAction.
	LifecycleHook string `mapstructure:"lifecycle_hook"`
	// Extra MIME parts; with any, the user data is multipart/mixed.
	ExtraParts []Part `mapstructure:"extra_part"`
}

// WithDefaults fills the zero fields of a that have a default.
func (a App) WithDefaults() App {
	if a.Framework == "" {
		a.Framework = FrameworkGeneric
	}
	if a.Framework == FrameworkDjango {
		if a.DjangoManagePy == "" {
			a.DjangoManagePy = DefaultDjangoManagePy
		}
		if a.DjangoMigrateLock == "" {
			a.DjangoMigrateLock = MigrateLockDatabase
		}
		if a.DjangoMigrateLockTimeoutSeconds == 0 {
			a.DjangoMigrateLockTimeoutSeconds = DefaultMigrateLockWait
		}
	}
	if a.Source.Retries == 0 {
		a.Source.Retries = DefaultRetries
	}
	if a.Source.TimeoutSeconds == 0 {
		a.Source.TimeoutSeconds = DefaultTimeoutSeconds
	}
	if a.HealthTimeoutSeconds == 0 {
		a.HealthTimeoutSeconds = DefaultHealthTimeout
	}
	return a
}

// kind is the source kind set, or "" when none or several are.
func (s Source) kind() string {
	n, k := 0, ""
	if s.GitURL != "" {
		n, k = n+1, SourceGit
	}
	if s.TarballURL != "" {
		n, k = n+1, SourceTarball
	}
	if s.S3URI != "" {
		n, k = n+1, SourceS3
	}
	if n != 1 {
		return ""
	}
	return k
}

// Needs is what the app needs from the image it boots on: this schema, git for a git source,
// and signed AWS requests for an S3 source, secrets or a lifecycle hook. Sorted.
func (a App) Needs() []string {
	needs := []string{contract.SchemaNeed(contract.SchemaVersion)}
	if a.Source.kind() == SourceGit {
		needs = append(needs, contract.NeedGit)
	}
	if a.Source.kind() == SourceS3 || len(a.Secrets) > 0 || a.LifecycleHook != "" {
		needs = append(needs, contract.NeedAWSRequests)
	}
	slices.Sort(needs)
	return needs
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
