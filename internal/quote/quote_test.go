package quote

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var hostile = []string{
	"", "plain", "it's", `a"b`, "$(touch pwned)", "`touch pwned`", "a;touch pwned", "a&touch pwned",
	"line1\nline2", `back\slash`, "$HOME", "tab\there", "'", "''", `\'`, "ünïcode ✓", "-n", "*",
}

// TestShellRoundTrip runs every hostile value through sh and reads it back unchanged; nothing
// in it may run.
func TestShellRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, v := range hostile {
		out, err := exec.Command("/bin/sh", "-c", "cd "+Shell(dir)+" && printf %s "+Shell(v)).Output()
		if err != nil {
			t.Fatalf("sh with %q: %v", v, err)
		}
		if string(out) != v {
			t.Errorf("Shell(%q) read back as %q", v, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("a quoted value ran a command")
	}
	if got := Shells([]string{"a b", "c'd"}); got != `'a b' 'c'\''d'` {
		t.Fatalf("Shells = %s", got)
	}
}

// TestEnvRoundTrip writes every hostile value as an environment file and reads it back with
// `set -a; . FILE` (the deploy's hooks); systemd's parser is checked on the instance in e2e.
func TestEnvRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, v := range hostile {
		f := filepath.Join(dir, "env")
		if err := os.WriteFile(f, []byte("V="+Env(v)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("/bin/sh", "-c", "cd "+Shell(dir)+" && set -a && . ./env && printf %s \"$V\"").Output()
		if err != nil {
			t.Fatalf("sh with %q: %v", v, err)
		}
		if string(out) != v {
			t.Errorf("Env(%q) read back as %q", v, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("a quoted value ran a command")
	}
}
