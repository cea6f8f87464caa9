//go:build e2e

package harness_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestMachine boots the base image of each release and checks, from inside
// the machine, what the tests built on the harness rely on: cloud-init
// finished; the package set is that of Debian's EC2 image (the AWS CLI,
// curl, sudo; no git); the instance metadata service answers the IMDSv2
// token dance at 169.254.169.254 and refuses a request without a token;
// moto, published by the harness, answers, also to the AWS CLI signing
// with the role credentials it found in the IMDS; a private address that
// nothing was published on is refused at the host.
func TestMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	harness.ForEachRelease(t, func(t *testing.T, r harness.Release) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		log := logWriter{t}
		start := time.Now()
		img, err := harness.BaseImage(ctx, r, log)
		if err != nil {
			t.Fatal(err)
		}
		imageTime := time.Since(start)

		moto, err := awsproxy.StartMoto(ctx, filepath.Join(t.TempDir(), "moto.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer moto.Close()
		motoURL, err := harness.Publish(moto.URL)
		if err != nil {
			t.Fatal(err)
		}

		id := "i-0" + strings.Repeat(r.Version, 8)
		start = time.Now()
		m, err := harness.Boot(ctx, harness.BootOptions{Image: img, Name: "hm-" + r.Suite, InstanceID: id,
			Metadata: harness.Metadata{Region: "eu-central-1"}, WorkDir: t.TempDir(), Log: log})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		bootTime := time.Since(start)
		run := func(cmd ...string) (string, error) {
			out, _, err := m.Exec(ctx, cmd...)
			return strings.TrimSpace(out), err
		}
		must := func(cmd ...string) string {
			t.Helper()
			out, err := run(cmd...)
			if err != nil {
				t.Errorf("%v", err)
			}
			return out
		}

		// The release is the one asked for, and cloud-init is done without errors.
		if got := must("sh", "-c", ". /etc/os-release && echo $VERSION_ID $VERSION_CODENAME"); got != r.Version+" "+r.Suite {
			t.Errorf("os-release: got %q, want %q", got, r.Version+" "+r.Suite)
		}
		var status struct {
			Status string   `json:"status"`
			Errors []string `json:"errors"`
		}
		if err := json.Unmarshal([]byte(must("cloud-init", "status", "--format=json")), &status); err != nil || status.Status != "done" || len(status.Errors) > 0 {
			t.Errorf("cloud-init status %q errors %v (%v)", status.Status, status.Errors, err)
		}
		if got := must("cat", "/var/lib/cloud/data/instance-id"); got != id {
			t.Errorf("cloud-init instance-id %q, want %q", got, id)
		}

		// Debian's EC2 image: these are there, git is not.
		for _, bin := range []string{"aws", "curl", "sudo", "sshd", "cloud-init", "python3"} {
			if _, err := run("sh", "-c", "command -v "+bin); err != nil {
				t.Errorf("%s is missing from the base image", bin)
			}
		}
		if out, err := run("sh", "-c", "command -v git || dpkg-query -W git"); err == nil {
			t.Errorf("git is in the base image (%s): Debian's EC2 image has none", out)
		}
		if _, err := run("python3", "-c", "import flask, django"); err != nil {
			t.Errorf("the tests' apps need Flask and Django preinstalled: %v", err)
		}

		// IMDSv2 from inside: no token, 401; the token dance, then each document.
		imds := "http://" + harness.MetadataAddr
		if got := must("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", imds+"/latest/meta-data/instance-id"); got != "401" {
			t.Errorf("GET without a token: %s, want 401", got)
		}
		token := must("curl", "-sSf", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 300", imds+"/latest/api/token")
		if token == "" {
			t.Fatal("no IMDSv2 token")
		}
		get := func(path string) string {
			t.Helper()
			return must("curl", "-sSf", "-H", "X-aws-ec2-metadata-token: "+token, imds+path)
		}
		md := m.IMDS().Metadata()
		for path, want := range map[string]string{
			"/latest/meta-data/instance-id":                 id,
			"/latest/meta-data/placement/region":            "eu-central-1",
			"/latest/meta-data/placement/availability-zone": "eu-central-1a",
			"/latest/meta-data/iam/security-credentials/":   md.Role,
			"/latest/meta-data/local-ipv4":                  m.IP(),
		} {
			if got := get(path); got != want {
				t.Errorf("GET %s: %q, want %q", path, got, want)
			}
		}
		var creds struct{ Code, AccessKeyId, SecretAccessKey, Token, Expiration string }
		if err := json.Unmarshal([]byte(get("/latest/meta-data/iam/security-credentials/"+md.Role)), &creds); err != nil {
			t.Error(err)
		}
		if creds.Code != "Success" || creds.AccessKeyId != md.Credentials.AccessKeyID || creds.Token != md.Credentials.Token || creds.Expiration == "" {
			t.Errorf("role credentials: %+v", creds)
		}
		var doc struct{ InstanceID, Region, AccountID string }
		if err := json.Unmarshal([]byte(get("/latest/dynamic/instance-identity/document")), &doc); err != nil {
			t.Error(err)
		}
		if doc.InstanceID != id || doc.Region != "eu-central-1" || doc.AccountID != "123456789012" {
			t.Errorf("identity document: %+v", doc)
		}
		if calls := m.IMDS().Calls(); len(calls) < 2 || calls[0].Status != 401 || calls[1].Method != "PUT" {
			t.Errorf("IMDS calls: %v", calls)
		}

		// moto from inside, plainly and with the AWS CLI signing with the IMDS role's credentials.
		if got := must("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", motoURL+"/moto-api/"); got != "200" {
			t.Errorf("moto at %s from inside: %s, want 200", motoURL, got)
		}
		start = time.Now()
		cli := func(args ...string) (string, error) {
			return run(append([]string{"env", "AWS_EC2_METADATA_DISABLED=false", "aws", "--endpoint-url", motoURL, "--region", "eu-central-1", "--output", "text"}, args...)...)
		}
		if out, err := cli("ssm", "put-parameter", "--name", "/e2e/"+r.Suite, "--type", "SecureString", "--value", "from-"+r.Suite); err != nil {
			t.Errorf("aws ssm put-parameter: %v %s", err, out)
		} else if got, err := cli("ssm", "get-parameter", "--name", "/e2e/"+r.Suite, "--with-decryption", "--query", "Parameter.Value"); err != nil || got != "from-"+r.Suite {
			t.Errorf("aws ssm get-parameter: %q %v", got, err)
		}
		cliTime := time.Since(start)
		var sawCreds bool
		for _, c := range m.IMDS().Calls() {
			sawCreds = sawCreds || (c.Path == "/latest/meta-data/iam/security-credentials/"+md.Role && c.Token && c.Status == 200)
		}
		if !sawCreds {
			t.Errorf("the AWS CLI did not take the role's credentials from the IMDS with a token: %v", m.IMDS().Calls())
		}

		// Nothing published there: the host refuses it, nothing is forwarded.
		if out, err := run("curl", "-sS", "--max-time", "5", "-o", "/dev/null", "http://"+harness.ServiceAddr+":1/"); err == nil {
			t.Errorf("an unpublished port on %s answered: %s", harness.ServiceAddr, out)
		}
		// The host has no metadata address of its own.
		assertNoMetadataAddr(t)

		t.Logf("CHECK %s: base image %.1fs, boot to cloud-init done %.1fs, aws cli put+get via IMDS creds %.1fs",
			r, imageTime.Seconds(), bootTime.Seconds(), cliTime.Seconds())
	})
}

func assertNoMetadataAddr(t *testing.T) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if strings.HasPrefix(a.String(), harness.MetadataAddr+"/") {
			t.Errorf("the host has %s on an interface", a)
		}
	}
}

var _ = fmt.Sprint
