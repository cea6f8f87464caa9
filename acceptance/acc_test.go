// Package acceptance runs the whole product against a real AWS account: a build with all four
// components through the real packer binary, then an instance launched from the new
// launch-template version, which must deploy the app at first boot and answer 200 through NGINX
// from every Gunicorn unit. Everything the run made is removed at the end, found by the run's tag.
//
// The tests run only with PACKER_ACC=1, AWS credentials and WSGI_ACC_APP_URL; otherwise they skip
// and say why. docs/ACCEPTANCE.md has the setup and the IAM policy.
package acceptance

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/acctest"
)

const (
	// runTag marks everything a run makes, directly or through the plugin, so the sweep finds it.
	runTag = "wsgi-acc-run"
	// units is the number of Gunicorn units the template bakes; each must answer.
	units = 3
)

// accEnv is what a run needs from the environment.
type accEnv struct {
	region   string
	appURL   string
	appSHA   string
	bootWait time.Duration
	ec2      *ec2.Client
}

// requireAcc skips the test unless an acceptance run is asked for and possible, printing why.
func requireAcc(t *testing.T) accEnv {
	t.Helper()
	if os.Getenv(acctest.TestEnvVar) == "" {
		t.Skipf("acceptance test against real AWS: set %s=1 to run it (see docs/ACCEPTANCE.md)", acctest.TestEnvVar)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		t.Skipf("%s=1 but the AWS configuration does not load: %v", acctest.TestEnvVar, err)
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		t.Skipf("%s=1 but no AWS credentials were found (environment, shared files, SSO or instance role): %v", acctest.TestEnvVar, err)
	}
	if cfg.Region == "" {
		t.Skipf("%s=1 but no AWS region: set AWS_REGION", acctest.TestEnvVar)
	}
	env := accEnv{region: cfg.Region, appURL: os.Getenv("WSGI_ACC_APP_URL"), ec2: ec2.NewFromConfig(cfg), bootWait: 20 * time.Minute}
	if env.appURL == "" {
		t.Skipf("%s=1 but WSGI_ACC_APP_URL is not set: the HTTPS URL of a tarball of e2e/demo/shop the instance can fetch (docs/ACCEPTANCE.md)", acctest.TestEnvVar)
	}
	if v := os.Getenv("WSGI_ACC_BOOT_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("WSGI_ACC_BOOT_TIMEOUT: %v", err)
		}
		env.bootWait = d
	}
	if _, err := exec.LookPath("packer"); err != nil {
		t.Fatalf("packer is not on PATH: run `make dev` and put bin/ first on PATH (PATH=$PWD/bin:$PATH): %v", err)
	}
	// The archive's checksum goes into the payload, as a user would pin it.
	env.appSHA, err = sha256URL(ctx, env.appURL)
	if err != nil {
		t.Fatalf("WSGI_ACC_APP_URL: %v", err)
	}
	return env
}

func sha256URL(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET: %s", resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// TestAccBuildAndBoot builds an AMI and a launch-template version with all four components, then
// boots an instance from that version and checks the app answers from every unit.
func TestAccBuildAndBoot(t *testing.T) {
	env := requireAcc(t)
	runID := newRunID(t)
	t.Logf("run id %s (tag %s); if the test is killed, sweep with: PACKER_ACC=1 WSGI_ACC_SWEEP=%s go test -run TestAccSweep ./acceptance/", runID, runTag, runID)

	// Cleanup is registered first so that it runs whatever happens below.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		if err := sweep(ctx, env.ec2, runID, t.Logf); err != nil {
			t.Errorf("cleanup of run %s: %v", runID, err)
		}
	})

	acctest.TestPlugin(t, &acctest.PluginTestCase{
		Name:     "wsgi_acc_" + runID,
		Type:     "wsgi-ami",
		Template: accTemplate(env, runID),
		Check: func(build *exec.Cmd, logfile string) error {
			if code := build.ProcessState.ExitCode(); code != 0 {
				return fmt.Errorf("packer build exited %d\n%s", code, tail(logfile, 60))
			}
			ctx, cancel := context.WithTimeout(context.Background(), env.bootWait+10*time.Minute)
			defer cancel()
			return bootCheck(ctx, t, env, runID)
		},
	})
}

// TestAccSweep removes what a run left behind when its process was killed before its cleanup ran.
func TestAccSweep(t *testing.T) {
	runID := os.Getenv("WSGI_ACC_SWEEP")
	if runID == "" {
		t.Skip("sweep of a killed acceptance run: set WSGI_ACC_SWEEP=<run id> (printed at the start of the run)")
	}
	env := requireAcc(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := sweep(ctx, env.ec2, runID, t.Logf); err != nil {
		t.Fatal(err)
	}
}

func newRunID(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return time.Now().UTC().Format("20060102t150405") + hex.EncodeToString(b)
}

// names derives every name of a run from its id, so the sweep can find them from the id alone.
func amiName(runID string) string         { return "wsgi-acc-" + runID }
func templateName(runID string) string    { return "wsgi-acc-" + runID }
func builderTempName(runID string) string { return "packer wsgi-ami " + amiName(runID) }

// accTemplate is example.pkr.hcl with the app from WSGI_ACC_APP_URL (the demo's Django shop with
// the distribution's Django, so no package index is needed), a launch template of its own and
// every resource tagged with the run id.
func accTemplate(env accEnv, runID string) string {
	return fmt.Sprintf(`
packer {
  required_plugins {
    wsgi = { source = "github.com/wsgi-ami/wsgi", version = ">= 0.1.0" }
  }
}

data "wsgi-cloudinit" "shop" {
  app_name               = "shop"
  sockets                = %[5]d
  gunicorn_source        = "distro"
  system_site_packages   = true
  wsgi_app               = "shop.wsgi:application"
  framework              = "django"
  django_settings_module = "shop.settings"
  source {
    tarball_url = %[3]q
    sha256      = %[4]q
  }
  env = {
    DJANGO_ALLOWED_HOSTS = "*"
    DATABASE_PATH        = "/var/lib/wsgi-app/shop.sqlite3"
  }
}

source "wsgi-ami" "acc" {
  region                  = %[1]q
  source_ami              = "resolve:ssm:/aws/service/debian/release/13/latest/amd64"
  instance_type           = "t3.small"
  fallback_instance_types = ["t3a.small", "m6i.large"]
  ssh_username            = "admin"
  ami_name                = %[6]q
  ami_family              = %[6]q
  tags                    = { %[7]q = %[2]q }
  snapshot_tags           = { %[7]q = %[2]q }
  run_tags                = { %[7]q = %[2]q }
}

build {
  sources = ["source.wsgi-ami.acc"]

  provisioner "wsgi-stack" {
    app_name        = "shop"
    sockets         = %[5]d
    gunicorn_source = "distro"
    extra_packages  = ["python3-django"]
  }

  post-processor "wsgi-launch-template" {
    region               = %[1]q
    launch_template_name = %[8]q
    create_if_missing    = true
    tags                 = { %[7]q = %[2]q }
    version_description  = "acceptance run %[2]s"
    user_data            = data.wsgi-cloudinit.shop.user_data_gzip_base64
    user_data_encoding   = "gzip+base64"
  }
}
`, env.region, runID, env.appURL, env.appSHA, units, amiName(runID), runTag, templateName(runID))
}

// bootCheck launches an instance from the default version of the run's launch template (the one
// the post-processor just made), waits for its public address and asks NGINX until every unit
// has answered 200.
func bootCheck(ctx context.Context, t *testing.T, env accEnv, runID string) error {
	lt, err := env.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateName: aws.String(templateName(runID)),
		Versions:           []string{"$Default"},
	})
	if err != nil {
		return fmt.Errorf("describe launch template %s: %w", templateName(runID), err)
	}
	if len(lt.LaunchTemplateVersions) != 1 {
		return fmt.Errorf("launch template %s: want one default version, got %d", templateName(runID), len(lt.LaunchTemplateVersions))
	}
	v := lt.LaunchTemplateVersions[0]
	data := v.LaunchTemplateData
	if data == nil || aws.ToString(data.ImageId) == "" || aws.ToString(data.UserData) == "" {
		return fmt.Errorf("launch template %s version %d: want the AMI and the user data, got %+v", templateName(runID), aws.ToInt64(v.VersionNumber), data)
	}
	t.Logf("launch template %s version %d: %s", templateName(runID), aws.ToInt64(v.VersionNumber), aws.ToString(data.ImageId))

	sg, err := httpSecurityGroup(ctx, env.ec2, runID)
	if err != nil {
		return err
	}
	version := strconv.FormatInt(aws.ToInt64(v.VersionNumber), 10)
	run, err := env.ec2.RunInstances(ctx, &ec2.RunInstancesInput{
		MinCount:         aws.Int32(1),
		MaxCount:         aws.Int32(1),
		LaunchTemplate:   &ec2types.LaunchTemplateSpecification{LaunchTemplateName: aws.String(templateName(runID)), Version: aws.String(version)},
		InstanceType:     ec2types.InstanceTypeT3Small,
		SecurityGroupIds: []string{sg},
		MetadataOptions:  &ec2types.InstanceMetadataOptionsRequest{HttpTokens: ec2types.HttpTokensStateRequired},
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeInstance,
			Tags:         []ec2types.Tag{{Key: aws.String(runTag), Value: aws.String(runID)}, {Key: aws.String("Name"), Value: aws.String("wsgi acceptance " + runID)}},
		}},
	})
	if err != nil {
		return fmt.Errorf("run instance from %s version %s: %w", templateName(runID), version, err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	t.Logf("instance %s launched from %s version %s", id, templateName(runID), version)

	waiter := ec2.NewInstanceRunningWaiter(env.ec2)
	out, err := waiter.WaitForOutput(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 10*time.Minute)
	if err != nil {
		return fmt.Errorf("instance %s running: %w", id, err)
	}
	ip := aws.ToString(out.Reservations[0].Instances[0].PublicIpAddress)
	if ip == "" {
		return fmt.Errorf("instance %s has no public address: the region's default subnet must map public IPs", id)
	}

	start := time.Now()
	seen, err := waitForUnits(ctx, "http://"+ip+"/", env.bootWait, 5*time.Second)
	if err != nil {
		return fmt.Errorf("instance %s (%s): %w; on the instance: cloud-init status --long, /var/log/wsgi-deploy.log (docs/TROUBLESHOOTING.md)", id, ip, err)
	}
	t.Logf("http://%s/ answered 200 from units %v, %s after the instance was running", ip, seen, time.Since(start).Round(time.Second))
	return nil
}

// unitRe reads the unit from the sample app's JSON answer.
var unitRe = regexp.MustCompile(`"unit": "([0-9]+)"`)

// waitForUnits polls url until every unit has answered 200 or the timeout ends. Before first boot
// has finished, NGINX is not up yet or answers 503 (the maintenance page); both mean "not yet".
// Any other status is a failure.
func waitForUnits(ctx context.Context, url string, timeout, every time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	seen := map[string]bool{}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK:
				m := unitRe.FindSubmatch(body)
				if m == nil {
					return nil, fmt.Errorf("GET %s: 200 without a unit: %s", url, body)
				}
				seen[string(m[1])] = true
				if len(seen) == units {
					return sortedKeys(seen), nil
				}
				continue
			case resp.StatusCode == http.StatusServiceUnavailable:
				last = "503 (first boot not finished)"
			default:
				return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
			}
		} else if ctx.Err() == nil {
			// A request cut by the deadline says nothing about the instance; keep the last answer.
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return sortedKeys(seen), fmt.Errorf("no 200 from all %d units within %s (units seen %v, last: %s)", units, timeout, sortedKeys(seen), last)
		case <-time.After(every):
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for i := 1; i <= 16; i++ {
		if m[strconv.Itoa(i)] {
			out = append(out, strconv.Itoa(i))
		}
	}
	return out
}

// httpSecurityGroup makes a group in the default VPC open on port 80 to this machine only.
func httpSecurityGroup(ctx context.Context, c *ec2.Client, runID string) (string, error) {
	vpcs, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil {
		return "", fmt.Errorf("describe default vpc: %w", err)
	}
	if len(vpcs.Vpcs) == 0 {
		return "", errors.New("the region has no default VPC; the boot check launches into it")
	}
	myIP, err := publicIP(ctx)
	if err != nil {
		return "", err
	}
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName:   aws.String("wsgi-acc-" + runID),
		Description: aws.String("wsgi acceptance boot check, HTTP from the test runner"),
		VpcId:       vpcs.Vpcs[0].VpcId,
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeSecurityGroup,
			Tags:         []ec2types.Tag{{Key: aws.String(runTag), Value: aws.String(runID)}},
		}},
	})
	if err != nil {
		return "", fmt.Errorf("create security group: %w", err)
	}
	_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId:    sg.GroupId,
		IpProtocol: aws.String("tcp"),
		FromPort:   aws.Int32(80),
		ToPort:     aws.Int32(80),
		CidrIp:     aws.String(myIP + "/32"),
	})
	if err != nil {
		return "", fmt.Errorf("open port 80 to %s: %w", myIP, err)
	}
	return aws.ToString(sg.GroupId), nil
}

func publicIP(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://checkip.amazonaws.com", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("this machine's public address: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return "", fmt.Errorf("this machine's public address: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// tail returns the last n lines of a file, for a failure message.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
