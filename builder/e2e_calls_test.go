//go:build e2e

package builder_test

// The EC2 calls of one bake with wsgi-ami and with amazon-ebs, side by side
// against the same moto through the same counting proxy (docs/BENCHMARKS.md).
// Not part of TestMoto: it needs packer-plugin-amazon, which this repository
// does not depend on. bench/ami-calls.sh builds v1.8.2 outside the
// repository and runs
//
//	WSGI_BENCH_AMAZON_PLUGIN=/tmp/.../packer-plugin-amazon \
//	  go test -tags e2e -count=1 -v -run TestCallsAgainstAmazonEBS ./builder/

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The same bake in both builders: a temporary key pair and security group
// (SSH from 127.0.0.1 to the test's sshd), IMDSv2 required on the instance
// and on the AMI, run tags, AMI and snapshot tags, and optionally one region
// copy. wsgi-ami's defaults already are IMDSv2 on both; amazon-ebs is told.
const (
	callsWSGI = `
source "wsgi-ami" "bench" {
  region               = %[1]q
  custom_endpoint_ec2  = %[2]q
  custom_endpoint_sts  = %[2]q
  source_ami           = %[3]q
  instance_type        = "t3.micro"
  communicator         = "ssh"
  ssh_username         = "admin"
  ssh_host             = "127.0.0.1"
  ssh_port             = %[4]d
  ssh_timeout          = "30s"
  ssh_cidrs            = ["127.0.0.1/32"]
  ami_name             = "bench-wsgi-{{timestamp}}"
  ami_regions          = [%[5]s]
  tags                 = { App = "demo" }
  snapshot_tags        = { Backup = "none" }
  run_tags             = { Purpose = "bench" }
  aws_polling {
    delay   = "1s"
    timeout = "2m"
  }
}
build { sources = ["source.wsgi-ami.bench"] }
`
	callsEBS = `
source "amazon-ebs" "bench" {
  region               = %[1]q
  custom_endpoint_ec2  = %[2]q
  source_ami           = %[3]q
  instance_type        = "t3.micro"
  communicator         = "ssh"
  ssh_username         = "admin"
  ssh_host             = "127.0.0.1"
  ssh_port             = %[4]d
  ssh_timeout          = "30s"
  temporary_security_group_source_cidrs = ["127.0.0.1/32"]
  ami_name             = "bench-ebs-{{timestamp}}"
  ami_regions          = [%[5]s]
  imds_support         = "v2.0"
  metadata_options {
    http_tokens = "required"
  }
  tags                 = { App = "demo" }
  snapshot_tags        = { Backup = "none" }
  run_tags             = { Purpose = "bench" }
  aws_polling {
    delay_seconds = 1
    max_attempts  = 120
  }
}
build { sources = ["source.amazon-ebs.bench"] }
`
)

func TestCallsAgainstAmazonEBS(t *testing.T) {
	plugin := os.Getenv("WSGI_BENCH_AMAZON_PLUGIN")
	if plugin == "" {
		t.Skip("WSGI_BENCH_AMAZON_PLUGIN is not set: run bench/ami-calls.sh")
	}
	e := setup(t)
	if out, err := e.packerCmd(context.Background(), "plugins", "install", "--path", plugin, "github.com/hashicorp/amazon").CombinedOutput(); err != nil {
		t.Fatalf("packer plugins install amazon: %v\n%s", err, out)
	}
	// amazon-ebs's key pair is made by moto (CreateKeyPair): the proxy never
	// sees its public half, so the sshd takes any key.
	e.sshd.anyKey = true

	type result struct {
		calls []string
		wall  time.Duration
	}
	var b strings.Builder
	for _, copies := range []string{"", copyRegion} {
		got := map[string]result{}
		for _, name := range []string{"wsgi-ami", "amazon-ebs"} {
			e.reset()
			src := e.sourceAMI(t)
			regions := ""
			if copies != "" {
				regions = fmt.Sprintf("%q", copies)
			}
			tmpl := callsWSGI
			if name == "amazon-ebs" {
				tmpl = callsEBS
			}
			start := time.Now()
			out, err := e.runTemplate(t, fmt.Sprintf(tmpl, buildRegion, e.proxy.URL, src, e.sshd.port, regions), runOpts{},
				"AWS_ENDPOINT_URL_EC2="+e.proxy.URL, "AWS_ENDPOINT_URL_STS="+e.proxy.URL, "AWS_REGION="+buildRegion)
			wall := time.Since(start)
			if err != nil {
				t.Fatalf("%s (copy to %q): packer build failed: %v\n%s", name, copies, err, tail(out, 30))
			}
			if n := len(amiLine.FindAllString(out, -1)); n != 1+len(strings.Fields(regions)) {
				t.Fatalf("%s: %d AMIs in the artifact:\n%s", name, n, tail(out, 20))
			}
			if left := e.leftovers(t, true); len(left) > 0 {
				t.Fatalf("%s left behind:\n  %s", name, strings.Join(left, "\n  "))
			}
			e.assertTagged(t, name, copies)
			got[name] = result{e.proxy.ec2Calls(), wall}
		}
		scenario := "no region copy"
		if copies != "" {
			scenario = "one region copy (" + copies + ")"
		}
		w, a := got["wsgi-ami"].calls, got["amazon-ebs"].calls
		fmt.Fprintf(&b, "\n%s: wsgi-ami %d EC2 calls (%s), amazon-ebs %d (%s): %.2fx\n\n", scenario, len(w),
			got["wsgi-ami"].wall.Round(10*time.Millisecond), len(a), got["amazon-ebs"].wall.Round(10*time.Millisecond), float64(len(w))/float64(len(a)))
		b.WriteString(callTable(w, a))
		for _, name := range []string{"wsgi-ami", "amazon-ebs"} {
			t.Logf("%s, %s, in order:\n  %s", scenario, name, strings.Join(got[name].calls, "\n  "))
		}
	}
	t.Log(b.String())
	if path := os.Getenv("WSGI_BENCH_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// assertTagged: both builders left their AMIs and snapshots tagged alike in
// every region, so the calls compared did the same work.
func (e *env) assertTagged(t *testing.T, name, copyTo string) {
	t.Helper()
	ctx := context.Background()
	for _, region := range []string{buildRegion, copyTo} {
		if region == "" {
			continue
		}
		c, err := e.direct.EC2(ctx, region)
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
		if err != nil || len(imgs.Images) != 1 {
			t.Fatalf("%s: %s: want one AMI: %v %d", name, region, err, len(imgs.Images))
		}
		img := imgs.Images[0]
		if !hasTagKV(img.Tags, "App", "demo") {
			t.Errorf("%s: %s: AMI tags %v", name, region, img.Tags)
		}
		for _, bd := range img.BlockDeviceMappings {
			if bd.Ebs == nil || bd.Ebs.SnapshotId == nil {
				continue
			}
			snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{aws.ToString(bd.Ebs.SnapshotId)}})
			if err != nil || len(snaps.Snapshots) != 1 || !hasTagKV(snaps.Snapshots[0].Tags, "Backup", "none") {
				t.Errorf("%s: %s: snapshot %s not tagged Backup=none: %v %+v", name, region, aws.ToString(bd.Ebs.SnapshotId), err, snaps)
			}
		}
	}
}

func hasTagKV(tags []ec2types.Tag, k, v string) bool {
	return slices.ContainsFunc(tags, func(tg ec2types.Tag) bool { return aws.ToString(tg.Key) == k && aws.ToString(tg.Value) == v })
}

// callTable is a Markdown table of calls per API, both builders.
func callTable(w, a []string) string {
	count := func(calls []string) map[string]int {
		n := map[string]int{}
		for _, c := range calls {
			_, action, _ := strings.Cut(c, " ")
			n[action]++
		}
		return n
	}
	nw, na := count(w), count(a)
	actions := distinct(append(append([]string(nil), w...), a...))
	slices.Sort(actions)
	var b strings.Builder
	b.WriteString("| EC2 API | wsgi-ami | amazon-ebs |\n| --- | ---: | ---: |\n")
	for _, act := range actions {
		fmt.Fprintf(&b, "| %s | %d | %d |\n", act, nw[act], na[act])
	}
	fmt.Fprintf(&b, "| **total** | **%d** | **%d** |\n", len(w), len(a))
	return b.String()
}
