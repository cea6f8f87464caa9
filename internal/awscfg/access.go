//go:generate packer-sdc mapstructure-to-hcl2 -type AccessConfig,AssumeRoleConfig,PollingConfig

// Package awscfg is the one AWS access block shared by the wsgi-ami builder
// and the wsgi-launch-template post-processor.
//
// A component embeds AccessConfig with `mapstructure:",squash"`, calls
// Prepare from its own Prepare, and then builds clients per region:
//
//	cfg, err := c.AccessConfig.Config(ctx, region)
//	ec2c := c.AccessConfig.NewEC2(cfg)
//
// Every client constructor applies the matching custom_endpoint_* to every
// region, and the request is signed for the region of cfg, so a build can
// run end to end against a private endpoint or an emulator.
package awscfg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
)

// Defaults applied by Prepare when the key is unset.
const (
	// DefaultMaxRetries is the number of attempts per API call. The SDK's
	// default of 3 gives up too early when an account is throttled by
	// concurrent builds.
	DefaultMaxRetries = 10
	// DefaultRetryMode is the SDK's standard retryer.
	DefaultRetryMode = "standard"
	// DefaultPollDelay is the minimum delay between two polls of a waiter.
	DefaultPollDelay = 5 * time.Second
	// DefaultPollTimeout bounds every wait (instance running, image
	// available, region copy).
	DefaultPollTimeout = 60 * time.Minute
)

// maxBackoff caps the delay between two retries of one call (a variable so
// tests need not wait).
var maxBackoff = 20 * time.Second

// AssumeRoleConfig makes every call with the credentials of another role.
type AssumeRoleConfig struct {
	// ARN of the role to assume, e.g. `arn:aws:iam::123456789012:role/packer`.
	RoleARN string `mapstructure:"role_arn" required:"false"`
	// Session name recorded in CloudTrail. Defaults to `packer-wsgi`.
	SessionName string `mapstructure:"session_name" required:"false"`
	// External ID required by the role's trust policy, if any.
	ExternalID string `mapstructure:"external_id" required:"false"`
	// Lifetime of the assumed credentials, e.g. `1h`. Defaults to the SDK's
	// 15 minutes; the credentials are refreshed before they expire.
	Duration time.Duration `mapstructure:"duration" required:"false"`
	// An IAM policy (JSON) that narrows the session's permissions to the
	// intersection with the role's.
	Policy string `mapstructure:"policy" required:"false"`
	// ARNs of managed policies that narrow the session's permissions, e.g.
	// `arn:aws:iam::123456789012:policy/packer-build`.
	PolicyARNs []string `mapstructure:"policy_arns" required:"false"`
	// Session tags, passed to the role's trust policy and CloudTrail.
	Tags map[string]string `mapstructure:"tags" required:"false"`
	// Keys of tags that pass on to roles this session assumes in turn;
	// each must be in tags.
	TransitiveTagKeys []string `mapstructure:"transitive_tag_keys" required:"false"`
}

// PollingConfig bounds the SDK waiters used for every wait.
type PollingConfig struct {
	// Minimum delay between two polls, e.g. `5s`. Defaults to `5s`.
	Delay time.Duration `mapstructure:"delay" required:"false"`
	// Maximum time for one wait, e.g. `30m`. Defaults to `60m`.
	Timeout time.Duration `mapstructure:"timeout" required:"false"`
}

// AccessConfig says where and as whom to call AWS.
type AccessConfig struct {
	// Region the build runs in, e.g. `eu-west-1`. Required, unless the
	// profile or `AWS_REGION` gives it.
	Region string `mapstructure:"region" required:"true"`
	// Named profile from the shared config and credentials files.
	Profile string `mapstructure:"profile" required:"false"`
	// Shared credentials file to read instead of `~/.aws/credentials`
	// (and `AWS_SHARED_CREDENTIALS_FILE`).
	SharedCredentialsFile string `mapstructure:"shared_credentials_file" required:"false"`
	// Static access key. Prefer a profile, the environment or an instance role.
	AccessKey string `mapstructure:"access_key" required:"false"`
	// Static secret key; required with `access_key`.
	SecretKey string `mapstructure:"secret_key" required:"false"`
	// Session token for temporary static credentials.
	Token string `mapstructure:"token" required:"false"`
	// Assume this role for every call, in every region.
	AssumeRole AssumeRoleConfig `mapstructure:"assume_role" required:"false"`
	// Base URL of the EC2 API, e.g. `https://ec2.vpce.example` or an emulator.
	// Used by every EC2 client in every region, including tagging and
	// region copies; requests are still signed for each client's region.
	CustomEndpointEC2 string `mapstructure:"custom_endpoint_ec2" required:"false"`
	// Base URL of the SSM API, used to resolve `resolve:ssm:` source AMIs.
	CustomEndpointSSM string `mapstructure:"custom_endpoint_ssm" required:"false"`
	// Base URL of the STS API, used to assume `assume_role`.
	CustomEndpointSTS string `mapstructure:"custom_endpoint_sts" required:"false"`
	// Base URL of the Auto Scaling API (used by the post-processor).
	CustomEndpointAutoScaling string `mapstructure:"custom_endpoint_autoscaling" required:"false"`
	// Maximum attempts per API call, throttling included. Defaults to 10.
	MaxRetries int `mapstructure:"max_retries" required:"false"`
	// `standard` or `adaptive` (client-side rate limiting after throttling).
	// Defaults to `standard`.
	RetryMode string `mapstructure:"retry_mode" required:"false"`
	// Do not check that credentials resolve before the first call.
	SkipCredentialValidation bool `mapstructure:"skip_credential_validation" required:"false"`
	// Bounds for every wait of the build.
	Polling PollingConfig `mapstructure:"aws_polling" required:"false"`

	// base is the loaded configuration, shared by all regions so that
	// credentials (and an assumed role) are resolved once.
	base *baseCache
}

type baseCache struct {
	mu  sync.Mutex
	cfg *aws.Config
}

// Prepare fills defaults and validates the block. Errors name the HCL key.
func (c *AccessConfig) Prepare() []error {
	var errs []error
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.MaxRetries < 1 || c.MaxRetries > 100 {
		errs = append(errs, fmt.Errorf("max_retries: must be between 1 and 100, got %d", c.MaxRetries))
	}
	if c.RetryMode == "" {
		c.RetryMode = DefaultRetryMode
	}
	if c.RetryMode != "standard" && c.RetryMode != "adaptive" {
		errs = append(errs, fmt.Errorf("retry_mode: must be \"standard\" or \"adaptive\", got %q", c.RetryMode))
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		errs = append(errs, fmt.Errorf("access_key, secret_key: set both or neither"))
	}
	if c.Token != "" && c.AccessKey == "" {
		errs = append(errs, fmt.Errorf("token: needs access_key and secret_key"))
	}
	if c.Region != "" {
		if err := CheckRegion("region", c.Region); err != nil {
			errs = append(errs, err)
		}
	}
	if c.SharedCredentialsFile != "" {
		if _, err := os.Stat(c.SharedCredentialsFile); err != nil {
			errs = append(errs, fmt.Errorf("shared_credentials_file: %w", err))
		}
	}
	ar := &c.AssumeRole
	errs = append(errs, ar.prepareSession()...)
	if ar.RoleARN == "" && (ar.SessionName != "" || ar.ExternalID != "" || ar.Duration != 0 ||
		ar.Policy != "" || len(ar.PolicyARNs) > 0 || len(ar.Tags) > 0 || len(ar.TransitiveTagKeys) > 0) {
		errs = append(errs, fmt.Errorf("assume_role.role_arn: required when assume_role is set"))
	}
	if ar.RoleARN != "" {
		if !strings.HasPrefix(ar.RoleARN, "arn:") || !strings.Contains(ar.RoleARN, ":role/") {
			errs = append(errs, fmt.Errorf("assume_role.role_arn: must be a role ARN like arn:aws:iam::123456789012:role/NAME, got %q", ar.RoleARN))
		}
		if ar.SessionName == "" {
			ar.SessionName = "packer-wsgi"
		}
		if ar.Duration != 0 && (ar.Duration < 15*time.Minute || ar.Duration > 12*time.Hour) {
			errs = append(errs, fmt.Errorf("assume_role.duration: must be between 15m and 12h, got %s", ar.Duration))
		}
	}
	for key, v := range map[string]string{
		"custom_endpoint_ec2":         c.CustomEndpointEC2,
		"custom_endpoint_ssm":         c.CustomEndpointSSM,
		"custom_endpoint_sts":         c.CustomEndpointSTS,
		"custom_endpoint_autoscaling": c.CustomEndpointAutoScaling,
	} {
		if v == "" {
			continue
		}
		if err := checkEndpoint(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	if c.Polling.Delay == 0 {
		c.Polling.Delay = DefaultPollDelay
	}
	if c.Polling.Timeout == 0 {
		c.Polling.Timeout = DefaultPollTimeout
	}
	if c.Polling.Delay < 0 {
		errs = append(errs, fmt.Errorf("aws_polling.delay: must be positive, got %s", c.Polling.Delay))
	}
	if c.Polling.Timeout < c.Polling.Delay {
		errs = append(errs, fmt.Errorf("aws_polling.timeout: must be at least aws_polling.delay (%s), got %s", c.Polling.Delay, c.Polling.Timeout))
	}
	return sortErrors(errs)
}

// prepareSession checks the session policy and tags of assume_role.
func (ar *AssumeRoleConfig) prepareSession() []error {
	var errs []error
	if ar.Policy != "" && !json.Valid([]byte(ar.Policy)) {
		errs = append(errs, fmt.Errorf("assume_role.policy: must be an IAM policy document in JSON, e.g. jsonencode({ Version = \"2012-10-17\", Statement = [...] })"))
	}
	for _, a := range ar.PolicyARNs {
		if !strings.HasPrefix(a, "arn:") || !strings.Contains(a, ":iam::") || !strings.Contains(a, ":policy/") {
			errs = append(errs, fmt.Errorf("assume_role.policy_arns: %q is not a managed policy ARN like arn:aws:iam::123456789012:policy/NAME", a))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(ar.Tags)) {
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			errs = append(errs, fmt.Errorf("assume_role.tags: %q: the aws: prefix is reserved by AWS", k))
		}
	}
	for _, k := range ar.TransitiveTagKeys {
		if _, ok := ar.Tags[k]; !ok {
			errs = append(errs, fmt.Errorf("assume_role.transitive_tag_keys: %q is not a key of assume_role.tags", k))
		}
	}
	return errs
}

// checkEndpoint accepts an absolute http(s) URL without query or fragment.
func checkEndpoint(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("must be a URL like https://ec2.example.com: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("must be a URL like https://ec2.example.com, got %q", v)
	}
	return nil
}

func validRegion(r string) bool {
	// Loose on purpose: new partitions add new prefixes, so check only the
	// shape "letters-words-digit".
	parts := strings.Split(r, "-")
	if len(parts) < 3 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		for _, ch := range p {
			if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9') {
				return false
			}
		}
	}
	last := parts[len(parts)-1]
	return last[len(last)-1] >= '0' && last[len(last)-1] <= '9'
}

// Config returns the SDK configuration for region (the block's region when
// empty). All regions share one credentials cache. Unless
// skip_credential_validation is set, the first call checks that
// credentials resolve, so a missing profile fails before anything is made.
func (c *AccessConfig) Config(ctx context.Context, region string) (aws.Config, error) {
	base, err := c.loadBase(ctx)
	if err != nil {
		return aws.Config{}, err
	}
	cfg := base.Copy()
	if region != "" {
		cfg.Region = region
	}
	if cfg.Region == "" {
		return aws.Config{}, fmt.Errorf("region: not set and not found in the profile or the environment")
	}
	return cfg, nil
}

func (c *AccessConfig) loadBase(ctx context.Context) (aws.Config, error) {
	if c.base == nil {
		c.base = &baseCache{}
	}
	c.base.mu.Lock()
	defer c.base.mu.Unlock()
	if c.base.cfg != nil {
		return *c.base.cfg, nil
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(c.newRetryer),
	}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(c.Profile))
	}
	if c.SharedCredentialsFile != "" {
		opts = append(opts, config.WithSharedCredentialsFiles([]string{c.SharedCredentialsFile}))
	}
	if c.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, c.Token)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading aws configuration: %w", err)
	}
	if c.AssumeRole.RoleARN != "" {
		stsc := c.NewSTS(cfg)
		ar := c.AssumeRole
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsc, ar.RoleARN,
			func(o *stscreds.AssumeRoleOptions) {
				o.RoleSessionName = ar.SessionName
				if ar.ExternalID != "" {
					o.ExternalID = aws.String(ar.ExternalID)
				}
				if ar.Duration != 0 {
					o.Duration = ar.Duration
				}
				if ar.Policy != "" {
					o.Policy = aws.String(ar.Policy)
				}
				for _, a := range ar.PolicyARNs {
					o.PolicyARNs = append(o.PolicyARNs, ststypes.PolicyDescriptorType{Arn: aws.String(a)})
				}
				for _, k := range slices.Sorted(maps.Keys(ar.Tags)) {
					o.Tags = append(o.Tags, ststypes.Tag{Key: aws.String(k), Value: aws.String(ar.Tags[k])})
				}
				o.TransitiveTagKeys = ar.TransitiveTagKeys
			}))
	}
	if !c.SkipCredentialValidation {
		if cfg.Credentials == nil {
			return aws.Config{}, fmt.Errorf("no aws credentials found: set profile, access_key/secret_key or the AWS_* environment")
		}
		if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
			return aws.Config{}, fmt.Errorf("resolving aws credentials: %w", err)
		}
	}
	c.base.cfg = &cfg
	return cfg, nil
}

// newRetryer retries throttling (RequestLimitExceeded and the other
// throttle codes of the SDK), 5xx and transient network errors up to
// max_retries attempts. The client-side retry quota is off: a long build
// that is throttled for a while must keep retrying instead of failing with
// "retry quota exceeded".
func (c *AccessConfig) newRetryer() aws.Retryer {
	attempts := c.MaxRetries
	if attempts <= 0 {
		attempts = DefaultMaxRetries
	}
	std := func(o *retry.StandardOptions) {
		// Checked first: the first definite answer wins.
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(notRetried)}, o.Retryables...)
		o.MaxAttempts = attempts
		o.MaxBackoff = maxBackoff
		o.RateLimiter = ratelimit.None
	}
	if c.RetryMode == "adaptive" {
		return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
			o.StandardOptions = append(o.StandardOptions, std)
		})
	}
	return retry.NewStandard(std)
}

// capacityCodes come back with HTTP 500, which the SDK retries by status.
// Retrying in place only delays the fallback to the next instance type.
var capacityCodes = map[string]bool{
	"InsufficientInstanceCapacity":         true,
	"InsufficientCapacity":                 true,
	"InsufficientHostCapacity":             true,
	"InsufficientReservedInstanceCapacity": true,
}

func notRetried(err error) aws.Ternary {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && capacityCodes[apiErr.ErrorCode()] {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// NewEC2 returns an EC2 client for cfg's region that honours custom_endpoint_ec2.
func (c *AccessConfig) NewEC2(cfg aws.Config) *ec2.Client {
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if c.CustomEndpointEC2 != "" {
			o.BaseEndpoint = aws.String(c.CustomEndpointEC2)
		}
	})
}

// NewSSM returns an SSM client for cfg's region that honours custom_endpoint_ssm.
func (c *AccessConfig) NewSSM(cfg aws.Config) *ssm.Client {
	return ssm.NewFromConfig(cfg, func(o *ssm.Options) {
		if c.CustomEndpointSSM != "" {
			o.BaseEndpoint = aws.String(c.CustomEndpointSSM)
		}
	})
}

// NewSTS returns an STS client for cfg's region that honours custom_endpoint_sts.
func (c *AccessConfig) NewSTS(cfg aws.Config) *sts.Client {
	return sts.NewFromConfig(cfg, func(o *sts.Options) {
		if c.CustomEndpointSTS != "" {
			o.BaseEndpoint = aws.String(c.CustomEndpointSTS)
		}
	})
}

// NewAutoScaling returns an Auto Scaling client for cfg's region that
// honours custom_endpoint_autoscaling.
func (c *AccessConfig) NewAutoScaling(cfg aws.Config) *autoscaling.Client {
	return autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) {
		if c.CustomEndpointAutoScaling != "" {
			o.BaseEndpoint = aws.String(c.CustomEndpointAutoScaling)
		}
	})
}

// EC2 is Config followed by NewEC2.
func (c *AccessConfig) EC2(ctx context.Context, region string) (*ec2.Client, error) {
	cfg, err := c.Config(ctx, region)
	if err != nil {
		return nil, err
	}
	return c.NewEC2(cfg), nil
}

// SSM is Config followed by NewSSM.
func (c *AccessConfig) SSM(ctx context.Context, region string) (*ssm.Client, error) {
	cfg, err := c.Config(ctx, region)
	if err != nil {
		return nil, err
	}
	return c.NewSSM(cfg), nil
}

// AutoScaling is Config followed by NewAutoScaling.
func (c *AccessConfig) AutoScaling(ctx context.Context, region string) (*autoscaling.Client, error) {
	cfg, err := c.Config(ctx, region)
	if err != nil {
		return nil, err
	}
	return c.NewAutoScaling(cfg), nil
}

// WaitTimeout is the maximum duration of one wait (aws_polling.timeout).
func (c *AccessConfig) WaitTimeout() time.Duration {
	if c.Polling.Timeout <= 0 {
		return DefaultPollTimeout
	}
	return c.Polling.Timeout
}

// WaitDelay is the minimum delay between two polls (aws_polling.delay).
func (c *AccessConfig) WaitDelay() time.Duration {
	if c.Polling.Delay <= 0 {
		return DefaultPollDelay
	}
	return c.Polling.Delay
}

// sortErrors keeps the order stable although endpoints are checked from a map.
func sortErrors(errs []error) []error {
	slices.SortStableFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errs
}
