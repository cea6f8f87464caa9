package cloudinit

import (
	"net/url"
	"regexp"
	"strings"
)

// User data is readable by anything on the instance that can reach IMDS and by anyone with
// ec2:DescribeInstanceAttribute, so the payload refuses values that look like secrets. These
// checks catch the obvious cases; they are not a scanner.
var (
	awsKeyIDRe   = regexp.MustCompile(`\b(AKIA|ASIA|AROA|AIDA)[0-9A-Z]{16}\b`)
	privateKeyRe = regexp.MustCompile(`-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----`)
	tokenRe      = regexp.MustCompile(`\b(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|xox[abpors]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,}|sk_live_[A-Za-z0-9]{16,})\b`)
	assignRe     = regexp.MustCompile(`(?i)\b(password|passwd|pwd|secret|token|api_?key|access_?key|secret_?key|aws_secret_access_key)\s*[=:]\s*[^\s&;'"$][^\s&;'"]*`)
	urlUserRe    = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]+:[^/@\s]+@`)
	// A variable whose name ends like this holds a secret, whatever its value looks like.
	secretNameRe = regexp.MustCompile(`(?i)(^|_)(PASSWORD|PASSWD|PASSPHRASE|SECRET|SECRET_KEY|SECRET_ACCESS_KEY|TOKEN|ACCESS_TOKEN|AUTH_TOKEN|API_KEY|APIKEY|PRIVATE_KEY|ACCESS_KEY|CREDENTIALS?)$`)
)

// contentSecret says why text looks like it holds a secret, or "".
func contentSecret(text string) string {
	switch {
	case awsKeyIDRe.MatchString(text):
		return "an AWS access key id"
	case privateKeyRe.MatchString(text):
		return "a private key"
	case tokenRe.MatchString(text):
		return "an API token"
	case urlUserRe.MatchString(text):
		return "a URL with a password"
	case assignRe.MatchString(text):
		return "a password=... style assignment"
	}
	return ""
}

// secretLooking says why an environment variable looks secret, from its name or its value.
func secretLooking(name, value string) string {
	if why := contentSecret(value); why != "" {
		return why
	}
	if secretNameRe.MatchString(name) && value != "" && !harmless(value) {
		return "its name says it holds a secret"
	}
	return ""
}

// harmless values under a secret-sounding name: flags, numbers and file paths (for example
// SECRET_KEY_FILE-like settings written as FOO_SECRET=/run/secrets/foo).
func harmless(v string) bool {
	switch strings.ToLower(v) {
	case "true", "false", "yes", "no", "on", "off", "0", "1":
		return true
	}
	return strings.HasPrefix(v, "/") && !strings.ContainsAny(v, " \t\n")
}

// urlSecret says why a URL carries a credential, or "".
func urlSecret(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return "must not carry a password (user:password@)"
		}
		if u.Scheme == "https" || u.Scheme == "http" {
			return "must not carry credentials (token@)"
		}
	}
	if why := contentSecret(raw); why != "" {
		return "must not carry " + why
	}
	return ""
}
