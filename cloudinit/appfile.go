package cloudinit

import (
	"fmt"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/quote"
)

// endpointVars are the environment variables the image's request signer reads for each
// service's endpoint (the names the AWS SDKs use).
var endpointVars = map[string]string{
	"autoscaling":    "AWS_ENDPOINT_URL_AUTO_SCALING",
	"s3":             "AWS_ENDPOINT_URL_S3",
	"secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
	"ssm":            "AWS_ENDPOINT_URL_SSM",
}

// appFile is the app description the baked deploy sources (contract.AppFile): bash assignments,
// every value through quote.Shell, so any byte string reads back unchanged and nothing in it runs.
func (a App) appFile() string {
	var b strings.Builder
	b.WriteString("# Managed by packer-plugin-wsgi (wsgi-cloudinit): the app first boot deploys, read by " + contract.DeployProgram + ".\n")
	fmt.Fprintf(&b, "WSGI_SCHEMA=%d\n", contract.SchemaVersion)
	b.WriteString(NeedsLine(a.Needs()) + "\n")
	str := func(name, v string) { fmt.Fprintf(&b, "%s=%s\n", name, quote.Shell(v)) }
	list := func(name string, vs []string) { fmt.Fprintf(&b, "%s=(%s)\n", name, quote.Shells(vs)) }
	num := func(name string, v int) { fmt.Fprintf(&b, "%s=%d\n", name, v) }

	str("WSGI_FRAMEWORK", a.Framework)
	str("WSGI_DJANGO_MANAGE_PY", a.DjangoManagePy)
	if a.Framework == FrameworkDjango {
		str("WSGI_DJANGO_MIGRATE_LOCK", a.DjangoMigrateLock)
		num("WSGI_DJANGO_MIGRATE_LOCK_TIMEOUT", a.DjangoMigrateLockTimeoutSeconds)
		str("WSGI_DJANGO_MIGRATE_COMMAND", a.DjangoMigrateCommand)
	}
	s := a.Source
	str("WSGI_SOURCE_KIND", s.kind())
	str("WSGI_SOURCE_URL", s.GitURL+s.TarballURL+s.S3URI) // exactly one is set
	str("WSGI_SOURCE_REF", s.GitRef)
	str("WSGI_SOURCE_SHA256", s.SHA256)
	num("WSGI_RETRIES", s.Retries)
	num("WSGI_FETCH_TIMEOUT", s.TimeoutSeconds)

	req, required := a.RequirementsFile, "1"
	if req == "" {
		req, required = DefaultRequirementsFile, "0"
	}
	str("WSGI_REQUIREMENTS_FILE", req)
	fmt.Fprintf(&b, "WSGI_REQUIREMENTS_REQUIRED=%s\n", required)
	str("WSGI_PIP_CONSTRAINTS_FILE", a.PipConstraintsFile)
	list("WSGI_PIP_ARGS", a.pipArgs())

	list("WSGI_HOOKS_BEFORE_SWITCH", a.HooksBeforeSwitch)
	list("WSGI_HOOKS_AFTER_SWITCH", a.HooksAfterSwitch)
	var secrets []string
	for _, name := range sortedKeys(a.Secrets) {
		secrets = append(secrets, name+"="+a.Secrets[name])
	}
	list("WSGI_SECRETS", secrets)
	str("WSGI_HEALTH_PATH", a.HealthPath)
	num("WSGI_HEALTH_TIMEOUT", a.HealthTimeoutSeconds)
	str("WSGI_AWS_REGION", a.AWSRegion)
	var endpoints []string
	for _, svc := range sortedKeys(a.AWSEndpoints) {
		endpoints = append(endpoints, endpointVars[svc]+"="+a.AWSEndpoints[svc])
	}
	list("WSGI_AWS_ENDPOINTS", endpoints)
	if a.LifecycleHook != "" {
		str("WSGI_LIFECYCLE_HOOK", a.LifecycleHook)
	}
	// The app's environment with its entry point, already in the environment file's quoting
	// (quote.Env); the deploy adds STATIC_ROOT and the secrets.
	str("WSGI_ENV", a.envFile())
	return b.String()
}

// pipArgs are the index options of every pip install, one word each.
func (a App) pipArgs() []string {
	var args []string
	if a.PipNoIndex {
		args = append(args, "--no-index")
	}
	if a.PipIndexURL != "" {
		args = append(args, "--index-url", a.PipIndexURL)
	}
	for _, u := range a.PipExtraIndexURLs {
		args = append(args, "--extra-index-url", u)
	}
	for _, u := range a.PipFindLinks {
		args = append(args, "--find-links", u)
	}
	return args
}

// envFile is the app's non-secret environment and its entry point as KEY="value" lines
// (quote.Env), sorted by name.
func (a App) envFile() string {
	env := map[string]string{"WSGI_APP": a.WSGIApp}
	for k, v := range a.Env {
		env[k] = v
	}
	if a.DjangoSettingsModule != "" {
		env["DJANGO_SETTINGS_MODULE"] = a.DjangoSettingsModule
	}
	var b strings.Builder
	for _, k := range sortedKeys(env) {
		b.WriteString(k + "=" + quote.Env(env[k]) + "\n")
	}
	return b.String()
}
