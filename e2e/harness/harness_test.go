package harness

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// These tests need neither root nor the machine tools: they cover what the
// harness computes. The machines themselves are tested by the e2e package.

func TestSSHUserData(t *testing.T) {
	ud := SSHUserData("packer", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample wsgi-e2e\n")
	if !strings.HasPrefix(string(ud), "#cloud-config\n") {
		t.Fatalf("user data must start with #cloud-config, got %q", ud[:20])
	}
	var doc struct {
		Users []struct {
			Name       string   `yaml:"name"`
			Groups     []string `yaml:"groups"`
			Sudo       string   `yaml:"sudo"`
			LockPasswd bool     `yaml:"lock_passwd"`
			Keys       []string `yaml:"ssh_authorized_keys"`
		} `yaml:"users"`
		SSHPwauth bool       `yaml:"ssh_pwauth"`
		Runcmd    [][]string `yaml:"runcmd"`
	}
	if err := yaml.Unmarshal(ud, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Users) != 1 {
		t.Fatalf("users: got %d, want 1", len(doc.Users))
	}
	u := doc.Users[0]
	if u.Name != "packer" || u.Sudo != "ALL=(ALL) NOPASSWD:ALL" || !u.LockPasswd || !slices.Contains(u.Groups, "sudo") {
		t.Errorf("user: got %+v", u)
	}
	if want := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample wsgi-e2e"}; !slices.Equal(u.Keys, want) {
		t.Errorf("keys: got %q, want %q (trimmed)", u.Keys, want)
	}
	if doc.SSHPwauth {
		t.Error("ssh_pwauth: got true, want false")
	}
	if len(doc.Runcmd) != 1 || !slices.Equal(doc.Runcmd[0], []string{"systemctl", "enable", "--now", "ssh.service"}) {
		t.Errorf("runcmd: got %q", doc.Runcmd)
	}

	// The real validator, where the host has it.
	if _, err := exec.LookPath("cloud-init"); err != nil {
		t.Log("cloud-init not installed: schema check skipped")
		return
	}
	f := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(f, ud, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cloud-init", "schema", "--config-file", f).CombinedOutput(); err != nil {
		t.Errorf("cloud-init schema: %v\n%s", err, out)
	}
}

func TestNewSSHKey(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := NewSSHKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(priv)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode: got %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(priv)
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatalf("private key does not parse: %v", err)
	}
	authorized, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		t.Fatalf("public line does not parse: %v", err)
	}
	if authorized.Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type: got %s, want ed25519", authorized.Type())
	}
	if string(authorized.Marshal()) != string(signer.PublicKey().Marshal()) {
		t.Error("public line does not match the private key")
	}
	onDisk, _ := os.ReadFile(priv + ".pub")
	if strings.TrimSpace(string(onDisk)) != pub {
		t.Errorf("%s: got %q, want %q", priv+".pub", onDisk, pub)
	}
}

func TestWriteSeed(t *testing.T) {
	root := t.TempDir()
	ud := []byte("#cloud-config\n{}\n")
	if err := writeSeed(root, ud, "i-0123: odd", "web-1"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(root, seedDir, "user-data"))
	if string(got) != string(ud) {
		t.Errorf("user-data: got %q, want %q", got, ud)
	}
	var meta map[string]string
	b, _ := os.ReadFile(filepath.Join(root, seedDir, "meta-data"))
	if err := yaml.Unmarshal(b, &meta); err != nil {
		t.Fatalf("meta-data is not YAML: %v\n%s", err, b)
	}
	if meta["instance-id"] != "i-0123: odd" || meta["local-hostname"] != "web-1" {
		t.Errorf("meta-data: got %v", meta)
	}
}

func TestParseLease(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", ""},
		{"one", "1795868664 2e:0f:9a:89:0a:9b 10.213.7.46 hx1 ff:68:35\n", "10.213.7.46"},
		{"no hostname", "1795868664 2e:0f:9a:89:0a:9b 10.213.7.9 * *\n", "10.213.7.9"},
		{"ipv6 only", "1795868664 2e:0f:9a:89:0a:9b fd00::5 * *\n", ""},
		{"garbage", "duid 00:01:00:01\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseLease(tc.in); got != tc.want {
				t.Errorf("parseLease(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestImageSpecKey(t *testing.T) {
	base := newImageSpec(Release{}, nil)
	if base.key() != newImageSpec(DefaultRelease, nil).key() {
		t.Error("the zero Release is not DefaultRelease")
	}
	if base.key() == newImageSpec(Bookworm, nil).key() {
		t.Error("another release did not change the key")
	}
	a := newImageSpec(Trixie, []ImageOption{WithPackages("nginx", "wrk")})
	b := newImageSpec(Trixie, []ImageOption{WithPackages("wrk"), WithPackages("nginx", "curl")})
	if a.key() != b.key() {
		t.Error("package order or duplicates changed the key")
	}
	if a.key() == base.key() {
		t.Error("extra packages did not change the key")
	}
	if again := newImageSpec(Trixie, []ImageOption{WithPackages(testAppPackages...)}); again.key() != base.key() {
		t.Error("asking for packages the base already has changed the key")
	}
	if m := newImageSpec(Trixie, []ImageOption{WithMirror("http://mirror.example/debian", "")}); m.key() == base.key() {
		t.Error("another mirror did not change the key")
	}
	if c := newImageSpec(Trixie, []ImageOption{WithCacheDir("/elsewhere")}); c.key() != base.key() {
		t.Error("the cache folder changed the key")
	}

	for _, r := range []Release{Trixie, Bookworm} {
		args := newImageSpec(r, nil).mmdebstrapArgs("/out.tar.zst")
		include := ""
		for _, arg := range args {
			if v, ok := strings.CutPrefix(arg, "--include="); ok {
				include = v
			}
		}
		pkgs := strings.Split(include, ",")
		// What Debian's EC2 image has, and what the tests' apps cannot install in nspawn.
		for _, p := range []string{"systemd", "cloud-init", "locales", "openssh-server", "sudo", "curl", "ca-certificates",
			"awscli", "python3-flask", "python3-django"} {
			if !slices.Contains(pkgs, p) {
				t.Errorf("%s: --include lacks %s: %s", r, p, include)
			}
		}
		// What Debian's EC2 image does not have: a test must get it through the product.
		for _, p := range []string{"git", "nginx", "nginx-light", "gunicorn", "python3-gunicorn"} {
			if slices.Contains(pkgs, p) {
				t.Errorf("%s: --include has %s, which Debian's EC2 image lacks: %s", r, p, include)
			}
		}
		tail := args[len(args)-5:]
		want := []string{
			r.Suite, "/out.tar.zst",
			"deb http://deb.debian.org/debian " + r.Suite + " main",
			"deb http://deb.debian.org/debian " + r.Suite + "-updates main",
			"deb http://deb.debian.org/debian-security " + r.Suite + "-security main",
		}
		if os.Getenv("WSGI_E2E_MIRROR") == "" && os.Getenv("WSGI_E2E_SECURITY_MIRROR") == "" && !slices.Equal(tail, want) {
			t.Errorf("%s: suite, output and sources: got %q, want %q", r, tail, want)
		}
		if n := strings.Count(strings.Join(args, "\n"), "--customize-hook="); n != len(imageHooks) {
			t.Errorf("%s: customize hooks: got %d, want %d", r, n, len(imageHooks))
		}
	}
}

func TestParseReleases(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"", "trixie", ""},
		{"  ", "trixie", ""},
		{"bookworm", "bookworm", ""},
		{"trixie bookworm", "trixie,bookworm", ""},
		{"bookworm,trixie,bookworm", "bookworm,trixie", ""},
		{"trixie sid", "", `WSGI_E2E_RELEASES: release "sid": want one of trixie, bookworm`},
	} {
		got, err := parseReleases(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("parseReleases(%q): error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseReleases(%q): %v", tc.in, err)
			continue
		}
		var names []string
		for _, r := range got {
			names = append(names, r.Suite)
		}
		if strings.Join(names, ",") != tc.want {
			t.Errorf("parseReleases(%q) = %v, want %s", tc.in, names, tc.want)
		}
	}
}

func TestNames(t *testing.T) {
	if got := ifName("wsgi-abcdef"); got != "ve-wsgi-abcdef" || len(got) > 15 {
		t.Errorf("ifName: got %q (link names are at most 15 bytes)", got)
	}
	if got := nftTable("wsgi-build"); got != "wsgi_e2e_wsgi_build" {
		t.Errorf("nftTable: got %q", got)
	}
	for _, name := range []string{"wsgi-abcdef", "a", "x23456789012"} {
		if !nameRE.MatchString(name) {
			t.Errorf("name %q rejected", name)
		}
		if len(ifName(name)) > 15 {
			t.Errorf("name %q accepted but ve-%s is too long for a link", name, name)
		}
	}
	for _, name := range []string{"", "x234567890123", "Web", "a_b", "-a"} {
		if nameRE.MatchString(name) {
			t.Errorf("name %q accepted", name)
		}
	}
}

func TestBootRejectsBadOptions(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts BootOptions
		want string
	}{
		{"neither image nor root", BootOptions{}, "set exactly one of Image and RootDir"},
		{"both image and root", BootOptions{Image: "a.tar.zst", RootDir: "/r"}, "set exactly one of Image and RootDir"},
		{"bad name", BootOptions{Image: "a.tar.zst", Name: "Way-too-long-name"}, `name "Way-too-long-name": must be`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Boot(ctx, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Boot: got %v, want an error containing %q", err, tc.want)
			}
			if m != nil {
				t.Error("Boot returned a machine with its error")
			}
		})
	}
}

func TestPackerEnv(t *testing.T) {
	t.Setenv("PACKER_PLUGIN_PATH", "/home/someone/.packer.d/plugins")
	t.Setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
	dir := t.TempDir()
	env := PackerEnv(dir)
	got := map[string][]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = append(got[k], v)
	}
	for k, want := range map[string]string{
		"PACKER_CHECKPOINT_DISABLE": "1",
		"PACKER_CONFIG_DIR":         filepath.Join(dir, "config"),
		"PACKER_PLUGIN_PATH":        filepath.Join(dir, "plugins"),
		"PACKER_CACHE_DIR":          filepath.Join(dir, "cache"),
	} {
		if !slices.Equal(got[k], []string{want}) {
			t.Errorf("%s: got %q, want exactly [%q]", k, got[k], want)
		}
		if k != "PACKER_CHECKPOINT_DISABLE" {
			if st, err := os.Stat(want); err != nil || !st.IsDir() {
				t.Errorf("%s: folder %s not created", k, want)
			}
		}
	}
	if _, ok := got["SSH_AUTH_SOCK"]; ok {
		t.Error("SSH_AUTH_SOCK kept: packer would offer the agent's keys")
	}
	if _, ok := got["PATH"]; !ok {
		t.Error("PATH dropped: the environment must be kept apart from Packer's keys")
	}
}

// useStateDir points the harness's host-wide state at a folder of the test's.
func useStateDir(t *testing.T) {
	old := StateDir
	StateDir = t.TempDir()
	t.Cleanup(func() { StateDir = old })
}

func TestClaimName(t *testing.T) {
	useStateDir(t)
	if err := claimName("wsgi-a"); err != nil {
		t.Fatal(err)
	}
	err := claimName("wsgi-a")
	if want := "name wsgi-a: in use by the machine of process " + strconv.Itoa(os.Getpid()); err == nil || err.Error() != want {
		t.Errorf("second claim: got %v, want %q", err, want)
	}
	if err := claimName("wsgi-b"); err != nil {
		t.Errorf("another name: %v", err)
	}
	removeState("wsgi-a")
	if err := claimName("wsgi-a"); err != nil {
		t.Errorf("claim after release: %v", err)
	}
}

func TestReapStale(t *testing.T) {
	useStateDir(t)
	// A PID that surely belongs to no live process any more.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	leftDir := filepath.Join(t.TempDir(), "wsgi-e2e-wsgi-dead-123")
	if err := os.MkdirAll(filepath.Join(leftDir, "root", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(s machineState) {
		t.Helper()
		b, _ := json.Marshal(s)
		_ = os.MkdirAll(filepath.Join(StateDir, "machines"), 0o755)
		if err := os.WriteFile(stateFile(s.Name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(machineState{Name: "wsgi-dead", Owner: dead.Process.Pid, OwnerStart: "1", Link: "ve-wsgi-dead", Table: "wsgi_e2e_wsgi_dead", Dir: leftDir})
	liveDir := filepath.Join(t.TempDir(), "wsgi-e2e-wsgi-live-456")
	_ = os.MkdirAll(liveDir, 0o755)
	write(machineState{Name: "wsgi-live", Owner: os.Getpid(), OwnerStart: procStart(os.Getpid()), Dir: liveDir})

	reapStale(nil)

	if _, err := os.Stat(leftDir); !os.IsNotExist(err) {
		t.Errorf("dead machine's folder: got %v, want removed", err)
	}
	if _, err := os.Stat(stateFile("wsgi-dead")); !os.IsNotExist(err) {
		t.Errorf("dead machine's state file: got %v, want removed", err)
	}
	if _, err := os.Stat(liveDir); err != nil {
		t.Errorf("live machine's folder: %v, want kept", err)
	}
	if _, err := os.Stat(stateFile("wsgi-live")); err != nil {
		t.Errorf("live machine's state file: %v, want kept", err)
	}
}
