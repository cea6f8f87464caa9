//go:build e2e

package launchtemplatee2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit/datasource"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

const pluginSource = "github.com/wsgi-ami/wsgi"

// The payload block, used by the template and rendered again in-process
// to know the exact bytes to expect.
const (
	payloadTarball = "https://releases.example.com/hello-1.4.0.tar.gz"
	payloadSHA256  = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

const chainTemplate = `
data "wsgi-cloudinit" "app" {
  wsgi_app  = "app:app"
  framework = "flask"
  source {
    tarball_url = %[3]q
    sha256      = %[4]q
  }
}

source "wsgi-ami" "app" {
  region              = "us-east-1"
  custom_endpoint_ec2 = %[1]q
  source_ami          = %[2]q
  instance_type       = "t3.micro"
  communicator        = "none"
  ami_name            = "app-{{timestamp}}"
  ami_family          = "app"
  aws_polling {
    delay   = "200ms"
    timeout = "2m"
  }
}

build {
  sources = ["source.wsgi-ami.app"]

  post-processor "wsgi-launch-template" {
    region                      = "us-east-1"
    custom_endpoint_ec2         = %[1]q
    custom_endpoint_autoscaling = %[1]q
    launch_template_name        = "web"
    version_description         = "packer build ${build.ID}"
    user_data                   = data.wsgi-cloudinit.app.user_data_gzip_base64
    user_data_encoding          = "gzip+base64"
    # communicator none: nothing ran wsgi-stack, so the AMI has no stack tags to check against.
    check_payload_fits          = false
    keep_releases               = 2
    instance_refresh {
      auto_scaling_group_name = "web-asg"
      min_healthy_percentage  = 50
      skip_matching           = true
    }
    aws_polling {
      delay   = "200ms"
      timeout = "2m"
    }
  }
}
`

// TestPackerChain runs the real packer binary on a template that chains
// the wsgi-ami builder (communicator none, against moto) into
// wsgi-launch-template with the wsgi-cloudinit payload, then checks moto:
// a new default version with the built AMI and the payload's exact bytes,
// a refresh pinned to it and followed to Successful, the family pruned.
// A second build whose refresh fails must fail with what to look at.
func TestPackerChain(t *testing.T) {
	repo, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	packer, err := harness.Packer(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	env := append(harness.PackerEnv(filepath.Join(scratch, "packer")),
		"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	installChainPlugin(ctx, t, packer, env, repo, scratch)
	want := renderPayload(t)

	refreshes := fresh(t, nil, "")
	c := newClients(t, "us-east-1")
	rel := makeReleases(t, c, "app", 3)
	ltID := createTemplate(t, c, "web", rel[2].AMI)
	legacyID := createTemplate(t, c, "legacy", rel[0].AMI)
	createGroup(t, c, "web-asg", ltID)
	imgs, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, MaxResults: aws.Int32(5)})
	if err != nil {
		t.Fatal(err)
	}
	sourceAMI := aws.ToString(imgs.Images[0].ImageId)
	tpl := filepath.Join(scratch, "chain.pkr.hcl")
	if err := os.WriteFile(tpl, []byte(fmt.Sprintf(chainTemplate, proxy.URL, sourceAMI, payloadTarball, payloadSHA256)), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out, err := packerBuild(ctx, packer, env, scratch, tpl)
	t.Logf("packer build output:\n%s", out)
	if err != nil {
		t.Fatalf("packer build: %v", err)
	}
	took := time.Since(start)
	m := regexp.MustCompile(`(?m)^us-east-1: (ami-[0-9a-f]+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no AMI in the builder's artifact output")
	}
	ami := m[1]

	lt, versions := template(t, c, ltID)
	if len(versions) != 2 || aws.ToInt64(lt.DefaultVersionNumber) != 2 {
		t.Fatalf("web has %d versions, default %d; want version 2 as default", len(versions), aws.ToInt64(lt.DefaultVersionNumber))
	}
	v := versions[1]
	if aws.ToString(v.LaunchTemplateData.ImageId) != ami {
		t.Errorf("version 2 launches %s, want the built %s", aws.ToString(v.LaunchTemplateData.ImageId), ami)
	}
	if got := aws.ToString(v.LaunchTemplateData.UserData); got != want {
		t.Errorf("version 2 user data (%d chars) differs from the wsgi-cloudinit output user_data_gzip_base64 (%d chars)", len(got), len(want))
	}
	if !strings.HasPrefix(aws.ToString(v.VersionDescription), "packer build ") {
		t.Errorf("description = %q", aws.ToString(v.VersionDescription))
	}
	started := refreshes.Started()
	if len(started) != 1 || started[0].Params.Get("DesiredConfiguration.LaunchTemplate.Version") != "2" ||
		started[0].Params.Get("DesiredConfiguration.LaunchTemplate.LaunchTemplateId") != ltID ||
		started[0].Params.Get("Preferences.SkipMatching") != "true" {
		t.Errorf("refreshes started: %+v", started)
	} else if !strings.Contains(out, "instance refresh "+started[0].ID+": Successful") {
		t.Error("packer's output does not show the refresh ending Successful")
	}
	// The builder tagged its AMI with ami_family = "app": with keep 2, the
	// built AMI and rel[2] stay, rel[1] goes, rel[0] is launched by legacy.
	for i, keep := range []bool{true, false, true} {
		if got := describeImage(t, c, rel[i].AMI) != nil; got != keep {
			t.Errorf("release %d (%s) exists = %v, want %v", i, rel[i].AMI, got, keep)
		}
		if got := snapshotExists(t, c, rel[i].Snapshot); got != keep {
			t.Errorf("release %d snapshot exists = %v, want %v", i, got, keep)
		}
	}
	if describeImage(t, c, ami) == nil {
		t.Error("the built AMI is gone")
	}
	if !strings.Contains(out, "keeping "+rel[0].AMI+", used by "+legacyID) {
		t.Error("packer's output does not report the in-use AMI kept")
	}
	t.Logf("CHECK packer build wsgi-ami -> wsgi-launch-template (%s): %s version 2 = %s + wsgi-cloudinit payload (%d base64 chars, identical), default 1 -> 2, refresh %s pinned to version 2 -> Successful, keep_releases=2 deregistered %s, kept %s (used by %s)",
		took.Round(100*time.Millisecond), ltID, ami, len(want), started[0].ID, rel[1].AMI, rel[0].AMI, legacyID)

	// The failing variant: a new build whose refresh fails.
	proxy.Reset()
	(&awsproxy.InstanceRefreshes{
		Statuses:     []string{awsproxy.RefreshPending, awsproxy.RefreshInProgress, awsproxy.RefreshFailed},
		StatusReason: "Instance i-0abc failed ELB health checks",
	}).Register(proxy)
	out, err = packerBuild(ctx, packer, env, scratch, tpl)
	t.Logf("packer build (failing refresh) output:\n%s", out)
	if err == nil {
		t.Fatal("packer build succeeded although the refresh failed")
	}
	for _, s := range []string{"ended Failed (Instance i-0abc failed ELB health checks)", "aws autoscaling describe-instance-refreshes --region us-east-1 --auto-scaling-group-name web-asg", "describe-scaling-activities", "default version of " + ltID + " set back to 2"} {
		if !strings.Contains(out, s) {
			t.Errorf("packer's output does not say %q", s)
		}
	}
	lt, versions = template(t, c, ltID)
	if aws.ToInt64(lt.DefaultVersionNumber) != 2 || len(versions) != 3 {
		t.Errorf("after the failed refresh: default %d, %d versions; want default 2 and version 3 kept", aws.ToInt64(lt.DefaultVersionNumber), len(versions))
	}
	t.Log("CHECK failing refresh: packer build exits non-zero with the refresh's reason and the commands to look at; default back to 2, version 3 kept")
}

// renderPayload renders the template's wsgi-cloudinit block in-process;
// the data source is a pure function, so these are the bytes to expect.
func renderPayload(t testing.TB) string {
	t.Helper()
	d := &datasource.Datasource{}
	if err := d.Configure(map[string]interface{}{
		"wsgi_app":  "app:app",
		"framework": "flask",
		"source":    map[string]interface{}{"tarball_url": payloadTarball, "sha256": payloadSHA256},
	}); err != nil {
		t.Fatal(err)
	}
	v, err := d.Execute()
	if err != nil {
		t.Fatal(err)
	}
	return v.GetAttr("user_data_gzip_base64").AsString()
}

func packerBuild(ctx context.Context, packer string, env []string, dir, tpl string) (string, error) {
	cmd := exec.CommandContext(ctx, packer, "build", "-color=false", tpl)
	cmd.Dir, cmd.Env = dir, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// installChainPlugin builds the repository's plugin, checks that it registers
// the builder, the data sources and the post-processor, and installs it with
// `packer plugins install --path`.
func installChainPlugin(ctx context.Context, t testing.TB, packer string, env []string, repo, dir string) {
	t.Helper()
	bin := filepath.Join(dir, "packer-plugin-wsgi")
	build := func(pkg string) {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	build(".")
	out, err := exec.CommandContext(ctx, bin, "describe").Output()
	if err != nil {
		t.Fatalf("%s describe: %v", bin, err)
	}
	var desc struct {
		Builders       []string `json:"builders"`
		PostProcessors []string `json:"post_processors"`
		Datasources    []string `json:"datasources"`
	}
	if err := json.Unmarshal(out, &desc); err != nil {
		t.Fatalf("describe: %v: %s", err, out)
	}
	if !slices.Contains(desc.Builders, "ami") || !slices.Contains(desc.PostProcessors, "launch-template") || !slices.Contains(desc.Datasources, "cloudinit") || !slices.Contains(desc.Datasources, "golden-image") {
		t.Fatalf("the plugin does not register ami, cloudinit, golden-image and launch-template: %s", out)
	}
	cmd := exec.CommandContext(ctx, packer, "plugins", "install", "--path", bin, pluginSource)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("packer plugins install: %v\n%s", err, out)
	}
}
