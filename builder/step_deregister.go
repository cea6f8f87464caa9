package builder

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type deregisterAPI interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
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
			id := aws.ToString(img.ImageId)
			say(ui(state), fmt.Sprintf("Deregistering %s (%s) in %s", id, s.Name, region))
			if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: img.ImageId}); err != nil {
				return halt(state, fmt.Errorf("force_deregister: deregistering %s in %s: %w", id, region, err))
			}
			for _, snap := range snapshotIDs(img) {
				if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
					return halt(state, fmt.Errorf("force_deregister: deleting snapshot %s of %s in %s: %w", snap, id, region, err))
				}
			}
		}
	}
	return multistep.ActionContinue
}

func (s *stepDeregister) Cleanup(multistep.StateBag) {}
