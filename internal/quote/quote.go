// Package quote holds the one quoting rule of each format a user's value reaches on the instance.
// Every rendered script and file goes through these, never through hand-written escaping.
package quote

import "strings"

// Shell quotes v for POSIX sh and bash: single quotes, each embedded quote closed, escaped and
// reopened. Any byte string comes back unchanged as one word.
func Shell(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// Shells quotes each of vs and joins them with spaces.
func Shells(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = Shell(v)
	}
	return strings.Join(q, " ")
}

// envEscaper escapes the four characters that stay special inside double quotes.
var envEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "`", "\\`")

// Env quotes v so that systemd's EnvironmentFile= parser and `set -a; . FILE` in sh read back the
// same bytes: double quotes with \, \", \$ and \` escaped. Single quotes will not do: systemd
// honours a quote only at the start of a value, so the close-escape-reopen idiom of sh reaches the
// app with stray quotes.
func Env(v string) string { return `"` + envEscaper.Replace(v) + `"` }
