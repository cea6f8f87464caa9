package goldenimage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/zclconf/go-cty/cty"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// Output is what the data source gives to the rest of the template. The maps are keyed by
// region; the single values are those of the first region (regions[0], or region).
type Output struct {
	// AMI id per region, e.g. `{ "eu-west-1" = "ami-0123…" }`: the form wsgi-launch-template's
	// `ami_ids` takes.
	AMIIDs map[string]string `mapstructure:"ami_ids"`
	// AMI name per region.
	Names map[string]string `mapstructure:"names"`
	// Creation date per region (RFC 3339, as EC2 gives it).
	CreationDates map[string]string `mapstructure:"creation_dates"`
	// The `wsgi:stack-schema` tag per region: the stack schema version ("" when untagged).
	StackSchemas map[string]string `mapstructure:"stack_schemas"`
	// The `wsgi:stack-digest` tag per region: sha256 of the baked stack description.
	StackDigests map[string]string `mapstructure:"stack_digests"`
	// The `wsgi:stack-provides` tag per region: what the image provides to a payload.
	StackProvides map[string]string `mapstructure:"stack_provides"`
	// The first region.
	Region string `mapstructure:"region"`
	// AMI id in the first region.
	ID string `mapstructure:"id"`
	// AMI name in the first region.
	Name string `mapstructure:"name"`
	// Creation date in the first region.
	CreationDate string `mapstructure:"creation_date"`
}

// describeImagesAPI is the one EC2 call the data source makes.
type describeImagesAPI interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
}

// Datasource is the wsgi-golden-image data source.
type Datasource struct {
	config Config

	// newEC2 builds the client for one region and says which region it is (the profile's
	// when region is empty); tests put fakes here.
	newEC2 func(ctx context.Context, region string) (describeImagesAPI, string, error)
	// now is the clock deprecation times are compared to.
	now func() time.Time
}

var _ packersdk.Datasource = (*Datasource)(nil)

// ConfigSpec is the HCL layout of the data source's body.
func (d *Datasource) ConfigSpec() hcldec.ObjectSpec { return d.config.FlatMapstructure().HCL2Spec() }

// OutputSpec is the HCL layout of the outputs.
func (d *Datasource) OutputSpec() hcldec.ObjectSpec {
	return (&Output{}).FlatMapstructure().HCL2Spec()
}

// Configure decodes and validates; it makes no AWS call, so `packer validate` needs no
// credentials.
func (d *Datasource) Configure(raws ...interface{}) error {
	if err := config.Decode(&d.config, &config.DecodeOpts{PluginType: "wsgi-golden-image"}, raws...); err != nil {
		return fmt.Errorf("wsgi-golden-image: %w", err)
	}
	var errs *packersdk.MultiError
	for _, err := range d.config.Prepare() {
		errs = packersdk.MultiErrorAppend(errs, err)
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	return nil
}

// Execute finds the newest image of the family in every region; a region without one fails.
func (d *Datasource) Execute() (cty.Value, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.config.WaitTimeout())
	defer cancel()
	out, err := d.find(ctx)
	if err != nil {
		return cty.NullVal(cty.EmptyObject), err
	}
	return hcl2helper.HCL2ValueFromConfig(out, d.OutputSpec()), nil
}

func (d *Datasource) find(ctx context.Context) (Output, error) {
	c := &d.config
	newEC2, now := d.newEC2, d.now
	if newEC2 == nil {
		newEC2 = func(ctx context.Context, region string) (describeImagesAPI, string, error) {
			cfg, err := c.AccessConfig.Config(ctx, region)
			if err != nil {
				return nil, "", err
			}
			return c.AccessConfig.NewEC2(cfg), cfg.Region, nil
		}
	}
	if now == nil {
		now = time.Now
	}
	regions := c.Regions
	if len(regions) == 0 {
		regions = []string{c.Region}
	}
	out := Output{AMIIDs: map[string]string{}, Names: map[string]string{}, CreationDates: map[string]string{},
		StackSchemas: map[string]string{}, StackDigests: map[string]string{}, StackProvides: map[string]string{}}
	var errs []error
	for i, r := range regions {
		api, region, err := newEC2(ctx, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("wsgi-golden-image: %s: %w", r, err))
			continue
		}
		img, err := c.newest(ctx, api, region, now())
		if err != nil {
			errs = append(errs, fmt.Errorf("wsgi-golden-image: %w", err))
			continue
		}
		tags := map[string]string{}
		for _, t := range img.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		out.AMIIDs[region] = aws.ToString(img.ImageId)
		out.Names[region] = aws.ToString(img.Name)
		out.CreationDates[region] = aws.ToString(img.CreationDate)
		out.StackSchemas[region] = tags[contract.TagSchema]
		out.StackDigests[region] = tags[contract.TagDigest]
		out.StackProvides[region] = tags[contract.TagProvides]
		if i == 0 {
			out.Region, out.ID, out.Name, out.CreationDate = region, aws.ToString(img.ImageId), aws.ToString(img.Name), aws.ToString(img.CreationDate)
		}
	}
	return out, errors.Join(errs...)
}

// newest lists the family's available images in one region and returns the newest that is not
// deprecated. DescribeImages leaves deprecated images out already; the deprecation time is
// checked here as well, so an image whose time has come is never picked.
func (c *Config) newest(ctx context.Context, api describeImagesAPI, region string, now time.Time) (types.Image, error) {
	filters := []types.Filter{
		{Name: aws.String("tag:" + awscfg.TagAMIFamily), Values: []string{c.Family}},
		{Name: aws.String("state"), Values: []string{string(types.ImageStateAvailable)}},
	}
	for _, k := range slices.Sorted(maps.Keys(c.Filters)) {
		filters = append(filters, types.Filter{Name: aws.String(k), Values: []string{c.Filters[k]}})
	}
	p := ec2.NewDescribeImagesPaginator(api, &ec2.DescribeImagesInput{
		Owners:            c.Owners,
		Filters:           filters,
		IncludeDeprecated: aws.Bool(false),
	})
	var found []types.Image
	deprecated := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return types.Image{}, fmt.Errorf("%s: listing the AMIs tagged %s=%s: %w", region, awscfg.TagAMIFamily, c.Family, err)
		}
		for _, img := range page.Images {
			if img.State != "" && img.State != types.ImageStateAvailable {
				continue
			}
			if isDeprecated(img, now) {
				deprecated++
				continue
			}
			found = append(found, img)
		}
	}
	if len(found) == 0 {
		extra := ""
		if deprecated > 0 {
			extra = fmt.Sprintf(" (%d deprecated ones are left out)", deprecated)
		}
		return types.Image{}, fmt.Errorf("%s: no available, non-deprecated AMI tagged %s=%s owned by %s%s; bake one first (the wsgi-ami builder with ami_family = %q, in this region or copied to it with ami_regions)",
			region, awscfg.TagAMIFamily, c.Family, strings.Join(c.Owners, ", "), extra, c.Family)
	}
	// Newest first; the AMI id breaks a tie so that the choice never depends on the order of
	// EC2's answer.
	sort.Slice(found, func(i, j int) bool {
		ti, tj := created(found[i]), created(found[j])
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return aws.ToString(found[i].ImageId) > aws.ToString(found[j].ImageId)
	})
	return found[0], nil
}

func created(img types.Image) time.Time {
	t, _ := time.Parse(time.RFC3339, aws.ToString(img.CreationDate))
	return t
}

func isDeprecated(img types.Image, now time.Time) bool {
	if img.DeprecationTime == nil {
		return false
	}
	t, err := time.Parse(time.RFC3339, *img.DeprecationTime)
	return err == nil && !t.After(now)
}
