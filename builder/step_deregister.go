package builder

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/ami"
)

type deregisterAPI interface {
	describeImagesAPI
	ami.DeleteAPI
}

// stepDeregister (force_deregister) removes the account's AMIs named
// ami_name, and their snapshots, in every target region, right before the
// new AMI is made, so a build that fails earlier keeps the old one. Its
// Cleanup has nothing to undo: it removes what the user asked to replace.
type stepDeregister struct {
	EC2     clientFor[deregisterAPI]
	Name    string
	Regions []string
}

func (s *stepDeregister) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	for _, region := range s.Regions {
		c, err := s.EC2(ctx, region)
		if err != nil {
			return halt(state, err)
		}
		imgs, err := imagesNamed(ctx, c, s.Name)
		if err != nil {
			return halt(state, fmt.Errorf("force_deregister: looking for %q in %s: %w", s.Name, region, err))
		}
		for _, img := range imgs {
			say(ui(state), fmt.Sprintf("Deregistering %s (%s) in %s", aws.ToString(img.ImageId), s.Name, region))
			if _, err := ami.Delete(ctx, c, img); err != nil {
				return halt(state, fmt.Errorf("force_deregister: in %s: %w", region, err))
			}
		}
	}
	return multistep.ActionContinue
}

func (s *stepDeregister) Cleanup(multistep.StateBag) {}
