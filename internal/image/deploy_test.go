package image

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deployCases are the deploy scripts kept under testdata/deploy-<name>/wsgi-deploy.
func deployCases() map[string]struct {
	s Stack
	p DeployParams
} {
	base := DeployParams{Retries: 5, TimeoutSeconds: 300, HealthTimeoutSeconds: 120, RequirementsFile: "requirements.txt"}
	git := base
	git.Source = DeploySource{Kind: SourceGit, URL: "https://git.example.com/shop.git", Ref: "v1.2.0"}
	git.Django, git.DjangoManagePy = true, "manage.py"
	git.HooksBeforeSwitch = []string{"python manage.py check --deploy", "echo 'it''s quoted'"}
	git.HooksAfterSwitch = []string{"touch /var/lib/wsgi-app/switched"}

	tarball := base
	tarball.Source = DeploySource{Kind: SourceTarball, URL: "http://127.0.0.1:8080/app.tar.gz", SHA256: strings.Repeat("ab", 32)}
	tarball.RequirementsFile, tarball.RequirementsRequired = "requirements/prod.txt", true
	tarball.ConstraintsFile = "constraints.txt"
	tarball.PipIndexURL = "http://127.0.0.1:8000/simple/"
	tarball.PipExtraIndexURLs = []string{"https://extra.example.com/simple/"}

	s3 := base
	s3.Source = DeploySource{Kind: SourceS3, URL: "s3://releases-bucket/shop/app.tar.gz"}
	s3.Secrets = []DeploySecret{
		{Name: "DATABASE_URL", Store: SecretSecretsManager, ID: "prod/shop/db"},
		{Name: "SECRET_KEY", Store: SecretSSM, ID: "/prod/shop/secret-key"},
	}
	s3.PipNoIndex, s3.PipFindLinks = true, []string{"/opt/wheelhouse"}
	s3.AWSRegion = "eu-west-1"

	distro := Stack{GunicornSource: GunicornFromDistro, Sockets: 2, ListenPort: 8080, HealthPath: "/-/health"}.WithDefaults()
	imds := s3
	imds.AWSRegion = ""
	return map[string]struct {
		s Stack
		p DeployParams
	}{
		"git-django":         {Default(), git},
		"tarball-pip":        {Default(), tarball},
		"s3-secrets":         {Default(), s3},
		"distro-imds-region": {distro, imds},
	}
}

func TestRenderDeployGolden(t *testing.T) {
	for name, c := range deployCases() {
		t.Run(name, func(t *testing.T) {
			got, err := RenderDeploy(c.s, c.p)
			if err != nil {
				t.Fatalf("RenderDeploy: %v", err)
			}
			again, _ := RenderDeploy(c.s, c.p)
			if !bytes.Equal(got, again) {
				t.Fatal("two renders of the same inputs differ")
			}
			golden := filepath.Join("testdata", "deploy-"+name, "wsgi-deploy")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./templates -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("deploy script differs from %s (go test ./templates -update rewrites it):\n%s", golden, got)
			}
		})
	}
}

// TestRenderDeployContract checks the on-instance contract in the script: paths and units
// from the Stack, the order of the steps, and what the failure path undoes.
func TestRenderDeployContract(t *testing.T) {
	c := deployCases()["git-django"]
	out, err := RenderDeploy(c.s, c.p)
	if err != nil {
		t.Fatal(err)
	}
	script := string(out)
	order := []string{
		"PHASE=preflight", "PHASE=environment", "install -m 0640 -o root -g wsgi \"$WORK/env\" /etc/wsgi/wsgi.env",
		"PHASE=fetch", "PHASE=release", "/opt/wsgi/venv/bin/python -m venv \"$REL/.venv\"",
		"manage.py migrate --noinput", "manage.py collectstatic --noinput", "PHASE='hooks_before_switch[0]'",
		"ln -sfn \"$REL\" /srv/wsgi/.current.new", "mv -T /srv/wsgi/.current.new /srv/wsgi/current",
		"PHASE='hooks_after_switch[0]'", "systemctl enable --now --quiet wsgi.target",
		"systemctl reload-or-restart nginx", "URL=http://127.0.0.1:80/healthz", "/run/wsgi/app-3.sock",
		"> /var/lib/wsgi/deployed",
	}
	at := 0
	for _, step := range order {
		step = strings.ReplaceAll(step, "> /var", ">/var")
		i := strings.Index(script[at:], step)
		if i < 0 {
			t.Fatalf("step %q missing or out of order in the deploy script", step)
		}
		at += i + len(step)
	}
	for _, want := range []string{
		"set -Eeuo pipefail",
		"systemctl disable --now --quiet wsgi.target wsgi@1.socket wsgi@2.socket wsgi@3.socket || true",
		"logger -p user.err -t wsgi-deploy",
		"LOG=/var/log/wsgi-deploy.log",
		"runuser -u wsgi --",
		`as_app 'echo '\''it'\'''\''s quoted'\''' || die`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("deploy script lacks %q", want)
		}
	}
	if strings.Contains(script, " aws ") {
		t.Error("a git source without secrets must not call the AWS CLI")
	}
}

func TestRenderDeployRejects(t *testing.T) {
	if _, err := RenderDeploy(Default(), DeployParams{Source: DeploySource{Kind: "ftp"}}); err == nil || !strings.Contains(err.Error(), `"ftp"`) {
		t.Errorf("unknown source kind: got %v", err)
	}
	p := DeployParams{Source: DeploySource{Kind: SourceGit}, Secrets: []DeploySecret{{Name: "X", Store: "vault"}}}
	if _, err := RenderDeploy(Default(), p); err == nil || !strings.Contains(err.Error(), "secret X") {
		t.Errorf("unknown secret store: got %v", err)
	}
	if _, err := RenderDeploy(Stack{}, DeployParams{Source: DeploySource{Kind: SourceGit}}); err == nil || !strings.Contains(err.Error(), "sockets:") {
		t.Errorf("invalid stack: got %v", err)
	}
}

func TestQuoteRoundTrip(t *testing.T) {
	sh := requireTool(t, "sh")
	for _, v := range []string{"", "plain", "it's", "''", `a"b$c\d`, "two\nlines", "$(id) `id`", `trailing\`, `$HOME "x" 'y'`} {
		for name, q := range map[string]func(string) string{"ShellQuote": ShellQuote, "EnvQuote": EnvQuote} {
			out, err := exec.Command(sh, "-c", "printf '%s' "+q(v)).Output()
			if err != nil {
				t.Fatalf("sh: %v", err)
			}
			if string(out) != v {
				t.Errorf("%s(%q) reads back in sh as %q", name, v, out)
			}
		}
	}
	env := RenderEnvFile([]EnvVar{{"B", `it's "$x"`}, {"A", "x y"}})
	if want := "A=\"x y\"\nB=\"it's \\\"\\$x\\\"\"\n"; !strings.HasSuffix(string(env), want) {
		t.Errorf("RenderEnvFile:\n%s\nwant it to end with\n%s", env, want)
	}
}

// TestValidatorsDeployScript runs bash -n and, when present, shellcheck on every golden case.
func TestValidatorsDeployScript(t *testing.T) {
	bash := requireTool(t, "bash")
	for name, c := range deployCases() {
		t.Run(name, func(t *testing.T) {
			out, err := RenderDeploy(c.s, c.p)
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "wsgi-deploy")
			writeFile(t, f, out, 0o755)
			if msg, err := exec.Command(bash, "-n", f).CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v\n%s", err, msg)
			}
			if sc, err := exec.LookPath("shellcheck"); err == nil {
				if msg, err := exec.Command(sc, "-s", "bash", f).CombinedOutput(); err != nil {
					t.Fatalf("shellcheck: %v\n%s", err, msg)
				}
			} else {
				t.Log("shellcheck not found: only bash -n ran")
			}
		})
	}
}

// TestValidatorsDeployScriptCatchesErrors proves bash -n can fail here.
func TestValidatorsDeployScriptCatchesErrors(t *testing.T) {
	bash := requireTool(t, "bash")
	f := filepath.Join(t.TempDir(), "broken")
	writeFile(t, f, []byte("#!/bin/bash\nif true; then\n"), 0o755)
	if err := exec.Command(bash, "-n", f).Run(); err == nil {
		t.Fatal("bash -n accepted a script with an unclosed if")
	}
}
