package cloudinit

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/report"
)

var (
	envNameRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	wsgiAppRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\(\))?$`)
	pyModuleRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
	gitRefRe      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/+-]*$`)
	scpGitRe      = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/-]+$`)
	sha256Re      = regexp.MustCompile(`^[0-9a-f]{64}$`)
	s3URIRe       = regexp.MustCompile(`^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\s]+$`)
	ssmNameRe     = regexp.MustCompile(`^/?[A-Za-z0-9_.\-/]+$`)
	smIDRe        = regexp.MustCompile(`^[A-Za-z0-9/_+=.@:-]+$`)
	regionRe      = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]$`)
	filenameRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	urlPathRe     = regexp.MustCompile(`^/[A-Za-z0-9._~/-]*$`)
	hookNameRe    = regexp.MustCompile(`^[A-Za-z0-9_/-]{1,255}$`)
	migrateLocks  = []string{MigrateLockDatabase, MigrateLockOff}
	awsServices   = []string{"autoscaling", "s3", "secretsmanager", "ssm"}
	frameworks    = []string{FrameworkGeneric, FrameworkFlask, FrameworkDjango}
	partTypes     = []string{"text/cloud-config", "text/x-shellscript", "text/cloud-boothook", "text/x-include-url", "text/part-handler", "text/jinja2", "text/x-shellscript-per-boot", "text/x-shellscript-per-instance", "text/x-shellscript-per-once"}
	reservedEnv   = []string{"WSGI_APP", "WSGI_UNIT", "STATIC_ROOT", "PYTHONPATH", "PATH", "HOME", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET"}
	ownedCfgKeys  = []string{"runcmd", "write_files"}
	maxRetries    = 20
	maxTimeout    = 3600
	maxHookLength = 4096
)

// Validate reports every problem of a defaulted App, each at its HCL key. It is the app's one
// validation: Build takes an App that passed it.
func (a App) Validate() report.Report {
	var ps report.Report
	a.validateSource(&ps)
	if a.HealthPath != "" && (!urlPathRe.MatchString(a.HealthPath) || a.HealthPath == "/") {
		ps.Add("health_path", "must be a URL path such as /healthz, got %q", a.HealthPath)
	}
	for _, k := range sortedKeys(a.AWSEndpoints) {
		key := "aws_endpoints." + k
		if !slices.Contains(awsServices, k) {
			ps.Add(key, "must be one of %s", strings.Join(awsServices, ", "))
			continue
		}
		httpURL(&ps, key, a.AWSEndpoints[k])
	}

	if !wsgiAppRe.MatchString(a.WSGIApp) {
		ps.Add("wsgi_app", "must be module:callable such as app:app or mysite.wsgi:application, got %q", a.WSGIApp)
	}
	if !slices.Contains(frameworks, a.Framework) {
		ps.Add("framework", "must be one of %s, got %q", strings.Join(frameworks, ", "), a.Framework)
	}
	if a.Framework != FrameworkDjango {
		if a.DjangoSettingsModule != "" {
			ps.Add("django_settings_module", "only used with framework = \"django\", got framework %q", a.Framework)
		}
		if a.DjangoManagePy != "" {
			ps.Add("django_manage_py", "only used with framework = \"django\", got framework %q", a.Framework)
		}
		if a.DjangoMigrateLock != "" {
			ps.Add("django_migrate_lock", "only used with framework = \"django\", got framework %q", a.Framework)
		}
		if a.DjangoMigrateLockTimeoutSeconds != 0 {
			ps.Add("django_migrate_lock_timeout_seconds", "only used with framework = \"django\", got framework %q", a.Framework)
		}
		if a.DjangoMigrateCommand != "" {
			ps.Add("django_migrate_command", "only used with framework = \"django\", got framework %q", a.Framework)
		}
	} else {
		if a.DjangoSettingsModule != "" && !pyModuleRe.MatchString(a.DjangoSettingsModule) {
			ps.Add("django_settings_module", "must be a dotted Python module such as mysite.settings, got %q", a.DjangoSettingsModule)
		}
		relPath(&ps, "django_manage_py", a.DjangoManagePy)
		if !slices.Contains(migrateLocks, a.DjangoMigrateLock) {
			ps.Add("django_migrate_lock", "must be one of %s, got %q", strings.Join(migrateLocks, ", "), a.DjangoMigrateLock)
		}
		if a.DjangoMigrateLockTimeoutSeconds < 1 || a.DjangoMigrateLockTimeoutSeconds > maxTimeout {
			ps.Add("django_migrate_lock_timeout_seconds", "must be between 1 and %d, got %d", maxTimeout, a.DjangoMigrateLockTimeoutSeconds)
		}
		if a.DjangoMigrateCommand != "" {
			command(&ps, "django_migrate_command", a.DjangoMigrateCommand)
		}
	}
	if a.RequirementsFile != "" {
		relPath(&ps, "requirements_file", a.RequirementsFile)
	}
	if a.PipConstraintsFile != "" {
		relPath(&ps, "pip_constraints_file", a.PipConstraintsFile)
	}
	if a.PipIndexURL != "" {
		httpURL(&ps, "pip_index_url", a.PipIndexURL)
	}
	for i, u := range a.PipExtraIndexURLs {
		httpURL(&ps, fmt.Sprintf("pip_extra_index_urls[%d]", i), u)
	}
	for i, l := range a.PipFindLinks {
		key := fmt.Sprintf("pip_find_links[%d]", i)
		if strings.HasPrefix(l, "/") {
			if path.Clean(l) != l || strings.ContainsAny(l, "\x00\n") {
				ps.Add(key, "must be a clean absolute path or an http(s) URL, got %q", l)
			}
		} else {
			httpURL(&ps, key, l)
		}
	}
	if a.PipNoIndex && len(a.PipFindLinks) == 0 {
		ps.Add("pip_no_index", "needs pip_find_links: with no index pip has nowhere to install from")
	}
	if a.PipNoIndex && (a.PipIndexURL != "" || len(a.PipExtraIndexURLs) > 0) {
		ps.Add("pip_no_index", "contradicts pip_index_url and pip_extra_index_urls; set one or the other")
	}

	for _, k := range sortedKeys(a.Env) {
		key := "env." + k
		envName(&ps, key, k)
		if strings.ContainsRune(a.Env[k], 0) {
			ps.Add(key, "must not contain a NUL byte")
		}
		if why := secretLooking(k, a.Env[k]); why != "" {
			ps.Add(key, "looks like a secret (%s); the payload is readable by anyone who can read the instance's user data: put it in secrets as \"ssm:/name\" or \"secretsmanager:name\"", why)
		}
		if _, dup := a.Secrets[k]; dup {
			ps.Add(key, "is also set in secrets; keep one")
		}
	}
	if a.DjangoSettingsModule != "" {
		if _, dup := a.Env["DJANGO_SETTINGS_MODULE"]; dup {
			ps.Add("env.DJANGO_SETTINGS_MODULE", "is set by django_settings_module; keep one")
		}
	}
	for _, k := range sortedKeys(a.Secrets) {
		key := "secrets." + k
		envName(&ps, key, k)
		if store, id := splitSecretRef(a.Secrets[k]); store == "" {
			ps.Add(key, "must be a reference \"ssm:/parameter/name\" or \"secretsmanager:name-or-arn\", not a value")
		} else if (store == SecretSSM && !ssmNameRe.MatchString(id)) || (store == SecretSecretsManager && !smIDRe.MatchString(id)) {
			ps.Add(key, "%s name %q has characters the store does not allow", store, id)
		}
	}

	hooks(&ps, "hooks_before_switch", a.HooksBeforeSwitch)
	hooks(&ps, "hooks_after_switch", a.HooksAfterSwitch)
	if a.HealthTimeoutSeconds < 1 || a.HealthTimeoutSeconds > maxTimeout {
		ps.Add("health_timeout_seconds", "must be between 1 and %d, got %d", maxTimeout, a.HealthTimeoutSeconds)
	}
	if a.AWSRegion != "" && !regionRe.MatchString(a.AWSRegion) {
		ps.Add("aws_region", "must be a region name such as eu-west-1, got %q", a.AWSRegion)
	}
	if a.LifecycleHook != "" && !hookNameRe.MatchString(a.LifecycleHook) {
		ps.Add("lifecycle_hook", "must be the name of an Auto Scaling lifecycle hook: 1-255 letters, digits, '-', '_' or '/', got %q", a.LifecycleHook)
	}
	for i, p := range a.ExtraParts {
		validatePart(&ps, fmt.Sprintf("extra_part[%d]", i), p)
	}

	return ps
}

func (a App) validateSource(ps *report.Report) {
	s := a.Source
	set := []string{}
	for _, f := range []struct{ key, v string }{{"git_url", s.GitURL}, {"tarball_url", s.TarballURL}, {"s3_uri", s.S3URI}} {
		if f.v != "" {
			set = append(set, f.key)
		}
	}
	if len(set) != 1 {
		got := "none"
		if len(set) > 1 {
			got = strings.Join(set, " and ")
		}
		ps.Add("source", "set exactly one of git_url, tarball_url or s3_uri, got %s", got)
	}
	if s.GitURL != "" {
		if !gitURL(s.GitURL) {
			ps.Add("source.git_url", "must be an https://, http://, ssh:// or git:// URL or user@host:path, got %q", s.GitURL)
		} else if why := urlSecret(s.GitURL); why != "" {
			ps.Add("source.git_url", "%s; use a deploy key baked into the image or a public URL", why)
		}
		switch {
		case s.GitRef == "":
			ps.Add("source.git_ref", "required with git_url: a commit, tag or branch")
		case !gitRefRe.MatchString(s.GitRef) || strings.Contains(s.GitRef, "..") || strings.HasSuffix(s.GitRef, ".lock") || strings.HasSuffix(s.GitRef, "/"):
			ps.Add("source.git_ref", "must be a commit, tag or branch name, got %q", s.GitRef)
		}
		if s.SHA256 != "" {
			ps.Add("source.sha256", "not used with git_url: git_ref pins the release")
		}
	} else if s.GitRef != "" {
		ps.Add("source.git_ref", "only used with git_url")
	}
	if s.TarballURL != "" {
		httpURL(ps, "source.tarball_url", s.TarballURL)
		if s.SHA256 == "" {
			ps.Add("source.sha256", "required with tarball_url: the hex SHA-256 of the archive (sha256sum FILE)")
		}
	}
	if s.S3URI != "" && !s3URIRe.MatchString(s.S3URI) {
		ps.Add("source.s3_uri", "must be s3://bucket/key, got %q", s.S3URI)
	}
	if s.SHA256 != "" && !sha256Re.MatchString(s.SHA256) {
		ps.Add("source.sha256", "must be 64 lower-case hex digits, got %q", s.SHA256)
	}
	if s.Retries < 1 || s.Retries > maxRetries {
		ps.Add("source.retries", "must be between 1 and %d, got %d", maxRetries, s.Retries)
	}
	if s.TimeoutSeconds < 1 || s.TimeoutSeconds > maxTimeout {
		ps.Add("source.timeout_seconds", "must be between 1 and %d, got %d", maxTimeout, s.TimeoutSeconds)
	}
}

func validatePart(ps *report.Report, key string, p Part) {
	if !slices.Contains(partTypes, p.ContentType) {
		ps.Add(key+".content_type", "must be one of %s, got %q", strings.Join(partTypes, ", "), p.ContentType)
	}
	if p.Filename != "" && !filenameRe.MatchString(p.Filename) {
		ps.Add(key+".filename", "must be 1-64 letters, digits, '.', '_' or '-', got %q", p.Filename)
	}
	if strings.TrimSpace(p.Content) == "" {
		ps.Add(key+".content", "must not be empty")
		return
	}
	if why := contentSecret(p.Content); why != "" {
		ps.Add(key+".content", "contains what looks like a secret (%s); resolve secrets at boot with the instance role instead", why)
	}
	if p.ContentType != "text/cloud-config" {
		return
	}
	if !strings.HasPrefix(p.Content, "#cloud-config\n") {
		ps.Add(key+".content", "a text/cloud-config part must start with a \"#cloud-config\" line")
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(p.Content), &doc); err != nil {
		ps.Add(key+".content", "is not valid YAML: %v", err)
		return
	}
	for _, k := range ownedCfgKeys {
		if _, ok := doc[k]; ok {
			ps.Add(key+".content", "sets %s, which the deploy owns (a later part replaces it and the deploy would not run); use hooks_before_switch, hooks_after_switch or a text/x-shellscript part", k)
		}
	}
}

func envName(ps *report.Report, key, name string) {
	if !envNameRe.MatchString(name) {
		ps.Add(key, "must be a variable name of letters, digits and '_', not starting with a digit")
	}
	if slices.Contains(reservedEnv, name) || strings.HasPrefix(name, "WSGI_") {
		ps.Add(key, "is set by the deploy or systemd (WSGI_ names are the deploy's); choose another name")
	}
}

func relPath(ps *report.Report, key, p string) {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == "." || strings.HasPrefix(p, "../") || p == ".." || strings.ContainsAny(p, "\x00\n") {
		ps.Add(key, "must be a clean path relative to the release root such as requirements.txt, got %q", p)
	}
}

func httpURL(ps *report.Report, key, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.ContainsAny(raw, " \t\n\x00") {
		ps.Add(key, "must be an http(s) URL, got %q", raw)
		return
	}
	if why := urlSecret(raw); why != "" {
		ps.Add(key, "%s; the payload is readable from the instance metadata", why)
	}
}

func gitURL(raw string) bool {
	if strings.ContainsAny(raw, " \t\n\x00") {
		return false
	}
	if scpGitRe.MatchString(raw) {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return false
	}
	switch u.Scheme {
	case "https", "http", "ssh", "git":
		return true
	}
	return false
}

func hooks(ps *report.Report, key string, list []string) {
	for i, h := range list {
		command(ps, fmt.Sprintf("%s[%d]", key, i), h)
	}
}

// command checks one shell command the deploy runs as the app user.
func command(ps *report.Report, k, h string) {
	switch {
	case strings.TrimSpace(h) == "":
		ps.Add(k, "must not be empty")
	case len(h) > maxHookLength:
		ps.Add(k, "must be at most %d bytes; put long scripts in the release and call them", maxHookLength)
	case strings.ContainsRune(h, 0):
		ps.Add(k, "must not contain a NUL byte")
	}
	if why := contentSecret(h); why != "" {
		ps.Add(k, "contains what looks like a secret (%s); read it from the environment (secrets) instead", why)
	}
}

// splitSecretRef parses "ssm:NAME" and "secretsmanager:ID"; store is "" for anything else.
func splitSecretRef(ref string) (store, id string) {
	for _, s := range []string{SecretSSM, SecretSecretsManager} {
		if rest, ok := strings.CutPrefix(ref, s+":"); ok && rest != "" {
			return s, rest
		}
	}
	return "", ""
}
