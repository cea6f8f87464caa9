//go:build e2e

package builder_test

// UNCOMMITTED: measurement only (docs/BENCHMARKS.md).

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
)

func TestMeasureEBS(t *testing.T) {
	bin := os.Getenv("EBS_PLUGIN")
	e := setup(t)
	out, err := e.packerCmd(context.Background(), "plugins", "install", "--path", bin, "github.com/hashicorp/amazon").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, _ := ssh.MarshalPrivateKey(priv, "")
	keyFile := filepath.Join(e.workDir, "id_ed25519")
	os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600)
	spub, _ := ssh.NewPublicKey(pub)
	authorized := ssh.MarshalAuthorizedKey(spub)

	for _, mode := range []string{"none", "ssh-keypair"} {
		for _, builder := range []string{"wsgi-ami", "amazon-ebs"} {
			e.reset()
			ctx := context.Background()
			c, _ := e.direct.EC2(ctx, buildRegion)
			if _, err := c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("bench"), PublicKeyMaterial: authorized}); err != nil {
				t.Fatal(err)
			}
			e.sshd.authorize(string(authorized))
			img, _ := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{"al2023-ami-2023*-x86_64"}}}})
			src := aws.ToString(img.Images[0].ImageId)
			comm := `communicator = "none"`
			if mode != "none" {
				comm = fmt.Sprintf(`communicator = "ssh"
  ssh_username = "admin"
  ssh_host = "127.0.0.1"
  ssh_port = %d
  ssh_timeout = "30s"
  ssh_keypair_name = "bench"
  ssh_private_key_file = %q`, e.sshd.port, keyFile)
			}
			var tmpl string
			if builder == "wsgi-ami" {
				cidr := `ssh_cidrs = ["127.0.0.1/32"]`
				if mode == "none" {
					cidr = ""
				}
				tmpl = fmt.Sprintf(`source "wsgi-ami" "m" {
  region = %q
  custom_endpoint_ec2 = %q
  custom_endpoint_sts = %q
  source_ami = %q
  instance_type = "t3.micro"
  %s
  %s
  skip_cloud_init_wait = true
  associate_public_ip_address = true
  ami_name = "bench-{{timestamp}}"
  ami_regions = [%q]
  ami_users = [%q]
  snapshot_users = [%q]
  region_kms_key_ids = { %q = "alias/e2e-shared" }
  root_volume {
    kms_key_id = "alias/e2e-shared"
  }
  deprecate_at = "4320h"
  tags = { App = "demo" }
  snapshot_tags = { Backup = "none" }
  run_tags = { Purpose = "e2e" }
  aws_polling {
    delay = "200ms"
    timeout = "2m"
  }
}
build { sources = ["source.wsgi-ami.m"] }
`, buildRegion, e.proxy.URL, e.proxy.URL, src, comm, cidr, copyRegion, shareWith, shareWith, copyRegion)
			} else {
				cidr := `temporary_security_group_source_cidrs = ["127.0.0.1/32"]`
				if mode == "none" {
					cidr = ""
				}
				dep := time.Now().Add(4320 * time.Hour).UTC().Format(time.RFC3339)
				tmpl = fmt.Sprintf(`source "amazon-ebs" "m" {
  region = %q
  custom_endpoint_ec2 = %q
  source_ami = %q
  instance_type = "t3.micro"
  %s
  %s
  associate_public_ip_address = true
  ami_name = "bench-{{timestamp}}"
  ami_regions = [%q]
  ami_users = [%q]
  snapshot_users = [%q]
  encrypt_boot = true
  kms_key_id = "alias/e2e-shared"
  region_kms_key_ids = { %q = "alias/e2e-shared" }
  imds_support = "v2.0"
  metadata_options {
    http_tokens = "required"
  }
  deprecate_at = %q
  tags = { App = "demo" }
  snapshot_tags = { Backup = "none" }
  run_tags = { Purpose = "e2e" }
  aws_polling {
    delay_seconds = 1
    max_attempts = 120
  }
}
build { sources = ["source.amazon-ebs.m"] }
`, buildRegion, e.proxy.URL, src, comm, cidr, copyRegion, shareWith, shareWith, copyRegion, dep)
			}
			path := filepath.Join(e.workDir, "m.pkr.hcl")
			os.WriteFile(path, []byte(tmpl), 0o644)
			cctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
			cmd := e.packerCmd(cctx, "build", "-color=false", path)
			cmd.Env = append(cmd.Env, "AWS_ENDPOINT_URL_EC2="+e.proxy.URL, "AWS_ENDPOINT_URL_STS="+e.proxy.URL, "AWS_ENDPOINT_URL_SSM="+e.proxy.URL, "AWS_REGION="+buildRegion)
			var buf bytes.Buffer
			cmd.Stdout, cmd.Stderr = &buf, &buf
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			start := time.Now()
			err := cmd.Run()
			cancel()
			calls := e.proxy.ec2Calls()
			t.Logf("MEASURE %s %s: err=%v calls=%d wall=%s\n  %s", mode, builder, err, len(calls), time.Since(start).Round(10*time.Millisecond), strings.Join(calls, "\n  "))
			if err != nil {
				t.Logf("output tail:\n%s", tail(buf.String(), 25))
			}
			_ = exec.Command
		}
	}
}
