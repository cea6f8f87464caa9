package builder

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type sourceImageAPI interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeInstanceTypes(context.Context, *ec2.DescribeInstanceTypesInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
}

type parameterAPI interface {
	GetParameter(context.Context, *ssm.GetParameterInput, ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// stepSourceAMI resolves source_ami (id, SSM alias or filter) to one image
// and checks that every instance type can run its architecture and that it
// has the boot mode asked for. It makes nothing.
type stepSourceAMI struct {
	EC2      sourceImageAPI
	SSM      parameterAPI
	Source   SourceConfig
	Types    []string
	BootMode string
	Region   string
}

func (s *stepSourceAMI) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	img, err := s.resolve(ctx)
	if err != nil {
		return halt(state, err)
	}
	if err := s.checkInstanceTypes(ctx, img); err != nil {
		return halt(state, err)
	}
	if s.BootMode != "" && img.BootMode != "" && string(img.BootMode) != s.BootMode {
		return halt(state, fmt.Errorf("boot_mode: the source AMI %s boots with %s, not %s; an AMI made from an instance keeps the source's boot mode",
			aws.ToString(img.ImageId), img.BootMode, s.BootMode))
	}
	say(ui(state), fmt.Sprintf("Source AMI: %s (%s, %s)", aws.ToString(img.ImageId), aws.ToString(img.Name), img.Architecture))
	put(state, keySourceImage, img)
	putGenerated(state, map[string]string{
		"SourceAMI":             aws.ToString(img.ImageId),
		"SourceAMIName":         aws.ToString(img.Name),
		"SourceAMIOwner":        aws.ToString(img.OwnerId),
		"SourceAMICreationDate": aws.ToString(img.CreationDate),
		"BuildRegion":           s.Region,
	})
	return multistep.ActionContinue
}

func (s *stepSourceAMI) Cleanup(multistep.StateBag) {}

func (s *stepSourceAMI) resolve(ctx context.Context) (ec2types.Image, error) {
	in := &ec2.DescribeImagesInput{}
	what := ""
	switch name, isSSM := s.Source.SSMParameter(); {
	case isSSM:
		out, err := s.SSM.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
		if err != nil {
			return ec2types.Image{}, fmt.Errorf("source_ami: reading SSM parameter %s: %w", name, err)
		}
		id := aws.ToString(out.Parameter.Value)
		if !amiIDPattern.MatchString(id) {
			return ec2types.Image{}, fmt.Errorf("source_ami: SSM parameter %s holds %q, not an AMI id", name, id)
		}
		in.ImageIds = []string{id}
		what = fmt.Sprintf("%s (from %s)", id, name)
	case s.Source.SourceAMI != "":
		in.ImageIds = []string{s.Source.SourceAMI}
		what = s.Source.SourceAMI
	default:
		f := s.Source.SourceAMIFilter
		in.Owners = f.Owners
		in.IncludeDeprecated = aws.Bool(f.IncludeDeprecated)
		in.Filters = filters(f.Filters)
		what = fmt.Sprintf("filter %v owners %v", f.Filters, f.Owners)
	}
	var images []ec2types.Image
	p := ec2.NewDescribeImagesPaginator(s.EC2, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return ec2types.Image{}, fmt.Errorf("source_ami: describing %s: %w", what, err)
		}
		images = append(images, out.Images...)
	}
	switch {
	case len(images) == 0:
		return ec2types.Image{}, fmt.Errorf("source_ami: no AMI matches %s", what)
	case len(images) > 1 && (s.Source.SourceAMIFilter == nil || !s.Source.SourceAMIFilter.MostRecent):
		return ec2types.Image{}, fmt.Errorf("source_ami_filter: %d AMIs match %s; narrow the filters or set most_recent = true", len(images), what)
	}
	// Newest first; CreationDate is RFC 3339, so text order is time order.
	slices.SortStableFunc(images, func(a, b ec2types.Image) int {
		return strings.Compare(aws.ToString(b.CreationDate), aws.ToString(a.CreationDate))
	})
	return images[0], nil
}

func (s *stepSourceAMI) checkInstanceTypes(ctx context.Context, img ec2types.Image) error {
	out, err := s.EC2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{
		InstanceTypes: toInstanceTypes(s.Types),
	})
	if err != nil {
		return fmt.Errorf("instance_type: describing %s: %w", strings.Join(s.Types, ", "), err)
	}
	arch := map[string][]string{}
	for _, it := range out.InstanceTypes {
		var a []string
		if it.ProcessorInfo != nil {
			for _, x := range it.ProcessorInfo.SupportedArchitectures {
				a = append(a, string(x))
			}
		}
		arch[string(it.InstanceType)] = a
	}
	for _, t := range s.Types {
		a, ok := arch[t]
		if !ok {
			return fmt.Errorf("instance_type: %s is not offered in this region", t)
		}
		if !slices.Contains(a, string(img.Architecture)) {
			return fmt.Errorf("instance_type: %s runs %s, but the source AMI %s is %s",
				t, strings.Join(a, "/"), aws.ToString(img.ImageId), img.Architecture)
		}
	}
	return nil
}

func toInstanceTypes(types []string) []ec2types.InstanceType {
	out := make([]ec2types.InstanceType, len(types))
	for i, t := range types {
		out[i] = ec2types.InstanceType(t)
	}
	return out
}
