//go:generate packer-sdc mapstructure-to-hcl2 -type Config,InstanceRefreshConfig

package launchtemplate

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// Defaults applied by Prepare when the key is unset.
const (
	// DefaultMinHealthyPercentage is the Auto Scaling default.
	DefaultMinHealthyPercentage = 90
	// maxCheckpointDelay is the Auto Scaling limit (two days).
	maxCheckpointDelay = 48 * time.Hour
	// maxInstanceWarmup is the Auto Scaling limit for instance_warmup.
	maxInstanceWarmup = 24 * time.Hour
)

// Config is the wsgi-launch-template post-processor's configuration.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`
	awscfg.AccessConfig `mapstructure:",squash"`

	// ID of the launch template to add a version to, e.g. `lt-0abc123def4567890`.
	// An id names a template in one region only, so it needs an artifact
	// with one region (or `regions` with one entry). Set this or
	// `launch_template_name`.
	LaunchTemplateID string `mapstructure:"launch_template_id" required:"false"`
	// Name of the launch template, looked up in every region of the
	// artifact. Set this or `launch_template_id`.
	LaunchTemplateName string `mapstructure:"launch_template_name" required:"false"`
	// Create the template (by `launch_template_name`) in a region where it
	// does not exist yet. Its first version carries the AMI and the user data.
	CreateIfMissing bool `mapstructure:"create_if_missing" required:"false"`
	// Version the new version is based on: a version number, `$Default` or
	// `$Latest`. Every setting not given here (instance type, security
	// groups, ...) is inherited from it. Defaults to `$Default`.
	SourceVersion string `mapstructure:"source_version" required:"false"`
	// Make the new version the template's default version. Defaults to `true`.
	SetDefault *bool `mapstructure:"set_default" required:"false"`
	// Description of the new version, e.g. `"app ${build.ID}"`.
	VersionDescription string `mapstructure:"version_description" required:"false"`
	// Tags set on the launch template (at creation, or added to an existing
	// template). Versions cannot carry tags of their own.
	Tags map[string]string `mapstructure:"tags" required:"false"`
	// Regions of the artifact to update. Defaults to every region of the
	// artifact; a listed region the artifact lacks fails the build.
	Regions []string `mapstructure:"regions" required:"false"`
	// User data for the new version, e.g.
	// `data.wsgi-cloudinit.app.user_data_gzip_base64`. When neither this nor
	// `user_data_file` is set, the user data of `source_version` is kept.
	UserData string `mapstructure:"user_data" required:"false"`
	// File holding the user data, read when the configuration is prepared.
	UserDataFile string `mapstructure:"user_data_file" required:"false"`
	// How `user_data` / `user_data_file` is encoded; required with either:
	// `raw` (the document itself; it is base64-encoded for EC2 here) or
	// `gzip+base64` (already base64 of a gzip stream, as the wsgi-cloudinit
	// output `user_data_gzip_base64`; passed to EC2 unchanged). Never guessed.
	UserDataEncoding string `mapstructure:"user_data_encoding" required:"false"`
	// Source of the idempotency token. The token sent with every create call
	// is a digest of this, the region and the template, so a retry of the
	// same build does not create a second version. Defaults to a digest of
	// the AMI id, the user data, the source version and the description.
	ClientToken string `mapstructure:"client_token" required:"false"`
	// Before any call that changes AWS, check that every target AMI provides
	// what the payload needs: the user data's needs (written by the
	// wsgi-cloudinit data source) against each AMI's `wsgi:stack-provides`
	// tag, in each region. A misfit fails the build naming both sides.
	// Defaults to `true`; `false` skips the check, e.g. for an image not baked
	// by wsgi-ami. User data that is not a wsgi-cloudinit payload is never
	// checked (the build says so).
	CheckPayloadFits *bool `mapstructure:"check_payload_fits" required:"false"`
	// AMI per region for a release without a bake, e.g.
	// `data.wsgi-golden-image.shop.ami_ids`. Used only when the incoming
	// artifact carries no AMIs (the `null` builder with `communicator =
	// "none"`); an artifact with AMIs wins. Keys are regions, values AMI ids.
	AMIIDs map[string]string `mapstructure:"ami_ids" required:"false"`
	// Start an Auto Scaling instance refresh with the new version.
	InstanceRefresh *InstanceRefreshConfig `mapstructure:"instance_refresh" required:"false"`
	// After success, keep this many of the newest AMIs of the build family
	// (this build's included) in each region, deregister the older ones and
	// delete their snapshots. AMIs used by the default or latest version of
	// any launch template are kept. 0 (the default) keeps everything.
	KeepReleases int `mapstructure:"keep_releases" required:"false"`
	// Tag that marks the AMIs of one build family. Defaults to
	// `wsgi:ami-family`, the tag the wsgi-ami builder writes.
	RetentionTagKey string `mapstructure:"retention_tag_key" required:"false"`
	// Value of `retention_tag_key` to match. Defaults to the value of that
	// tag on this build's AMI in each region.
	RetentionTagValue string `mapstructure:"retention_tag_value" required:"false"`

	// userData is the base64 text sent to EC2, set by Prepare.
	userData string
}

// InstanceRefreshConfig starts an instance refresh that moves an Auto
// Scaling group to the new version.
type InstanceRefreshConfig struct {
	// Name of the Auto Scaling group. Required.
	AutoScalingGroupName string `mapstructure:"auto_scaling_group_name" required:"true"`
	// Region of the group. Defaults to `region`; it must be a region of the artifact.
	Region string `mapstructure:"region" required:"false"`
	// Percentage of the group that must stay healthy, 0 to 100. Defaults to 90.
	MinHealthyPercentage *int `mapstructure:"min_healthy_percentage" required:"false"`
	// Time a new instance needs before it counts as healthy, e.g. `2m`.
	// Defaults to the group's health check grace period.
	InstanceWarmup time.Duration `mapstructure:"instance_warmup" required:"false"`
	// Leave instances that already run the new version alone.
	SkipMatching bool `mapstructure:"skip_matching" required:"false"`
	// Roll the group back to its previous configuration when the refresh fails.
	AutoRollback bool `mapstructure:"auto_rollback" required:"false"`
	// Percentages of the group after which the refresh pauses for
	// `checkpoint_delay`, ascending, e.g. `[25, 100]`.
	CheckpointPercentages []int `mapstructure:"checkpoint_percentages" required:"false"`
	// Pause at each checkpoint, e.g. `10m`. At most `48h`.
	CheckpointDelay time.Duration `mapstructure:"checkpoint_delay" required:"false"`
	// Follow the refresh to its end and fail the build when it fails, is
	// cancelled or rolls back. Defaults to `true`.
	Wait *bool `mapstructure:"wait" required:"false"`
	// Maximum time to follow the refresh, e.g. `2h`. Defaults to `aws_polling.timeout`.
	Timeout time.Duration `mapstructure:"timeout" required:"false"`
}

var (
	templateIDRe   = regexp.MustCompile(`^lt-[0-9a-f]{8,17}$`)
	templateNameRe = regexp.MustCompile(`^[a-zA-Z0-9().\-/_]{3,128}$`)
)

// Prepare fills defaults, loads and checks the user data, and validates
// every key. Errors name the HCL key.
func (c *Config) Prepare() error {
	var errs *packersdk.MultiError
	add := func(err error) { errs = packersdk.MultiErrorAppend(errs, err) }
	for _, err := range c.AccessConfig.Prepare() {
		add(err)
	}

	switch {
	case c.LaunchTemplateID == "" && c.LaunchTemplateName == "":
		add(errors.New("launch_template_id, launch_template_name: set one of them"))
	case c.LaunchTemplateID != "" && c.LaunchTemplateName != "":
		add(errors.New("launch_template_id, launch_template_name: set only one of them"))
	case c.LaunchTemplateID != "" && !templateIDRe.MatchString(c.LaunchTemplateID):
		add(fmt.Errorf("launch_template_id: must look like lt-0abc123def4567890, got %q", c.LaunchTemplateID))
	case c.LaunchTemplateName != "" && !templateNameRe.MatchString(c.LaunchTemplateName):
		add(fmt.Errorf("launch_template_name: must be 3 to 128 letters, digits or ( ) . - / _, got %q", c.LaunchTemplateName))
	}
	if c.CreateIfMissing && c.LaunchTemplateName == "" {
		add(errors.New("create_if_missing: needs launch_template_name (a template cannot be created by id)"))
	}

	if c.SourceVersion == "" {
		c.SourceVersion = "$Default"
	}
	if !validVersion(c.SourceVersion) {
		add(fmt.Errorf("source_version: must be a version number, $Default or $Latest, got %q", c.SourceVersion))
	}
	if c.SetDefault == nil {
		t := true
		c.SetDefault = &t
	}
	if len(c.VersionDescription) > 255 {
		add(fmt.Errorf("version_description: must be at most 255 characters, got %d", len(c.VersionDescription)))
	}
	for k := range c.Tags {
		if k == "" || len(k) > 128 || hasPrefixFold(k, "aws:") {
			add(fmt.Errorf("tags: key %q must be 1 to 128 characters and not start with aws:", k))
		}
	}
	seen := map[string]bool{}
	for _, r := range c.Regions {
		if !validRegion(r) {
			add(fmt.Errorf("regions: %q is not a region name like eu-west-1", r))
		}
		if seen[r] {
			add(fmt.Errorf("regions: %q is listed twice", r))
		}
		seen[r] = true
	}
	if c.LaunchTemplateID != "" && len(c.Regions) > 1 {
		add(fmt.Errorf("regions: launch_template_id names a template in one region, got %d regions; use launch_template_name", len(c.Regions)))
	}

	if err := c.prepareUserData(); err != nil {
		add(err)
	}
	if c.CheckPayloadFits == nil {
		t := true
		c.CheckPayloadFits = &t
	}
	for _, err := range c.prepareAMIIDs() {
		add(err)
	}

	if c.KeepReleases < 0 {
		add(fmt.Errorf("keep_releases: must be 0 (keep all) or more, got %d", c.KeepReleases))
	}
	if c.RetentionTagKey == "" {
		c.RetentionTagKey = awscfg.TagAMIFamily
	}
	if c.RetentionTagValue != "" && c.KeepReleases == 0 {
		add(errors.New("retention_tag_value: only used with keep_releases"))
	}

	if c.InstanceRefresh != nil {
		for _, err := range c.InstanceRefresh.prepare(&c.AccessConfig) {
			add(err)
		}
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	return nil
}

func (r *InstanceRefreshConfig) prepare(access *awscfg.AccessConfig) []error {
	var errs []error
	if r.AutoScalingGroupName == "" {
		errs = append(errs, errors.New("instance_refresh.auto_scaling_group_name: required"))
	} else if len(r.AutoScalingGroupName) > 255 {
		errs = append(errs, fmt.Errorf("instance_refresh.auto_scaling_group_name: must be at most 255 characters, got %d", len(r.AutoScalingGroupName)))
	}
	if r.Region == "" {
		r.Region = access.Region
	}
	if r.Region != "" && !validRegion(r.Region) {
		errs = append(errs, fmt.Errorf("instance_refresh.region: %q is not a region name like eu-west-1", r.Region))
	}
	if r.MinHealthyPercentage == nil {
		v := DefaultMinHealthyPercentage
		r.MinHealthyPercentage = &v
	}
	if p := *r.MinHealthyPercentage; p < 0 || p > 100 {
		errs = append(errs, fmt.Errorf("instance_refresh.min_healthy_percentage: must be between 0 and 100, got %d", p))
	}
	if r.InstanceWarmup < 0 || r.InstanceWarmup > maxInstanceWarmup {
		errs = append(errs, fmt.Errorf("instance_refresh.instance_warmup: must be between 0s and 24h, got %s", r.InstanceWarmup))
	}
	prev := 0
	for i, p := range r.CheckpointPercentages {
		if p < 1 || p > 100 {
			errs = append(errs, fmt.Errorf("instance_refresh.checkpoint_percentages[%d]: must be between 1 and 100, got %d", i, p))
		} else if p <= prev {
			errs = append(errs, fmt.Errorf("instance_refresh.checkpoint_percentages[%d]: must be greater than the one before (%d), got %d", i, prev, p))
		}
		prev = p
	}
	if r.CheckpointDelay != 0 && len(r.CheckpointPercentages) == 0 {
		errs = append(errs, errors.New("instance_refresh.checkpoint_delay: needs checkpoint_percentages"))
	}
	if r.CheckpointDelay < 0 || r.CheckpointDelay > maxCheckpointDelay {
		errs = append(errs, fmt.Errorf("instance_refresh.checkpoint_delay: must be between 0s and 48h, got %s", r.CheckpointDelay))
	}
	if r.Wait == nil {
		t := true
		r.Wait = &t
	}
	if r.Timeout == 0 {
		r.Timeout = access.WaitTimeout()
	}
	if r.Timeout < 0 {
		errs = append(errs, fmt.Errorf("instance_refresh.timeout: must be positive, got %s", r.Timeout))
	}
	return errs
}

func validVersion(v string) bool {
	if v == "$Default" || v == "$Latest" {
		return true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n >= 1
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// validRegion checks only the shape "letters-words-digit", as awscfg does:
// new partitions add new prefixes.
func validRegion(r string) bool {
	return regionRe.MatchString(r)
}

var regionRe = regexp.MustCompile(`^[a-z]+(-[a-z0-9]+)+-?[0-9]$`)
