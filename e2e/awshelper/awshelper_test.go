//go:build e2e

// Package awshelpere2e runs the baked request signer (internal/image/files/wsgi-aws.py, installed
// as contract.AWSHelper) against moto: an S3 object, an SSM SecureString and a Secrets Manager
// secret that the test puts there, read back with role credentials from an IMDSv2 stand-in. The
// proxy in front of moto answers CompleteLifecycleAction, which moto lacks, and injects faults.
package awshelpere2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/quote"
)

const region = "eu-west-1"

var (
	moto   *awsproxy.Moto
	proxy  *awsproxy.Proxy
	helper string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	helper = filepath.Join(filepath.Dir(file), "..", "..", "internal", "image", "files", "wsgi-aws.py")
	dir, err := os.MkdirTemp("", "awshelper-moto-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	moto, err = awsproxy.StartMoto(context.Background(), filepath.Join(dir, "moto.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer moto.Close()
	proxy, err = awsproxy.Start(moto.URL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer proxy.Close()
	return m.Run()
}

func fresh(t *testing.T) {
	t.Helper()
	if err := moto.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	proxy.Reset()
}

// ---------------------------------------------------------------- IMDSv2 stand-in

var roleCreds = aws.Credentials{AccessKeyID: "ASIAMOTOTEST", SecretAccessKey: "moto/secret", SessionToken: "moto-session-token"}

type imds struct {
	srv        *httptest.Server
	mu         sync.Mutex
	instanceID string
	gets       int
}

func newIMDS(t *testing.T, instanceID string) *imds {
	m := &imds{instanceID: instanceID}
	const token = "imds-session"
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" && r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "" {
			fmt.Fprint(w, token)
			return
		}
		if r.Method != http.MethodGet || r.Header.Get("X-aws-ec2-metadata-token") != token {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		m.mu.Lock()
		m.gets++
		id := m.instanceID
		m.mu.Unlock()
		switch r.URL.Path {
		case "/latest/meta-data/iam/security-credentials/":
			fmt.Fprint(w, "wsgi-app-role")
		case "/latest/meta-data/iam/security-credentials/wsgi-app-role":
			_ = json.NewEncoder(w).Encode(map[string]string{"Code": "Success", "AccessKeyId": roleCreds.AccessKeyID,
				"SecretAccessKey": roleCreds.SecretAccessKey, "Token": roleCreds.SessionToken,
				"Expiration": time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z")})
		case "/latest/meta-data/placement/region":
			fmt.Fprint(w, region)
		case "/latest/meta-data/instance-id":
			fmt.Fprint(w, id)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(m.srv.Close)
	return m
}

// ---------------------------------------------------------------- putting things into moto

func putObject(t *testing.T, bucket, key string, data []byte) {
	t.Helper()
	if err := moto.PutObject(context.Background(), region, bucket, key, data); err != nil {
		t.Fatal(err)
	}
}

func createSecret(t *testing.T, name, value string) (arn string) {
	t.Helper()
	arn, err := moto.CreateSecret(context.Background(), region, name, value)
	if err != nil {
		t.Fatal(err)
	}
	return arn
}

func access(t *testing.T) (awscfg.AccessConfig, aws.Config) {
	t.Helper()
	a := awscfg.AccessConfig{Region: region, AccessKey: "testing", SecretKey: "testing",
		CustomEndpointEC2: moto.URL, CustomEndpointSSM: moto.URL, CustomEndpointAutoScaling: moto.URL}
	if errs := a.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	cfg, err := a.Config(context.Background(), region)
	if err != nil {
		t.Fatal(err)
	}
	return a, cfg
}

func putSecureString(t *testing.T, name, value string) {
	t.Helper()
	if err := moto.PutSecureString(context.Background(), region, name, value); err != nil {
		t.Fatal(err)
	}
}

// autoScalingInstance makes a group of one in moto and returns the group and its instance.
func autoScalingInstance(t *testing.T) (group, instance string) {
	t.Helper()
	ctx := context.Background()
	a, cfg := access(t)
	imgs, err := a.NewEC2(cfg).DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, MaxResults: aws.Int32(5)})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("moto's Amazon images: %v", err)
	}
	as := a.NewAutoScaling(cfg)
	group = "web-blue"
	if _, err := as.CreateLaunchConfiguration(ctx, &autoscaling.CreateLaunchConfigurationInput{
		LaunchConfigurationName: aws.String("web"), ImageId: imgs.Images[0].ImageId, InstanceType: aws.String("t3.micro")}); err != nil {
		t.Fatal(err)
	}
	if _, err := as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(group), LaunchConfigurationName: aws.String("web"),
		MinSize: aws.Int32(1), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{region + "a"}}); err != nil {
		t.Fatal(err)
	}
	out, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{group}})
	if err != nil || len(out.AutoScalingGroups) != 1 || len(out.AutoScalingGroups[0].Instances) != 1 {
		t.Fatalf("the group in moto: %v %+v", err, out)
	}
	return group, aws.ToString(out.AutoScalingGroups[0].Instances[0].InstanceId)
}

// ---------------------------------------------------------------- running the helper

type result struct {
	stdout, stderr string
	code           int
}

func runHelper(t *testing.T, m *imds, args ...string) result {
	t.Helper()
	cmd := exec.Command("python3", append([]string{"-IS", helper, "--backoff", "0.05"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"),
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + m.srv.URL,
		"AWS_ENDPOINT_URL=" + proxy.URL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r result) ok(t *testing.T) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

func (r result) noSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, line := range strings.Split(s, "\n") {
			if len(line) > 8 && strings.Contains(r.stdout+r.stderr, line) {
				t.Errorf("a secret's line %q is in the helper's output:\n%s%s", line, r.stdout, r.stderr)
			}
		}
	}
}

func (r result) signedWithRole(t *testing.T) {
	t.Helper()
	for _, c := range proxy.Calls() {
		if c.Region != region {
			t.Errorf("%s:%s signed for %q, want %s (from IMDS)", c.Service, c.Action, c.Region, region)
		}
	}
}

// ---------------------------------------------------------------- tests

func TestGetObjectFromMoto(t *testing.T) {
	fresh(t)
	m := newIMDS(t, "i-unused")
	data := bytes.Repeat([]byte("wsgi\x00\xff release "), 100_000)
	key := "releases/shop 2.0/ü+app.tar.gz"
	putObject(t, "shop-releases", key, data)
	out := filepath.Join(t.TempDir(), "src.tar.gz")
	r := runHelper(t, m, "get-object", "s3://shop-releases/"+key, out)
	r.ok(t)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetched %d bytes, want %d: %v", len(got), len(data), err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 0600", st.Mode().Perm())
	}
	r.signedWithRole(t)
	if calls := proxy.Calls(); len(calls) != 1 || calls[0].Service != "s3" {
		t.Errorf("calls = %v", proxy.Actions())
	}

	r = runHelper(t, m, "get-object", "s3://shop-releases/nothing-here", out)
	if r.code != 1 || r.stderr != "wsgi-aws: get-object s3://shop-releases/nothing-here: NoSuchKey (HTTP 404): The specified key does not exist.\n" {
		t.Errorf("missing key: exit %d, stderr %q", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Error("a failed fetch damaged the file that was there")
	}
}

func TestSecretsFromMoto(t *testing.T) {
	fresh(t)
	m := newIMDS(t, "i-unused")
	dbPassword := "p\"a'ss $HOME `id` \\n\\ S3CR3T-ssm\nsecond line ✓"
	apiKey := `{"key":"S3CR3T-sm","nested":"a\"b\\c $(x)"}` + "\n\ttail"
	putSecureString(t, "/shop/db-password", dbPassword)
	arn := createSecret(t, "shop/api-key", apiKey)
	createSecret(t, "shop/by-name", "plain S3CR3T-byname")

	env := filepath.Join(t.TempDir(), "wsgi.env")
	r := runHelper(t, m, "secrets-env", env,
		"DB_PASSWORD=ssm:/shop/db-password", "API_KEY=secretsmanager:"+arn, "BY_NAME=secretsmanager:shop/by-name")
	r.ok(t)
	r.noSecrets(t, dbPassword, apiKey, "S3CR3T")
	r.signedWithRole(t)
	got, err := os.ReadFile(env)
	if err != nil {
		t.Fatal(err)
	}
	want := "DB_PASSWORD=" + quote.Env(dbPassword) + "\nAPI_KEY=" + quote.Env(apiKey) +
		"\nBY_NAME=" + quote.Env("plain S3CR3T-byname") + "\n"
	if string(got) != want {
		t.Errorf("environment file:\n%s\nwant\n%s", got, want)
	}
	if st, _ := os.Stat(env); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 0600", st.Mode().Perm())
	}
	for name, v := range map[string]string{"DB_PASSWORD": dbPassword, "API_KEY": apiKey} {
		out, err := exec.Command("sh", "-c", `set -a; . "$1"; eval "printf %s \"\$$2\""`, "sh", env, name).Output()
		if err != nil || string(out) != v {
			t.Errorf("%s reads back as %q (%v), want %q", name, out, err, v)
		}
	}
	if got := strings.Join(proxy.Actions(), " "); got != "ssm:GetParameter secretsmanager:GetSecretValue secretsmanager:GetSecretValue" {
		t.Errorf("actions = %s", got)
	}
	var first map[string]any
	_ = json.Unmarshal(proxy.Calls()[0].Body, &first)
	if first["Name"] != "/shop/db-password" || first["WithDecryption"] != true {
		t.Errorf("GetParameter body: %v", first)
	}

	// moto's own error for a missing parameter, on one line.
	r = runHelper(t, m, "secrets-env", env, "GONE=ssm:/shop/gone")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "wsgi-aws: secrets-env GONE (ssm:/shop/gone): ParameterNotFound (HTTP 400)") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("missing parameter: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestRetriesAgainstMoto(t *testing.T) {
	fresh(t)
	m := newIMDS(t, "i-unused")
	putSecureString(t, "/shop/db", "S3CR3T-retry")
	env := filepath.Join(t.TempDir(), "wsgi.env")

	proxy.Intercept(awsproxy.FailNth("ssm", "GetParameter", 1, 2, http.StatusBadRequest, "ThrottlingException"))
	r := runHelper(t, m, "secrets-env", env, "DB=ssm:/shop/db")
	r.ok(t)
	if got := strings.Join(proxy.Actions(), " "); got != "ssm:GetParameter ssm:GetParameter ssm:GetParameter" {
		t.Errorf("throttled twice, then moto: actions = %s", got)
	}
	if !strings.Contains(r.stdout, "ThrottlingException (HTTP 400)") || !strings.Contains(r.stdout, "retry 2 of 5") {
		t.Errorf("retries not reported: %s", r.stdout)
	}

	proxy.Reset()
	proxy.Intercept(awsproxy.FailNth("ssm", "GetParameter", 1, 1, http.StatusBadRequest, "AccessDeniedException"))
	r = runHelper(t, m, "--retries", "3", "secrets-env", env, "DB=ssm:/shop/db")
	if r.code != 1 || r.stderr != "wsgi-aws: secrets-env DB (ssm:/shop/db): AccessDeniedException (HTTP 400): injected by awsproxy (call 1 of GetParameter)\n" {
		t.Errorf("access denied: exit %d, stderr %q", r.code, r.stderr)
	}
	if n := len(proxy.Calls()); n != 1 {
		t.Errorf("access denied was tried %d times, want once", n)
	}
}

// completions answers CompleteLifecycleAction in the proxy (moto 5.2.1 has none) and records it.
type completions struct {
	mu  sync.Mutex
	got []url.Values
}

func (c *completions) register() {
	proxy.Handle("autoscaling", "CompleteLifecycleAction", func(w http.ResponseWriter, call *awsproxy.Call) {
		c.mu.Lock()
		c.got = append(c.got, call.Form)
		c.mu.Unlock()
		// CompleteLifecycleActionResult is empty; the helper reads nothing from it.
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><CompleteLifecycleActionResult/><ResponseMetadata><RequestId>awsproxy</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>`)
	})
}

func TestCompleteLifecycleActionWithMoto(t *testing.T) {
	fresh(t)
	group, instance := autoScalingInstance(t)
	m := newIMDS(t, instance)
	var done completions
	done.register()

	// moto's instances are InService: nothing to complete.
	r := runHelper(t, m, "complete-lifecycle-action", "--hook", "wsgi-launch", "--result", "CONTINUE")
	r.ok(t)
	if want := fmt.Sprintf("wsgi-aws: instance %s in Auto Scaling group %s is InService, not waiting on a lifecycle hook: nothing to complete\n", instance, group); r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if len(done.got) != 0 || strings.Join(proxy.Actions(), " ") != "autoscaling:DescribeAutoScalingInstances" {
		t.Errorf("actions = %v", proxy.Actions())
	}

	// An instance of no group.
	proxy.Reset()
	done.register()
	m.mu.Lock()
	m.instanceID = "i-0000000000000dead"
	m.mu.Unlock()
	r = runHelper(t, m, "complete-lifecycle-action", "--hook", "wsgi-launch", "--result", "CONTINUE")
	r.ok(t)
	if !strings.Contains(r.stdout, "is not in an Auto Scaling group") || len(done.got) != 0 {
		t.Errorf("stdout %q, completions %v", r.stdout, done.got)
	}

	// Waiting on the launch hook: moto's answer, with the state a launch hook gives.
	m.mu.Lock()
	m.instanceID = instance
	m.mu.Unlock()
	proxy.Reset()
	done.register()
	proxy.Handle("autoscaling", "DescribeAutoScalingInstances", func(w http.ResponseWriter, call *awsproxy.Call) {
		type member struct {
			InstanceId, AutoScalingGroupName, AvailabilityZone, LifecycleState, HealthStatus string
		}
		var res struct {
			XMLName xml.Name `xml:"AutoScalingInstances"`
			Members []member `xml:"member"`
		}
		if call.Form.Get("InstanceIds.member.1") == instance {
			res.Members = []member{{instance, group, region + "a", "Pending:Wait", "HEALTHY"}}
		}
		_ = awsproxy.WriteQueryResult(w, call, res)
	})
	r = runHelper(t, m, "complete-lifecycle-action", "--hook", "wsgi-launch", "--result", "ABANDON")
	r.ok(t)
	if len(done.got) != 1 {
		t.Fatalf("completions %v (actions %v)", done.got, proxy.Actions())
	}
	got := done.got[0]
	for k, want := range map[string]string{"AutoScalingGroupName": group, "LifecycleHookName": "wsgi-launch",
		"InstanceId": instance, "LifecycleActionResult": "ABANDON"} {
		if got.Get(k) != want {
			t.Errorf("CompleteLifecycleAction %s = %q, want %q (all: %v)", k, got.Get(k), want, got)
		}
	}
	r.signedWithRole(t)
}
