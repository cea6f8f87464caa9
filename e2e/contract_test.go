//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// contractTemplate is example.pkr.hcl's shape on the harness: the payload (a Django app from git
// with a secret from SSM and one from Secrets Manager) and the stack with first_boot wired to the
// payload's needs, baked over SSH onto a machine of the plain base image. The user data Packer
// renders is written to outFile, so the instance boots exactly what a launch template would get.
func contractTemplate(motoURL, outFile string) string {
	return `
data "wsgi-cloudinit" "shop" {
  wsgi_app               = "mysite.wsgi:application"
  framework              = "django"
  django_settings_module = "mysite.settings"
  source {
    git_url = "` + fixtureGit + `/shop.git"
    git_ref = "v1.0.0"
  }
  env = { DATABASE_PATH = "/var/lib/wsgi-app/db.sqlite3" }
  secrets = {
    DJANGO_SECRET_KEY = "ssm:/shop/prod/secret-key"
    DATABASE_URL      = "secretsmanager:prod/shop/db"
  }
  aws_endpoints = { ssm = "` + motoURL + `", secretsmanager = "` + motoURL + `" }
}
` + nullTemplate(`  provisioner "wsgi-stack" {
    gunicorn_source = "distro"
    first_boot      = data.wsgi-cloudinit.shop.needs
  }
  post-processor "shell-local" {
    inline = ["echo ${data.wsgi-cloudinit.shop.user_data_gzip_base64} | base64 -d | gunzip > `+outFile+`",
              "echo needs=${join(",", data.wsgi-cloudinit.shop.needs)}"]
  }`)
}

// TestImagePayloadContract proves the image/payload contract for real: a golden image baked from
// the plain base image (Debian's EC2 package set: no git) gets git only because first_boot asks
// for it; its stack tags name what it provides; an instance of it boots example.pkr.hcl's shape
// (git source, secrets from SSM and Secrets Manager read with the role from the metadata
// service), and another boots a Django app from an s3:// archive; each app reads its secrets
// back, and no secret value is in any log, the journal, the user data or Packer's output.
func TestImagePayloadContract(t *testing.T) { harness.OnFirstRelease(t, testImagePayloadContract) }

func testImagePayloadContract(t *testing.T, release harness.Release) {
	ctx, log, repoRoot := begin(t, 30*time.Minute)
	scratch := t.TempDir()
	const region = "us-east-1" // the metadata service's region: the deploy finds it there
	moto, err := awsproxy.StartMoto(ctx, filepath.Join(scratch, "moto.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(moto.Close)
	motoURL, err := harness.Publish(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	secretKey := "ssm-S3CR3T-" + randomWord(t)
	databaseURL := `postgres://shop:sm-S3CR3T-` + randomWord(t) + `@db/shop?a="q"&b=$x`
	if err := moto.PutSecureString(ctx, region, "/shop/prod/secret-key", secretKey); err != nil {
		t.Fatal(err)
	}
	if _, err := moto.CreateSecret(ctx, region, "prod/shop/db", databaseURL); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(scratch, "shop.tar.gz")
	archiveSHA := writeTarball(t, archive, djangoFiles)
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := moto.PutObject(ctx, region, "shop-releases", "shop/v1.0.0.tar.gz", data); err != nil {
		t.Fatal(err)
	}

	img, err := harness.BaseImage(ctx, release, log)
	if err != nil {
		t.Fatal(err)
	}
	pb, pub := newPackerRun(ctx, t, repoRoot, scratch)
	build := boot(ctx, t, harness.BootOptions{Image: img, Name: "ct-bake", UserData: harness.SSHUserData("packer", pub), WorkDir: scratch, Log: log})
	if out, _, err := build.Exec(ctx, "sh", "-c", "command -v git"); err == nil {
		t.Fatalf("the base image has git (%s): it must match Debian's EC2 image, which has none", strings.TrimSpace(out))
	}
	userDataFile := filepath.Join(scratch, "user-data")
	out, took, err := pb.build(ctx, "contract-bake", build.IP(), contractTemplate(motoURL, userDataFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "needs=aws-requests,git,schema-1") {
		t.Errorf("packer output lacks the payload's needs:\n%s", out)
	}
	t.Logf("CHECK bake of the plain base image with first_boot = data.wsgi-cloudinit.shop.needs: %v", took.Round(100*time.Millisecond))
	gitPath := mustExec(ctx, t, build, "sh", "-c", "command -v git")
	stackFile := mustExec(ctx, t, build, "cat", contract.StackFile)
	tags, err := contract.Tags([]byte(stackFile + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := contract.Fits([]string{"schema-1", "git", "aws-requests"}, "the golden image", tags); err != nil {
		t.Errorf("the baked stack does not provide what the payload needs: %v", err)
	}
	t.Logf("CHECK git baked by first_boot at %s; the AMI tags would say %s=%q", gitPath, contract.TagProvides, tags[contract.TagProvides])
	installFixtures(t, build.Root())
	golden := filepath.Join(scratch, "golden-contract.tar.zst")
	if err := build.Snapshot(ctx, golden); err != nil {
		t.Fatal(err)
	}
	build.Close()

	gitUserData, err := os.ReadFile(userDataFile)
	if err != nil {
		t.Fatal(err)
	}
	s3Payload, err := cloudinit.Render(cloudinit.App{
		Source:               cloudinit.Source{S3URI: "s3://shop-releases/shop/v1.0.0.tar.gz", SHA256: archiveSHA},
		WSGIApp:              "mysite.wsgi:application",
		Framework:            cloudinit.FrameworkDjango,
		DjangoSettingsModule: "mysite.settings",
		Env:                  map[string]string{"DATABASE_PATH": "/var/lib/wsgi-app/db.sqlite3"},
		Secrets:              map[string]string{"DJANGO_SECRET_KEY": "ssm:/shop/prod/secret-key", "DATABASE_URL": "secretsmanager:prod/shop/db"},
		AWSEndpoints:         map[string]string{"s3": motoURL, "ssm": motoURL, "secretsmanager": motoURL},
	})
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"DJANGO_SECRET_KEY": secretKey, "DATABASE_URL": databaseURL}
	for _, c := range []struct {
		name     string
		userData []byte
	}{
		{"ct-git", gitUserData},
		{"ct-s3", s3Payload.UserData},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := boot(ctx, t, harness.BootOptions{Image: golden, Name: c.name, UserData: c.userData, WorkDir: scratch, Log: log})
			checkServing(ctx, t, m, "users=0")
			_, body, _ := get(ctx, t, "http://"+m.IP()+"/secrets")
			for name, value := range secrets {
				sum := sha256.Sum256([]byte(value))
				if want := name + "=" + hex.EncodeToString(sum[:]); !strings.Contains(body, want) {
					t.Errorf("the app did not read %s back unchanged: %q, want %q", name, body, want)
				}
			}
			mode := mustExec(ctx, t, m, "stat", "-c", "%a %U:%G", "/etc/wsgi/wsgi.env")
			if mode != "640 root:wsgi" {
				t.Errorf("/etc/wsgi/wsgi.env is %s, want 640 root:wsgi", mode)
			}
			checkNoSecretInLogs(ctx, t, m, secrets)
			var tokens, creds int
			for _, call := range m.IMDS().Calls() {
				switch {
				case strings.Contains(call.String(), "api/token"):
					tokens++
				case strings.Contains(call.String(), "security-credentials/"):
					creds++
				}
			}
			if tokens == 0 || creds == 0 {
				t.Errorf("the deploy did not use IMDSv2 role credentials: %d token and %d credential requests", tokens, creds)
			}
			t.Logf("CHECK %s: both secrets read back by the app, wsgi.env %s, IMDSv2: %d token and %d credential requests, no secret in any log",
				c.name, mode, tokens, creds)
		})
	}
	for name, value := range secrets {
		if strings.Contains(out, value) || strings.Contains(string(gitUserData), value) {
			t.Errorf("the value of %s is in Packer's output or the user data", name)
		}
	}
}

// checkNoSecretInLogs greps every log on the machine, the journal and cloud-init's copies of the
// user data for each secret value: a value may only be in the app's environment file.
func checkNoSecretInLogs(ctx context.Context, t *testing.T, m *harness.Machine, secrets map[string]string) {
	t.Helper()
	journal := mustExec(ctx, t, m, "journalctl", "-o", "cat", "--no-pager")
	for name, value := range secrets {
		if strings.Contains(journal, value) {
			t.Errorf("the value of %s is in the journal", name)
		}
		out, _, _ := m.Exec(ctx, "grep", "-rlF", "--", value, "/var/log", "/var/lib/cloud", "/run/cloud-init", "/etc", "/srv/wsgi", "/tmp", "/var/tmp")
		if files := strings.Fields(out); len(files) != 1 || files[0] != "/etc/wsgi/wsgi.env" {
			t.Errorf("the value of %s is in %q; it may only be in /etc/wsgi/wsgi.env", name, files)
		}
	}
}

func randomWord(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}
