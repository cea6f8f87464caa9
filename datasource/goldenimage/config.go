//go:generate packer-sdc mapstructure-to-hcl2 -type Config,Output

// Package goldenimage is the `data "wsgi-golden-image"` Packer data source: the newest golden
// image of an app family (by the wsgi:ami-family tag the wsgi-ami builder writes) in each region,
// with its stack tags, so that wsgi-launch-template can ship a release on it without a bake.
package goldenimage

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// Config is the HCL body of `data "wsgi-golden-image"`.
type Config struct {
	awscfg.AccessConfig `mapstructure:",squash"`

	// Value of the `wsgi:ami-family` tag to find, the builder's `ami_family` (by default the
	// build name), e.g. `shop`. Required.
	Family string `mapstructure:"family" required:"true"`
	// Regions to look in, e.g. `["eu-west-1", "us-east-1"]`; every one must have an image.
	// Defaults to `region`.
	Regions []string `mapstructure:"regions" required:"false"`
	// Owners of the images: account ids, `self` or an alias. Defaults to `["self"]`, the
	// account of the credentials.
	Owners []string `mapstructure:"owners" required:"false"`
	// More DescribeImages filters, ANDed with the family, e.g.
	// `{ "tag:App" = "shop", "architecture" = "arm64" }`. `state` is always `available`.
	Filters map[string]string `mapstructure:"filters" required:"false"`
}

var ownerRe = regexp.MustCompile(`^([0-9]{12}|self|amazon|aws-marketplace|aws-backup-vault|[a-z][a-z0-9-]*)$`)

// Prepare fills defaults and validates every key; errors name the HCL key.
func (c *Config) Prepare() []error {
	errs := c.AccessConfig.Prepare()
	switch {
	case c.Family == "":
		errs = append(errs, errors.New("family: required: the wsgi:ami-family tag value of the images, the builder's ami_family (by default the build name)"))
	case len(c.Family) > 256:
		errs = append(errs, fmt.Errorf("family: must be at most 256 characters (an AWS tag value), got %d", len(c.Family)))
	}
	seen := map[string]bool{}
	for _, r := range c.Regions {
		if err := awscfg.CheckRegion("regions", r); err != nil {
			errs = append(errs, err)
		}
		if seen[r] {
			errs = append(errs, fmt.Errorf("regions: %q is listed twice", r))
		}
		seen[r] = true
	}
	if len(c.Owners) == 0 {
		c.Owners = []string{"self"}
	}
	for _, o := range c.Owners {
		if !ownerRe.MatchString(o) {
			errs = append(errs, fmt.Errorf("owners: %q is not an account id (12 digits), self or an owner alias such as amazon", o))
		}
	}
	for k := range c.Filters {
		switch {
		case k == "state":
			errs = append(errs, errors.New("filters: state is always available; remove it"))
		case k == "tag:"+awscfg.TagAMIFamily:
			errs = append(errs, fmt.Errorf("filters: %s is set by family; remove it", k))
		case strings.TrimSpace(k) == "":
			errs = append(errs, errors.New("filters: a filter name is empty"))
		}
	}
	return errs
}
