//go:generate packer-sdc mapstructure-to-hcl2 -type App,Source,Part

// Package cloudinit builds the first-boot payload for an instance of the golden image: a typed
// #cloud-config document that writes the deploy script (rendered by package templates) and
// runs it once per instance, optionally inside a MIME multipart with the user's own parts,
// plus its gzip+base64 form for EC2. It is a pure pipeline: decode, validate, render, validate
// the output. The same inputs always give the same bytes.
package cloudinit

import (
	"sort"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
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
	// S3 object (s3://bucket/key) holding a tar archive, fetched with the instance role through
	// the AWS CLI, which must be on the image.
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

// App is everything first boot needs beyond the Stack.
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
	// Seconds to wait for HTTP 200 on the health path through NGINX. Default 120.
	HealthTimeoutSeconds int `mapstructure:"health_timeout_seconds"`
	// Region for the AWS CLI (S3 source, secrets). Default: the instance's, from IMDSv2.
	AWSRegion string `mapstructure:"aws_region"`
	// Extra MIME parts; with any, the user data is multipart/mixed.
	ExtraParts []Part `mapstructure:"extra_part"`
}

// WithDefaults fills the zero fields of a that have a default.
func (a App) WithDefaults() App {
	if a.Framework == "" {
		a.Framework = FrameworkGeneric
	}
	if a.DjangoManagePy == "" && a.Framework == FrameworkDjango {
		a.DjangoManagePy = DefaultDjangoManagePy
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
		n, k = n+1, image.SourceGit
	}
	if s.TarballURL != "" {
		n, k = n+1, image.SourceTarball
	}
	if s.S3URI != "" {
		n, k = n+1, image.SourceS3
	}
	if n != 1 {
		return ""
	}
	return k
}

// deployParams maps a validated, defaulted App onto the script's parameters.
func (a App) deployParams() image.DeployParams {
	p := image.DeployParams{
		Retries:              a.Source.Retries,
		TimeoutSeconds:       a.Source.TimeoutSeconds,
		RequirementsFile:     a.RequirementsFile,
		RequirementsRequired: a.RequirementsFile != "",
		ConstraintsFile:      a.PipConstraintsFile,
		PipIndexURL:          a.PipIndexURL,
		PipExtraIndexURLs:    a.PipExtraIndexURLs,
		PipFindLinks:         a.PipFindLinks,
		PipNoIndex:           a.PipNoIndex,
		Django:               a.Framework == FrameworkDjango,
		DjangoManagePy:       a.DjangoManagePy,
		HooksBeforeSwitch:    a.HooksBeforeSwitch,
		HooksAfterSwitch:     a.HooksAfterSwitch,
		AWSRegion:            a.AWSRegion,
		HealthTimeoutSeconds: a.HealthTimeoutSeconds,
	}
	if p.RequirementsFile == "" {
		p.RequirementsFile = DefaultRequirementsFile
	}
	s := a.Source
	switch s.kind() {
	case image.SourceGit:
		p.Source = image.DeploySource{Kind: image.SourceGit, URL: s.GitURL, Ref: s.GitRef}
	case image.SourceTarball:
		p.Source = image.DeploySource{Kind: image.SourceTarball, URL: s.TarballURL, SHA256: s.SHA256}
	case image.SourceS3:
		p.Source = image.DeploySource{Kind: image.SourceS3, URL: s.S3URI, SHA256: s.SHA256}
	}
	for _, name := range sortedKeys(a.Secrets) {
		store, id := splitSecretRef(a.Secrets[name])
		p.Secrets = append(p.Secrets, image.DeploySecret{Name: name, Store: store, ID: id})
	}
	return p
}

// appEnv is the non-secret environment file's content: the user's variables plus the ones the
// deploy owns.
func (a App) appEnv(s image.Stack) []image.EnvVar {
	vars := []image.EnvVar{
		{Name: "WSGI_APP", Value: a.WSGIApp},
		{Name: "STATIC_ROOT", Value: s.StaticDir()},
	}
	if a.DjangoSettingsModule != "" {
		vars = append(vars, image.EnvVar{Name: "DJANGO_SETTINGS_MODULE", Value: a.DjangoSettingsModule})
	}
	for _, k := range sortedKeys(a.Env) {
		vars = append(vars, image.EnvVar{Name: k, Value: a.Env[k]})
	}
	return vars
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
