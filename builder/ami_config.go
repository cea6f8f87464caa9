//go:generate packer-sdc mapstructure-to-hcl2 -type AMIConfig

package builder

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

var amiNamePattern = regexp.MustCompile(`^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$`)

// AMIConfig is the image the build makes.
type AMIConfig struct {
	// Name of the AMI, unique in the account and region; template
	// functions work, e.g. `wsgi-app-{{timestamp}}`. Required.
	AMIName string `mapstructure:"ami_name" required:"true"`
	// Description of the AMI. `{{ .SourceAMI }}`, `{{ .SourceAMIName }}` and
	// `{{ .BuildRegion }}` are available.
	AMIDescription string `mapstructure:"ami_description" required:"false"`
	// Family the AMI belongs to, written to the `wsgi:ami-family` tag; the
	// wsgi-launch-template post-processor keeps the newest N of a family.
	// Defaults to the build's name.
	AMIFamily string `mapstructure:"ami_family" required:"false"`
	// Tags of the AMI in every region. Same template data as ami_description.
	Tags map[string]string `mapstructure:"tags" required:"false"`
	// Tags of the AMI's snapshots in every region.
	SnapshotTags map[string]string `mapstructure:"snapshot_tags" required:"false"`
	// `v2.0` (instances of the AMI require IMDSv2) or `off`. Defaults to `v2.0`.
	IMDSSupport string `mapstructure:"imds_support" required:"false"`
	// Enable ENA on the build instance before imaging. Defaults to true.
	ENASupport *bool `mapstructure:"ena_support" required:"false"`
	// `legacy-bios`, `uefi` or `uefi-preferred`. An AMI made from an instance
	// inherits the source AMI's boot mode, so this asserts that the source
	// AMI has this mode (or none) and fails early otherwise.
	BootMode string `mapstructure:"boot_mode" required:"false"`
	// Other regions to copy the AMI to, in parallel.
	AMIRegions []string `mapstructure:"ami_regions" required:"false"`
	// KMS key per region for the copies (the region copy is then encrypted
	// with that key), e.g. `{ "us-east-1" = "alias/ami" }`.
	RegionKMSKeyIDs map[string]string `mapstructure:"region_kms_key_ids" required:"false"`
	// Account ids that may launch the AMI.
	AMIUsers []string `mapstructure:"ami_users" required:"false"`
	// Organization ARNs that may launch the AMI.
	AMIOrgARNs []string `mapstructure:"ami_org_arns" required:"false"`
	// Organizational unit ARNs that may launch the AMI.
	AMIOUARNs []string `mapstructure:"ami_ou_arns" required:"false"`
	// Groups that may launch the AMI: only `all`, which makes it public.
	// A public AMI cannot have encrypted snapshots, so this needs
	// root_volume.encrypted = false.
	AMIGroups []string `mapstructure:"ami_groups" required:"false"`
	// Account ids that may create volumes from the AMI's snapshots, in
	// every region.
	SnapshotUsers []string `mapstructure:"snapshot_users" required:"false"`
	// Groups that may create volumes from the AMI's snapshots: only `all`
	// (public; needs root_volume.encrypted = false).
	SnapshotGroups []string `mapstructure:"snapshot_groups" required:"false"`
	// When the AMI becomes deprecated: an RFC 3339 time
	// (`2027-01-01T00:00:00Z`) or a duration from the build (`4320h`).
	DeprecateAt string `mapstructure:"deprecate_at" required:"false"`
	// Deregister an existing AMI of the same name (and delete its
	// snapshots) in every target region before making the new one.
	ForceDeregister bool `mapstructure:"force_deregister" required:"false"`
	// Run the build instance and the provisioners, then stop without making
	// an AMI (a test of the provisioning). The build has no artifact.
	SkipCreateAMI bool `mapstructure:"skip_create_ami" required:"false"`

	deprecateAt time.Time
}

// ENA reports whether ENA is enabled (default true).
func (c *AMIConfig) ENA() bool { return c.ENASupport == nil || *c.ENASupport }

// DeprecationTime is deprecate_at resolved against the time of Prepare;
// zero when unset.
func (c *AMIConfig) DeprecationTime() time.Time { return c.deprecateAt }

// Prepare fills defaults and validates the block. buildRegion is the
// access block's region (may be empty when it comes from the profile).
func (c *AMIConfig) Prepare(buildRegion string, now time.Time) []error {
	var errs []error
	switch {
	case c.AMIName == "":
		errs = append(errs, fmt.Errorf("ami_name: required, e.g. \"wsgi-app-{{timestamp}}\""))
	case !amiNamePattern.MatchString(c.AMIName):
		errs = append(errs, fmt.Errorf("ami_name: must be 3-128 letters, digits, spaces and ()[]./-'@_, got %q", c.AMIName))
	}
	if len(c.AMIDescription) > 255 {
		errs = append(errs, fmt.Errorf("ami_description: must be at most 255 characters, got %d", len(c.AMIDescription)))
	}
	if c.IMDSSupport == "" {
		c.IMDSSupport = "v2.0"
	}
	if c.IMDSSupport != "v2.0" && c.IMDSSupport != "off" {
		errs = append(errs, fmt.Errorf("imds_support: must be \"v2.0\" or \"off\", got %q", c.IMDSSupport))
	}
	switch c.BootMode {
	case "", "legacy-bios", "uefi", "uefi-preferred":
	default:
		errs = append(errs, fmt.Errorf("boot_mode: must be legacy-bios, uefi or uefi-preferred, got %q", c.BootMode))
	}
	seen := map[string]bool{}
	var regions []string
	for _, r := range c.AMIRegions {
		switch {
		case r == "":
			errs = append(errs, fmt.Errorf("ami_regions: empty region"))
		case awscfg.CheckRegion("ami_regions", r) != nil:
			errs = append(errs, awscfg.CheckRegion("ami_regions", r))
		case r == buildRegion:
			// The AMI is already there; copying it would make a second one.
		case seen[r]:
		default:
			seen[r] = true
			regions = append(regions, r)
		}
	}
	c.AMIRegions = regions
	for _, r := range slices.Sorted(maps.Keys(c.RegionKMSKeyIDs)) {
		if err := awscfg.CheckRegion("region_kms_key_ids", r); err != nil {
			errs = append(errs, err)
		} else if !seen[r] {
			errs = append(errs, fmt.Errorf("region_kms_key_ids: %q is not in ami_regions", r))
		}
		errs = appendErr(errs, awscfg.CheckKMSKey("region_kms_key_ids."+r, c.RegionKMSKeyIDs[r]))
	}
	for _, u := range c.AMIUsers {
		errs = appendErr(errs, awscfg.CheckAccountID("ami_users", u))
	}
	for _, u := range c.SnapshotUsers {
		errs = appendErr(errs, awscfg.CheckAccountID("snapshot_users", u))
	}
	for _, m := range []struct {
		key    string
		groups []string
	}{{"ami_groups", c.AMIGroups}, {"snapshot_groups", c.SnapshotGroups}} {
		for _, g := range m.groups {
			if g != "all" {
				errs = append(errs, fmt.Errorf("%s: the only group is \"all\" (public), got %q", m.key, g))
			}
		}
	}
	for _, a := range c.AMIOrgARNs {
		if !strings.HasPrefix(a, "arn:") || !strings.Contains(a, ":organization/") {
			errs = append(errs, fmt.Errorf("ami_org_arns: %q is not an organization ARN like arn:aws:organizations::123456789012:organization/o-abc", a))
		}
	}
	for _, a := range c.AMIOUARNs {
		if !strings.HasPrefix(a, "arn:") || !strings.Contains(a, ":ou/") {
			errs = append(errs, fmt.Errorf("ami_ou_arns: %q is not an OU ARN like arn:aws:organizations::123456789012:ou/o-abc/ou-xyz", a))
		}
	}
	if c.DeprecateAt != "" {
		if t, err := time.Parse(time.RFC3339, c.DeprecateAt); err == nil {
			c.deprecateAt = t
		} else if d, err := time.ParseDuration(c.DeprecateAt); err == nil {
			c.deprecateAt = now.Add(d)
		} else {
			errs = append(errs, fmt.Errorf("deprecate_at: must be an RFC 3339 time like 2027-01-01T00:00:00Z or a duration like 4320h, got %q", c.DeprecateAt))
		}
		if !c.deprecateAt.IsZero() && !c.deprecateAt.After(now) {
			errs = append(errs, fmt.Errorf("deprecate_at: must be in the future, got %s", c.deprecateAt.Format(time.RFC3339)))
		}
	}
	errs = append(errs, reservedTagKeys("tags", c.Tags)...)
	errs = append(errs, reservedTagKeys("snapshot_tags", c.SnapshotTags)...)
	return errs
}

// reservedTagKeys checks every key of one tag map against reservedTagKey.
func reservedTagKeys(field string, tags map[string]string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		if err := reservedTagKey(k); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", field, k, err))
		}
	}
	return errs
}
