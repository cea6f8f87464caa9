//go:generate packer-sdc mapstructure-to-hcl2 -type SourceConfig,AMIFilter

package builder

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// ssmPrefix marks a source_ami that is an SSM parameter holding an AMI id,
// the same syntax as CloudFormation and launch templates.
const ssmPrefix = "resolve:ssm:"

// ownerAliases are the owner names DescribeImages takes besides account ids.
var ownerAliases = []string{"self", "amazon", "aws-marketplace", "aws-backup-vault"}

var amiIDPattern = regexp.MustCompile(`^ami-[0-9a-f]{8}([0-9a-f]{9})?$`)

// AMIFilter selects the source AMI by DescribeImages filters.
type AMIFilter struct {
	// DescribeImages filters, e.g. `name = "debian-12-amd64-*"`.
	Filters map[string]string `mapstructure:"filters" required:"true"`
	// Owners the AMI must belong to: account ids, `self`, `amazon` or an
	// alias. Required, so that a look-alike public AMI cannot be picked.
	Owners []string `mapstructure:"owners" required:"true"`
	// Pick the newest of several matches instead of failing.
	MostRecent bool `mapstructure:"most_recent" required:"false"`
	// Also match deprecated AMIs.
	IncludeDeprecated bool `mapstructure:"include_deprecated" required:"false"`
}

// SourceConfig says which AMI the build instance starts from. Set exactly
// one of source_ami and source_ami_filter.
type SourceConfig struct {
	// AMI id (`ami-0123456789abcdef0`) or an SSM parameter holding one,
	// e.g. `resolve:ssm:/aws/service/debian/release/12/latest/amd64`.
	SourceAMI string `mapstructure:"source_ami" required:"false"`
	// Find the source AMI with DescribeImages.
	SourceAMIFilter *AMIFilter `mapstructure:"source_ami_filter" required:"false"`
}

// SSMParameter returns the parameter name when source_ami is an SSM alias.
func (c *SourceConfig) SSMParameter() (string, bool) {
	if !strings.HasPrefix(c.SourceAMI, ssmPrefix) {
		return "", false
	}
	return strings.TrimPrefix(c.SourceAMI, ssmPrefix), true
}

// Prepare validates the block.
func (c *SourceConfig) Prepare() []error {
	var errs []error
	hasFilter := c.SourceAMIFilter != nil
	switch {
	case c.SourceAMI == "" && !hasFilter:
		errs = append(errs, fmt.Errorf("source_ami: set source_ami or source_ami_filter"))
	case c.SourceAMI != "" && hasFilter:
		errs = append(errs, fmt.Errorf("source_ami: set source_ami or source_ami_filter, not both"))
	}
	if c.SourceAMI != "" {
		if name, ok := c.SSMParameter(); ok {
			if !strings.HasPrefix(name, "/") || len(name) < 2 {
				errs = append(errs, fmt.Errorf("source_ami: the SSM parameter must be an absolute name like resolve:ssm:/aws/service/debian/release/12/latest/amd64, got %q", c.SourceAMI))
			}
		} else if !amiIDPattern.MatchString(c.SourceAMI) {
			errs = append(errs, fmt.Errorf("source_ami: must be an AMI id like ami-0123456789abcdef0 or resolve:ssm:/PARAMETER, got %q", c.SourceAMI))
		}
	}
	if hasFilter {
		f := c.SourceAMIFilter
		if len(f.Filters) == 0 {
			errs = append(errs, fmt.Errorf("source_ami_filter.filters: must have at least one filter, e.g. name = \"debian-12-amd64-*\""))
		}
		if len(f.Owners) == 0 {
			errs = append(errs, fmt.Errorf("source_ami_filter.owners: required, e.g. [\"amazon\"] or an account id"))
		}
		for _, o := range f.Owners {
			if !slices.Contains(ownerAliases, o) && awscfg.CheckAccountID("source_ami_filter.owners", o) != nil {
				errs = append(errs, fmt.Errorf("source_ami_filter.owners: %q is neither a 12-digit account id nor one of %s", o, strings.Join(ownerAliases, ", ")))
			}
		}
	}
	return errs
}
