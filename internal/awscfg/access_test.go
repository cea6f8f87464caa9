package awscfg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
)

func TestPrepare(t *testing.T) {
	tests := []struct {
		name    string
		in      AccessConfig
		wantErr []string
		check   func(t *testing.T, c *AccessConfig)
	}{
		{
			name: "defaults",
			in:   AccessConfig{Region: "eu-west-1"},
			check: func(t *testing.T, c *AccessConfig) {
				if c.MaxRetries != DefaultMaxRetries || c.RetryMode != "standard" {
					t.Errorf("retry defaults: got %d %q", c.MaxRetries, c.RetryMode)
				}
				if c.Polling.Delay != DefaultPollDelay || c.Polling.Timeout != DefaultPollTimeout {
					t.Errorf("polling defaults: got %s %s", c.Polling.Delay, c.Polling.Timeout)
				}
			},
		},
		{
			name: "assume role session name default",
			in:   AccessConfig{AssumeRole: AssumeRoleConfig{RoleARN: "arn:aws:iam::123456789012:role/packer"}},
			check: func(t *testing.T, c *AccessConfig) {
				if c.AssumeRole.SessionName != "packer-wsgi" {
					t.Errorf("session_name: got %q", c.AssumeRole.SessionName)
				}
			},
		},
		{
			name:    "half static keys",
			in:      AccessConfig{AccessKey: "AKIA"},
			wantErr: []string{"access_key, secret_key: set both or neither"},
		},
		{
			name:    "token alone",
			in:      AccessConfig{Token: "t"},
			wantErr: []string{"token: needs access_key and secret_key"},
		},
		{
			name:    "bad retry",
			in:      AccessConfig{MaxRetries: -1, RetryMode: "legacy"},
			wantErr: []string{"max_retries: must be between 1 and 100, got -1", `retry_mode: must be "standard" or "adaptive", got "legacy"`},
		},
		{
			name:    "bad region",
			in:      AccessConfig{Region: "Frankfurt"},
			wantErr: []string{`region: "Frankfurt" is not a region name like eu-west-1`},
		},
		{
			name: "bad endpoints",
			in:   AccessConfig{CustomEndpointEC2: "localhost:5000", CustomEndpointSSM: "ftp://x", CustomEndpointSTS: "http://127.0.0.1:1/?a=b"},
			wantErr: []string{
				`custom_endpoint_ec2: must be a URL like https://ec2.example.com, got "localhost:5000"`,
				`custom_endpoint_ssm: must be a URL like https://ec2.example.com, got "ftp://x"`,
				`custom_endpoint_sts: must be a URL like https://ec2.example.com, got "http://127.0.0.1:1/?a=b"`,
			},
		},
		{
			name:    "assume role without arn",
			in:      AccessConfig{AssumeRole: AssumeRoleConfig{ExternalID: "x"}},
			wantErr: []string{"assume_role.role_arn: required when assume_role is set"},
		},
		{
			name: "assume role bad arn and duration",
			in:   AccessConfig{AssumeRole: AssumeRoleConfig{RoleARN: "packer", Duration: time.Minute}},
			wantErr: []string{
				`assume_role.duration: must be between 15m and 12h, got 1m0s`,
				`assume_role.role_arn: must be a role ARN like arn:aws:iam::123456789012:role/NAME, got "packer"`,
			},
		},
		{
			name:    "polling",
			in:      AccessConfig{Polling: PollingConfig{Delay: time.Minute, Timeout: time.Second}},
			wantErr: []string{"aws_polling.timeout: must be at least aws_polling.delay (1m0s), got 1s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.in
			errs := c.Prepare()
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.wantErr, "\n") {
				t.Fatalf("errors:\n got: %q\nwant: %q", got, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, &c)
			}
		})
	}
}

// fakeAWS answers Query-protocol calls and records each request.
type fakeAWS struct {
	mu       sync.Mutex
	requests []recorded
	// answer returns status and body for the n-th (0-based) request.
	answer func(n int, action string) (int, string)
}

type recorded struct {
	action, auth string
	form         url.Values
}

func (f *fakeAWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, recorded{action: form.Get("Action") + r.Header.Get("X-Amz-Target"), auth: r.Header.Get("Authorization"), form: form})
	f.mu.Unlock()
	status, out := f.answer(n, form.Get("Action"))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, out)
}

func (f *fakeAWS) calls() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.requests...)
}

const describeRegionsOK = `<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><regionInfo/></DescribeRegionsResponse>`

func ec2Error(code string) string {
	return fmt.Sprintf(`<Response><Errors><Error><Code>%s</Code><Message>injected</Message></Error></Errors><RequestID>r</RequestID></Response>`, code)
}

func staticAccess(endpoint string) *AccessConfig {
	c := &AccessConfig{
		Region: "eu-west-1", AccessKey: "AKIDTEST", SecretKey: "secret",
		CustomEndpointEC2: endpoint, CustomEndpointSSM: endpoint, CustomEndpointSTS: endpoint,
	}
	if errs := c.Prepare(); len(errs) > 0 {
		panic(errs)
	}
	return c
}

func TestCustomEndpointEveryRegion(t *testing.T) {
	fake := &fakeAWS{answer: func(int, string) (int, string) { return 200, describeRegionsOK }}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	ac := staticAccess(srv.URL)
	ctx := context.Background()
	for _, region := range []string{"", "us-west-2", "ap-southeast-2"} {
		c, err := ac.EC2(ctx, region)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
			t.Fatalf("region %q: %v", region, err)
		}
	}
	calls := fake.calls()
	if len(calls) != 3 {
		t.Fatalf("want 3 calls at the custom endpoint, got %d", len(calls))
	}
	for i, want := range []string{"eu-west-1", "us-west-2", "ap-southeast-2"} {
		scope := "/" + want + "/ec2/aws4_request"
		if !strings.Contains(calls[i].auth, scope) || !strings.Contains(calls[i].auth, "Credential=AKIDTEST/") {
			t.Errorf("call %d: want signature scope %s with AKIDTEST, got %q", i, scope, calls[i].auth)
		}
	}
}

func TestSSMCustomEndpoint(t *testing.T) {
	fake := &fakeAWS{answer: func(int, string) (int, string) {
		return 200, `{"Parameter":{"Name":"/x","Value":"ami-12345678","Type":"String"}}`
	}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	ac := staticAccess(srv.URL)
	c, err := ac.SSM(context.Background(), "us-east-2")
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.GetParameter(context.Background(), &ssm.GetParameterInput{Name: aws.String("/x")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.Parameter.Value) != "ami-12345678" {
		t.Fatalf("got %q", aws.ToString(out.Parameter.Value))
	}
	calls := fake.calls()
	if len(calls) != 1 || calls[0].action != "AmazonSSM.GetParameter" || !strings.Contains(calls[0].auth, "/us-east-2/ssm/") {
		t.Fatalf("unexpected calls %+v", calls)
	}
}

func TestRetries(t *testing.T) {
	old := maxBackoff
	maxBackoff = 10 * time.Millisecond
	defer func() { maxBackoff = old }()
	tests := []struct {
		name      string
		fail      string // error code of the first answers
		status    int
		failCount int
		wantCalls int
		wantCode  string
	}{
		{name: "throttling retried", fail: "RequestLimitExceeded", status: 503, failCount: 2, wantCalls: 3},
		{name: "internal error retried", fail: "InternalError", status: 500, failCount: 1, wantCalls: 2},
		{name: "unauthorized is final", fail: "UnauthorizedOperation", status: 403, failCount: 5, wantCalls: 1, wantCode: "UnauthorizedOperation"},
		{name: "capacity is final", fail: "InsufficientInstanceCapacity", status: 500, failCount: 5, wantCalls: 1, wantCode: "InsufficientInstanceCapacity"},
		{name: "gives up after max_retries", fail: "RequestLimitExceeded", status: 503, failCount: 100, wantCalls: 3, wantCode: "RequestLimitExceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeAWS{answer: func(n int, _ string) (int, string) {
				if n < tt.failCount {
					return tt.status, ec2Error(tt.fail)
				}
				return 200, describeRegionsOK
			}}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			ac := staticAccess(srv.URL)
			ac.MaxRetries = 3
			c, err := ac.EC2(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{})
			var apiErr smithy.APIError
			switch {
			case tt.wantCode == "" && err != nil:
				t.Fatalf("want success, got %v", err)
			case tt.wantCode != "" && (!errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.wantCode):
				t.Fatalf("want %s, got %v", tt.wantCode, err)
			}
			if got := len(fake.calls()); got != tt.wantCalls {
				t.Fatalf("want %d calls, got %d", tt.wantCalls, got)
			}
		})
	}
}

func TestAssumeRoleThroughCustomSTS(t *testing.T) {
	const assumed = `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>ASIAASSUMED</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>tok</SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/packer/packer-wsgi</Arn><AssumedRoleId>AROA:packer-wsgi</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleResponse>`
	fake := &fakeAWS{answer: func(_ int, action string) (int, string) {
		if action == "AssumeRole" {
			return 200, assumed
		}
		return 200, describeRegionsOK
	}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	ac := &AccessConfig{
		Region: "eu-west-1", AccessKey: "AKIDBASE", SecretKey: "secret",
		CustomEndpointEC2: srv.URL, CustomEndpointSTS: srv.URL,
		AssumeRole: AssumeRoleConfig{RoleARN: "arn:aws:iam::123456789012:role/packer", ExternalID: "ext",
			Policy:     `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:*","Resource":"*"}]}`,
			PolicyARNs: []string{"arn:aws:iam::123456789012:policy/packer-build"},
			Tags:       map[string]string{"Project": "web", "Team": "platform"}, TransitiveTagKeys: []string{"Project"}},
	}
	if errs := ac.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	ctx := context.Background()
	for _, region := range []string{"eu-west-1", "us-east-1"} {
		c, err := ac.EC2(ctx, region)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
			t.Fatal(err)
		}
	}
	calls := fake.calls()
	var actions []string
	for _, c := range calls {
		actions = append(actions, c.action)
	}
	// One AssumeRole for both regions: the credentials cache is shared.
	if strings.Join(actions, ",") != "AssumeRole,DescribeRegions,DescribeRegions" {
		t.Fatalf("calls: %v", actions)
	}
	if !strings.Contains(calls[0].auth, "Credential=AKIDBASE/") {
		t.Errorf("AssumeRole signed with %q", calls[0].auth)
	}
	f := calls[0].form
	for k, want := range map[string]string{
		"ExternalId": "ext", "Policy": ac.AssumeRole.Policy, "PolicyArns.member.1.arn": "arn:aws:iam::123456789012:policy/packer-build",
		"Tags.member.1.Key": "Project", "Tags.member.1.Value": "web", "Tags.member.2.Key": "Team", "TransitiveTagKeys.member.1": "Project",
	} {
		if got := f.Get(k); got != want {
			t.Errorf("AssumeRole %s = %q, want %q", k, got, want)
		}
	}
	for _, c := range calls[1:] {
		if !strings.Contains(c.auth, "Credential=ASIAASSUMED/") {
			t.Errorf("EC2 call not signed with assumed credentials: %q", c.auth)
		}
	}
}

func TestSharedCredentialsFile(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	file := t.TempDir() + "/credentials"
	if err := os.WriteFile(file, []byte("[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fake := &fakeAWS{answer: func(int, string) (int, string) { return 200, describeRegionsOK }}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	ac := &AccessConfig{Region: "eu-west-1", SharedCredentialsFile: file, CustomEndpointEC2: srv.URL}
	if errs := ac.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	c, err := ac.EC2(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeRegions(context.Background(), &ec2.DescribeRegionsInput{}); err != nil {
		t.Fatal(err)
	}
	if auth := fake.calls()[0].auth; !strings.Contains(auth, "Credential=AKIDFILE/") {
		t.Fatalf("not signed with the file's key: %q", auth)
	}
	missing := &AccessConfig{Region: "eu-west-1", SharedCredentialsFile: "/nonexistent/credentials"}
	if errs := missing.Prepare(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "shared_credentials_file: stat /nonexistent/credentials") {
		t.Fatalf("missing file: %v", errs)
	}
}

func TestAssumeRoleSessionChecks(t *testing.T) {
	ac := &AccessConfig{Region: "eu-west-1", AssumeRole: AssumeRoleConfig{
		RoleARN: "arn:aws:iam::123456789012:role/packer", Policy: "{not json", PolicyARNs: []string{"packer-build"},
		Tags: map[string]string{"aws:x": "y"}, TransitiveTagKeys: []string{"Team"},
	}}
	got := fmt.Sprint(ac.Prepare())
	for _, want := range []string{
		"assume_role.policy: must be an IAM policy document in JSON",
		`assume_role.policy_arns: "packer-build" is not a managed policy ARN`,
		`assume_role.tags: "aws:x": the aws: prefix is reserved by AWS`,
		`assume_role.transitive_tag_keys: "Team" is not a key of assume_role.tags`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in %s", want, got)
		}
	}
	noRole := &AccessConfig{Region: "eu-west-1", AssumeRole: AssumeRoleConfig{PolicyARNs: []string{"arn:aws:iam::123456789012:policy/p"}}}
	if got := fmt.Sprint(noRole.Prepare()); !strings.Contains(got, "assume_role.role_arn: required when assume_role is set") {
		t.Errorf("policy without a role: %s", got)
	}
}

func TestCredentialValidation(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	// Keep the SDK away from a real instance metadata service.
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ac := &AccessConfig{Region: "eu-west-1"}
	ac.Prepare()
	if _, err := ac.Config(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "resolving aws credentials") {
		t.Fatalf("want a credentials error, got %v", err)
	}
	skip := &AccessConfig{Region: "eu-west-1", SkipCredentialValidation: true}
	skip.Prepare()
	cfg, err := skip.Config(context.Background(), "us-east-1")
	if err != nil {
		t.Fatalf("skip_credential_validation: %v", err)
	}
	if cfg.Region != "us-east-1" {
		t.Fatalf("region: got %q", cfg.Region)
	}
}

func TestRetryerSettings(t *testing.T) {
	for _, mode := range []string{"standard", "adaptive"} {
		ac := &AccessConfig{Region: "eu-west-1", RetryMode: mode, MaxRetries: 7}
		if errs := ac.Prepare(); len(errs) > 0 {
			t.Fatal(errs)
		}
		r := ac.newRetryer()
		if r.MaxAttempts() != 7 {
			t.Errorf("%s: max attempts %d", mode, r.MaxAttempts())
		}
		if !r.IsErrorRetryable(&smithy.GenericAPIError{Code: "RequestLimitExceeded"}) {
			t.Errorf("%s: RequestLimitExceeded not retryable", mode)
		}
		if r.IsErrorRetryable(&smithy.GenericAPIError{Code: "UnauthorizedOperation"}) {
			t.Errorf("%s: UnauthorizedOperation retryable", mode)
		}
	}
}
