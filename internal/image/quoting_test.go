package image

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template/parse"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// scriptTemplates are the shell scripts of the image: every value in them goes through q or qs.
var scriptTemplates = []string{"install.sh.tmpl", "hygiene.sh.tmpl", "deploy.sh.tmpl"}

// unquotedOK are the only values a script may print without q: numbers, and names and commands
// that come from this package's own constants and distribution table, never from a user.
var unquotedOK = []string{
	".Sockets", ".ListenPort", ".SchemaVersion", ".ModeString", ".TargetUnit", ".AppFile", ".AWSHelper", ".MigrateHelper",
	".Distro.Tool", ".Distro.Installed", ".Distro.Install", ".Distro.Clean", ".Distro.List", ".Distro.Remove",
}

// TestScriptTemplatesQuoteEveryValue walks the parse tree of each shell template: an action that
// prints a value must end in q or qs, unless the value is one of unquotedOK. A new template line
// with a bare {{.Field}} fails here, before any hostile value can reach it.
func TestScriptTemplatesQuoteEveryValue(t *testing.T) {
	for _, name := range scriptTemplates {
		tmpl := parsed.Lookup(name)
		if tmpl == nil {
			t.Fatalf("no template %s", name)
		}
		checked := 0
		var walk func(n parse.Node)
		walk = func(n parse.Node) {
			switch n := n.(type) {
			case *parse.ListNode:
				if n == nil {
					return
				}
				for _, c := range n.Nodes {
					walk(c)
				}
			case *parse.IfNode:
				walk(n.List)
				walk(n.ElseList)
			case *parse.RangeNode:
				walk(n.List)
				walk(n.ElseList)
			case *parse.WithNode:
				walk(n.List)
				walk(n.ElseList)
			case *parse.ActionNode:
				checked++
				if len(n.Pipe.Decl) > 0 {
					return // an assignment prints nothing
				}
				last := n.Pipe.Cmds[len(n.Pipe.Cmds)-1]
				if id, ok := last.Args[0].(*parse.IdentifierNode); ok && (id.Ident == "q" || id.Ident == "qs") {
					return
				}
				if len(last.Args) == 1 && slices.Contains(unquotedOK, last.Args[0].String()) {
					return
				}
				t.Errorf("%s: %s prints a value without q or qs", name, n)
			}
		}
		walk(tmpl.Tree.Root)
		if checked == 0 {
			t.Errorf("%s: no action checked", name)
		}
	}
}

// hostileValue is what a user could write in any stack field: each character that means
// something to sh, and commands that must never run.
const hostileValue = `x;touch PWNED&touch PWNED|touch PWNED $(touch PWNED) ` + "`touch PWNED`" + ` "'\''" $HOME
touch PWNED`

// TestInstallScriptHostileValues renders the install script from a Stack with a hostile value in
// every string field (Validate would refuse them; this is the layer behind it), runs it under sh
// with stand-in commands that record their arguments, and asserts that nothing ran that should not
// and that each value reached its command as one unchanged argument.
func TestInstallScriptHostileValues(t *testing.T) {
	sh := requireTool(t, "sh")
	grep := requireTool(t, "grep")
	dir := t.TempDir()
	root := filepath.Join(dir, "root "+hostileValue) // the absolute paths live below here
	s := Default()
	s.AppName, s.User, s.Group = hostileValue, hostileValue, hostileValue+"g"
	s.GunicornVersion, s.PipIndexURL, s.PipFindLinks = hostileValue+"v", hostileValue+"i", hostileValue+"f"
	s.ExtraPackages = []string{hostileValue}
	s.ServerName, s.ClientMaxBodySize, s.HealthPath, s.StaticURL = hostileValue, hostileValue, hostileValue, hostileValue
	s.VenvDir, s.SrvDir, s.EtcDir = root+"/venv", root+"/srv", root+"/etc"
	s.RunDir, s.ShareDir = root+"/run", root+"/share"
	s.Python = root + "/python"
	s.Requirements, s.WheelhouseDir, s.BuildPackages = hostileValue, root+"/wheelhouse", []string{hostileValue + "b"}
	b := Render(s)

	// Stand-ins: each records its name and arguments, NUL-separated, one call a line.
	bin := filepath.Join(dir, "bin")
	log := filepath.Join(dir, "calls")
	stub := "#!/bin/sh\n{ printf '%s\\0' \"${0##*/}\" \"$@\"; printf '\\n'; } >>\"$CALLS\"\n"
	for _, name := range []string{"apt-get", "dpkg-query", "getent", "groupadd", "useradd", "id", "install", "systemctl", "nginx", "rm", "python",
		"sha256sum", "chmod", "cat", "sed"} {
		writeFile(t, filepath.Join(bin, name), []byte(stub+"exit 0\n"), 0o755)
	}
	for name, real := range map[string]string{"grep": grep, "sort": requireTool(t, "sort"), "tr": requireTool(t, "tr")} {
		if err := os.Symlink(real, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(s.WheelhouseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Neither the app's user nor its group exist yet; NGINX's group does.
	writeFile(t, filepath.Join(bin, "getent"), []byte(stub+"[ \"$2\" = www-data ]\n"), 0o755)
	writeFile(t, filepath.Join(bin, "id"), []byte(stub+"exit 1\n"), 0o755)
	// No unit is enabled yet.
	writeFile(t, filepath.Join(bin, "systemctl"), []byte(stub+"[ \"$1\" != is-enabled ]\n"), 0o755)
	// dpkg-query finds nothing installed, so apt-get installs every package.
	writeFile(t, filepath.Join(bin, "dpkg-query"), []byte(stub+"exit 1\n"), 0o755)
	// The venv's python answers the version check with another version, so pip runs.
	if err := os.MkdirAll(filepath.Join(s.VenvDir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, s.VenvPython(), []byte(stub+"echo 0.0\n"), 0o755)
	// The staged request signer, which the script starts once with the system's python3.
	writeFile(t, filepath.Join(dir, "stage", contract.AWSHelper), awsHelper, 0o755)
	writeFile(t, filepath.Join(dir, "stage", MigrateHelper), migrateHelper, 0o644)
	script := filepath.Join(dir, "install.sh")
	writeFile(t, script, b.InstallScript, 0o644)

	cmd := exec.Command(sh, script, filepath.Join(dir, "stage"))
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + bin, "CALLS=" + log}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh with hostile values: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "PWNED")); err == nil {
		t.Fatal("a hostile value ran a command")
	}
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	for _, line := range bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\x00\n")) {
		calls = append(calls, strings.Split(string(line), "\x00"))
	}
	called := func(name string, args ...string) bool {
		for _, c := range calls {
			if c[0] != name {
				continue
			}
			ok := true
			for _, a := range args {
				ok = ok && slices.Contains(c[1:], a)
			}
			if ok {
				return true
			}
		}
		return false
	}
	for _, want := range []struct {
		name string
		args []string
	}{
		{"groupadd", []string{"--system", s.Group}},
		{"useradd", []string{"--gid", s.Group, "--home-dir", s.SrvDir, s.User}},
		{"install", []string{"-d", s.SrvDir, s.ReleasesDir(), s.ShareDir, DeployStateDir}},
		{"install", []string{"-d", "-g", s.Group, s.EtcDir}},
		{"install", []string{"-o", s.User, "-g", s.Group, AppStateDir}},
		{"python", []string{"-m", "pip", "install", "--index-url", s.PipIndexURL, "--find-links", s.PipFindLinks, "gunicorn==" + s.GunicornVersion}},
		{"install", []string{"-D", "-g", s.Group, s.GunicornConfig()}},
		{"apt-get", []string{"install", "build-essential", "python3-dev"}}, // package names are one word each after validation
		{"python", []string{"-m", "pip", "wheel", "--index-url", s.PipIndexURL, "--find-links", s.PipFindLinks, "--wheel-dir", s.WheelhouseDir,
			"-r", filepath.Join(dir, "stage") + s.WheelhouseRequirements()}},
		{"python", []string{"-m", "pip", "install", "--dry-run", "--no-index", "--find-links", s.WheelhouseDir, "-r", filepath.Join(dir, "stage", "requirements-nohash.txt")}},
		{"install", []string{"-D", s.WheelhouseRequirements()}},
		{"rm", []string{"-f", "/etc/nginx/sites-enabled/default"}},
		{"systemctl", []string{"restart", "nginx"}},
	} {
		if !called(want.name, want.args...) {
			t.Errorf("no call %s with the arguments %q; calls:\n%q", want.name, want.args, calls)
		}
	}
}
