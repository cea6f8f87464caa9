//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/quote"
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

	t.Run("ct-release", func(t *testing.T) {
		releaseWithoutABake(ctx, t, pb, moto, motoURL, golden, []byte(stackFile+"\n"), scratch, log)
	})
}

// releaseTemplate is release.pkr.hcl's shape against moto: the newest golden image of the family
// (wsgi-golden-image), release 2 of the app from S3 (wsgi-cloudinit), the null builder, and a new
// launch-template version (wsgi-launch-template), whose fit check reads the image's stack tags.
const releaseTemplate = `
# packerRun passes these; a release needs no machine.
variable "host" { type = string }
variable "key"  { type = string }

data "wsgi-golden-image" "shop" {
  region              = "us-east-1"
  custom_endpoint_ec2 = %[1]q
  family              = "shop"
}

data "wsgi-cloudinit" "shop" {
  wsgi_app               = "mysite.wsgi:application"
  framework              = "django"
  django_settings_module = "mysite.settings"
  source {
    s3_uri = "s3://shop-releases/shop/v2.0.0.tar.gz"
    sha256 = %[3]q
  }
  env = { DATABASE_PATH = "/var/lib/wsgi-app/db.sqlite3", RELEASE = "2" }
  secrets = { DJANGO_SECRET_KEY = "ssm:/shop/prod/secret-key" }
  aws_endpoints = { s3 = %[2]q, ssm = %[2]q }
}

source "null" "release" { communicator = "none" }

build {
  sources = ["source.null.release"]
  post-processor "wsgi-launch-template" {
    region               = "us-east-1"
    custom_endpoint_ec2  = %[1]q
    launch_template_name = "shop"
    ami_ids              = data.wsgi-golden-image.shop.ami_ids
    user_data            = data.wsgi-cloudinit.shop.user_data_gzip_base64
    user_data_encoding   = "gzip+base64"
  }
}
`

// releaseWithoutABake stands the golden image up in moto as the bake's AMI (tagged from the baked
// stack file, as wsgi-ami tags it), ships release 2 through the real packer with no builder doing
// anything on AWS, reads the new launch-template version back and boots the golden image with its
// user data: release 2 must serve.
func releaseWithoutABake(ctx context.Context, t *testing.T, pb *packerRun, moto *awsproxy.Moto, motoURL, golden string, stackFile []byte, scratch string, log testLog) {
	const region = "us-east-1"
	a := awscfg.AccessConfig{Region: region, AccessKey: "testing", SecretKey: "testing", CustomEndpointEC2: moto.URL}
	if errs := a.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	cfg, err := a.Config(ctx, region)
	if err != nil {
		t.Fatal(err)
	}
	ec2c := a.NewEC2(cfg)
	imgs, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, MaxResults: aws.Int32(5)})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("moto's Amazon images: %v", err)
	}
	ri, err := ec2c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: imgs.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1), InstanceType: ec2types.InstanceTypeT3Micro})
	if err != nil {
		t.Fatal(err)
	}
	stackTags, err := contract.Tags(stackFile)
	if err != nil {
		t.Fatal(err)
	}
	tags := []ec2types.Tag{{Key: aws.String(awscfg.TagAMIFamily), Value: aws.String("shop")}}
	for k, v := range stackTags {
		tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	ci, err := ec2c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: ri.Instances[0].InstanceId, Name: aws.String("shop-golden"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: tags}}})
	if err != nil {
		t.Fatal(err)
	}
	ami := aws.ToString(ci.ImageId)
	lt, err := ec2c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("shop"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: imgs.Images[0].ImageId}})
	if err != nil {
		t.Fatal(err)
	}

	files := map[string]string{"release.txt": "2\n"}
	for k, v := range djangoFiles {
		files[k] = v
	}
	archive := filepath.Join(scratch, "shop-2.tar.gz")
	sum := writeTarball(t, archive, files)
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := moto.PutObject(ctx, region, "shop-releases", "shop/v2.0.0.tar.gz", data); err != nil {
		t.Fatal(err)
	}
	pb.env = append(pb.env, "AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	out, took, err := pb.build(ctx, "release-2", "unused", fmt.Sprintf(releaseTemplate, moto.URL, motoURL, sum))
	if err != nil {
		t.Fatal(err)
	}
	if want := ami + " provides what the payload needs (aws-requests, schema-1)"; !strings.Contains(out, want) {
		t.Errorf("packer's output does not say %q", want)
	}
	versions, err := ec2c.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId, Versions: []string{"$Latest"}})
	if err != nil || len(versions.LaunchTemplateVersions) != 1 {
		t.Fatalf("the new version: %v", err)
	}
	v := versions.LaunchTemplateVersions[0]
	if got := aws.ToString(v.LaunchTemplateData.ImageId); got != ami || aws.ToInt64(v.VersionNumber) != 2 {
		t.Fatalf("version %d launches %s, want version 2 with the golden image %s", aws.ToInt64(v.VersionNumber), got, ami)
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(v.LaunchTemplateData.UserData))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	userData, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CHECK release 2 without a bake: packer build %v, version 2 = %s (stack tags %s) + %d bytes of user data",
		took.Round(100*time.Millisecond), ami, stackTags[contract.TagDigest][:19], len(userData))
	m := boot(ctx, t, harness.BootOptions{Image: golden, Name: "ct-rel2", UserData: userData, WorkDir: scratch, Log: log})
	checkServing(ctx, t, m, "release=2")
	if got := mustExec(ctx, t, m, "cat", "/srv/wsgi/current/release.txt"); got != "2" {
		t.Errorf("the live release holds release.txt %q, want 2", got)
	}
}

// checkNoSecretInLogs greps every log on the machine, the journal and cloud-init's copies of the
// user data for each secret value, as written and as the environment file quotes it: a value may
// only be in the app's environment file, and must be found there (so the grep can find it).
func checkNoSecretInLogs(ctx context.Context, t *testing.T, m *harness.Machine, secrets map[string]string) {
	t.Helper()
	journal := mustExec(ctx, t, m, "journalctl", "-o", "cat", "--no-pager")
	for name, value := range secrets {
		quoted := strings.Trim(quote.Env(value), `"`)
		found := map[string]bool{}
		for _, form := range []string{value, quoted} {
			if strings.Contains(journal, form) {
				t.Errorf("the value of %s is in the journal", name)
			}
			out, _, _ := m.Exec(ctx, "grep", "-rlF", "--", form, "/var/log", "/var/lib/cloud", "/run/cloud-init", "/etc", "/srv/wsgi", "/tmp", "/var/tmp")
			for _, f := range strings.Fields(out) {
				found[f] = true
			}
		}
		if len(found) != 1 || !found["/etc/wsgi/wsgi.env"] {
			t.Errorf("the value of %s is in %v; it must be in /etc/wsgi/wsgi.env and nowhere else", name, found)
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
