package image

import (
	"fmt"
	"sort"
	"strings"
)

// Source kinds the deploy script can fetch a release from.
const (
	SourceGit     = "git"
	SourceTarball = "tarball"
	SourceS3      = "s3"
)

// Secret stores the deploy script can read a secret from with the instance role.
const (
	SecretSSM            = "ssm"
	SecretSecretsManager = "secretsmanager"
)

// DeploySource says where the release comes from. Ref is the git ref (commit, tag or branch);
// SHA256 pins a tarball or an S3 object.
type DeploySource struct {
	Kind   string
	URL    string
	Ref    string
	SHA256 string
}

// DeploySecret is one environment variable resolved at boot from a secret store.
type DeploySecret struct {
	Name  string
	Store string // SecretSSM or SecretSecretsManager
	ID    string // parameter name or secret id/ARN
}

// DeployParams are the first-boot inputs beyond the Stack. The cloudinit package validates
// them; RenderDeploy only quotes them, so any value is safe in the script.
type DeployParams struct {
	Source         DeploySource
	Retries        int // extra attempts of a fetch or a secret read
	TimeoutSeconds int // bound of one fetch attempt

	// RequirementsFile is relative to the release; a missing file fails the deploy only when
	// RequirementsRequired is set (the user named it).
	RequirementsFile     string
	RequirementsRequired bool
	ConstraintsFile      string
	PipIndexURL          string
	PipExtraIndexURLs    []string
	PipFindLinks         []string
	PipNoIndex           bool

	Django         bool
	DjangoManagePy string

	HooksBeforeSwitch []string
	HooksAfterSwitch  []string

	Secrets   []DeploySecret
	AWSRegion string // empty: the instance's region from IMDSv2

	HealthTimeoutSeconds int
}

// DeployScriptPath is where the payload writes the deploy script on the instance.
func (s Stack) DeployScriptPath() string { return "/usr/local/sbin/wsgi-deploy" }

// AppEnvInput is the non-secret environment the payload writes; the deploy script adds the
// resolved secrets and installs the result as EnvFile.
func (s Stack) AppEnvInput() string { return s.EtcDir + "/app.env" }

// DeployLog is the deploy's own log file, beside cloud-init's output log and the journal.
func (s Stack) DeployLog() string { return "/var/log/wsgi-deploy.log" }

// AppStateDir is the app's writable state directory (StateDirectory=wsgi-app of the units),
// also the app user's HOME while hooks run.
func (s Stack) AppStateDir() string { return "/var/lib/wsgi-app" }

// ShellQuote quotes v for POSIX sh: single quotes, each embedded quote closed, escaped and
// reopened.
func ShellQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// envEscaper escapes the four characters that stay special inside double quotes.
var envEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")

// EnvQuote quotes v so that systemd's EnvironmentFile= parser and `set -a; . FILE` in sh read
// back the same bytes: double quotes with \, \", \$ and \` escaped. Single quotes will not do:
// systemd honours a quote only at the start of a value, so the close-escape-reopen idiom of sh
// reaches the app with stray quotes.
func EnvQuote(v string) string { return `"` + envEscaper.Replace(v) + `"` }

// EnvVar is one line of an environment file.
type EnvVar struct{ Name, Value string }

// RenderEnvFile renders variables as KEY="value" lines (EnvQuote), sorted by name.
func RenderEnvFile(vars []EnvVar) []byte {
	sorted := append([]EnvVar(nil), vars...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b strings.Builder
	b.WriteString("# Managed by packer-plugin-wsgi: the app's non-secret environment.\n")
	for _, v := range sorted {
		fmt.Fprintf(&b, "%s=%s\n", v.Name, EnvQuote(v.Value))
	}
	return []byte(b.String())
}

// deployView is what deploy.sh.tmpl sees: every user value already quoted for the shell.
type deployView struct {
	Stack
	P DeployParams
}

// Q quotes a value for the shell.
func (deployView) Q(v string) string { return ShellQuote(v) }

// PipArgs are the index options of every pip install, quoted.
func (v deployView) PipArgs() string {
	var a []string
	if v.P.PipNoIndex {
		a = append(a, "--no-index")
	}
	if v.P.PipIndexURL != "" {
		a = append(a, "--index-url", ShellQuote(v.P.PipIndexURL))
	}
	for _, u := range v.P.PipExtraIndexURLs {
		a = append(a, "--extra-index-url", ShellQuote(u))
	}
	for _, u := range v.P.PipFindLinks {
		a = append(a, "--find-links", ShellQuote(u))
	}
	return strings.Join(a, " ")
}

// NeedsAWS is true when the deploy calls the AWS CLI (S3 source or secrets).
func (v deployView) NeedsAWS() bool { return v.P.Source.Kind == SourceS3 || len(v.P.Secrets) > 0 }

// Services lists the service units, in instance order.
func (v deployView) Services() []string {
	out := make([]string, 0, v.Sockets)
	for _, i := range v.Instances() {
		out = append(out, v.ServiceUnit(i))
	}
	return out
}

// RenderDeploy renders the first-boot deploy script for s with p. The same inputs always
// give the same bytes.
func RenderDeploy(s Stack, p DeployParams) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	switch p.Source.Kind {
	case SourceGit, SourceTarball, SourceS3:
	default:
		return nil, fmt.Errorf("render deploy: unknown source kind %q", p.Source.Kind)
	}
	for _, sec := range p.Secrets {
		if sec.Store != SecretSSM && sec.Store != SecretSecretsManager {
			return nil, fmt.Errorf("render deploy: secret %s: unknown store %q", sec.Name, sec.Store)
		}
	}
	return execute("deploy.sh.tmpl", deployView{Stack: s, P: p})
}
