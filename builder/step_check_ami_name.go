package builder

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepCheckAMIName fails early, before anything is launched, when an AMI
// of the same name exists in a target region and force_deregister is off.
// It makes nothing.
type stepCheckAMIName struct {
	EC2     clientFor[describeImagesAPI]
	Name    string
	Regions []string
	Force   bool
}

func (s *stepCheckAMIName) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	for _, region := range s.Regions {
		c, err := s.EC2(ctx, region)
		if err != nil {
			return halt(state, err)
		}
		imgs, err := imagesNamed(ctx, c, s.Name)
		if err != nil {
			return halt(state, fmt.Errorf("ami_name: looking for %q in %s: %w", s.Name, region, err))
		}
		if len(imgs) == 0 {
			continue
		}
		if !s.Force {
			return halt(state, fmt.Errorf("ami_name: %s already has an AMI named %q (%s); choose another name or set force_deregister = true",
				region, s.Name, aws.ToString(imgs[0].ImageId)))
		}
		say(ui(state), fmt.Sprintf("%s has an AMI named %q (%s); it will be deregistered before the new one is made",
			region, s.Name, aws.ToString(imgs[0].ImageId)))
	}
	return multistep.ActionContinue
}

func (s *stepCheckAMIName) Cleanup(multistep.StateBag) {}
