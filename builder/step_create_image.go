package builder

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

type imageAPI interface {
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	CreateImage(context.Context, *ec2.CreateImageInput, ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// stepCreateImage makes the AMI of the stopped instance, tagged in the same
// call, waits until it is available and tags its snapshots. When the
// build does not succeed, Cleanup deregisters it and deletes its snapshots;
// when CreateImage was interrupted before it answered, it finds them by the
// build's tag.
type stepCreateImage struct {
	EC2    imageAPI
	Cfg    *Config
	Region string
	Wait   waitConfig

	attempted bool
	id        string
}

func (s *stepCreateImage) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	u := ui(state)
	inst := get[ec2types.Instance](state, keyInstance)
	info := infoFrom(get[ec2types.Image](state, keySourceImage), s.Region)
	text, err := s.Cfg.imageText(info, get[map[string]string](state, keyStackTags))
	if err != nil {
		return halt(state, err)
	}
	desc, imgTags, snapTags := text.description, text.imageTags, text.snapTags
	in := &ec2.CreateImageInput{
		InstanceId: inst.InstanceId,
		Name:       aws.String(s.Cfg.AMIName),
		// Snapshots are tagged once known: not every EC2 implementation
		// takes snapshot tags in CreateImage (moto does not).
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeImage, Tags: imgTags},
		},
	}
	if desc != "" {
		in.Description = aws.String(desc)
	}
	say(u, fmt.Sprintf("Creating AMI %q from %s", s.Cfg.AMIName, aws.ToString(inst.InstanceId)))
	s.attempted = true
	out, err := s.EC2.CreateImage(ctx, in)
	if err != nil {
		return halt(state, fmt.Errorf("creating AMI %q: %w", s.Cfg.AMIName, err))
	}
	s.id = aws.ToString(out.ImageId)
	put(state, keyImages, map[string]string{s.Region: s.id})
	say(u, fmt.Sprintf("AMI %s in %s", s.id, s.Region))

	img, err := waitImage(ctx, u, s.EC2, s.Region, s.id, s.Wait)
	if err != nil {
		return halt(state, err)
	}
	if snaps := snapshotIDs(img); len(snaps) > 0 {
		if _, err := s.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: snaps, Tags: snapTags}); err != nil {
			return halt(state, fmt.Errorf("snapshot_tags: tagging %v: %w", snaps, err))
		}
	}
	put(state, keySnapshots, map[string][]string{s.Region: snapshotIDs(img)})
	put(state, keyImageDetails, map[string]ec2types.Image{s.Region: img})
	return multistep.ActionContinue
}

// waitImage waits until an AMI is available and returns it.
func waitImage(ctx context.Context, u uiSayer, c ec2.DescribeImagesAPIClient, region, id string, wc waitConfig) (ec2types.Image, error) {
	w := ec2.NewImageAvailableWaiter(c, func(o *ec2.ImageAvailableWaiterOptions) {
		o.MinDelay, o.MaxDelay = wc.minDelay(), wc.maxDelay()
	})
	var out *ec2.DescribeImagesOutput
	err := waitFor(ctx, u, fmt.Sprintf("AMI %s in %s to be available", id, region), func(ctx context.Context) error {
		var err error
		out, err = w.WaitForOutput(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}, wc.timeout())
		return err
	})
	if err != nil {
		return ec2types.Image{}, err
	}
	if len(out.Images) != 1 {
		return ec2types.Image{}, fmt.Errorf("describing AMI %s in %s: got %d images", id, region, len(out.Images))
	}
	return out.Images[0], nil
}

func (s *stepCreateImage) Cleanup(state multistep.StateBag) {
	if !s.attempted || !failed(state) {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	removeImage(ctx, ui(state), s.EC2, s.Region, s.id, s.Cfg.AMIName, s.Cfg.buildID)
}

// deleteImageAPI is what removing an AMI and its snapshots takes.
type deleteImageAPI interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// removeImage deregisters the AMI (by id; when the id was never returned,
// the account's AMI named name, tagged with buildID when that is set) and deletes its snapshots and any
// snapshot tagged with this build, in one region. Problems are reported,
// not returned: a cleanup goes on with the rest.
func removeImage(ctx context.Context, u uiSayer, c deleteImageAPI, region, id, name, buildID string) {
	in := &ec2.DescribeImagesInput{ImageIds: []string{id}}
	if id == "" {
		in = &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{
			{Name: aws.String("name"), Values: []string{name}},
		}}
		if buildID != "" {
			in.Filters = append(in.Filters, ec2types.Filter{Name: aws.String("tag:" + awscfg.TagBuildID), Values: []string{buildID}})
		}
	}
	snaps := map[string]bool{}
	out, err := c.DescribeImages(ctx, in)
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && strings.HasPrefix(apiErr.ErrorCode(), "InvalidAMIID.") {
		// Already gone (an earlier cleanup removed it).
		out, err = &ec2.DescribeImagesOutput{}, nil
	}
	if err != nil {
		sayErr(u, fmt.Sprintf("describing AMI %s in %s for cleanup: %v; check for it by hand", id, region, err))
	} else {
		for _, img := range out.Images {
			imgID := aws.ToString(img.ImageId)
			say(u, fmt.Sprintf("Deregistering AMI %s in %s", imgID, region))
			if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: img.ImageId}); err != nil {
				sayErr(u, fmt.Sprintf("deregistering %s in %s: %v; deregister it by hand", imgID, region, err))
			}
			for _, sn := range snapshotIDs(img) {
				snaps[sn] = true
			}
		}
	}
	if buildID != "" {
		tagged, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{
			{Name: aws.String("tag:" + awscfg.TagBuildID), Values: []string{buildID}},
		}})
		if err != nil {
			sayErr(u, fmt.Sprintf("looking for snapshots of build %s in %s: %v", buildID, region, err))
		} else {
			for _, sn := range tagged.Snapshots {
				snaps[aws.ToString(sn.SnapshotId)] = true
			}
		}
	}
	for _, sn := range sortedKeys(snaps) {
		say(u, fmt.Sprintf("Deleting snapshot %s in %s", sn, region))
		if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(sn)}); err != nil {
			sayErr(u, fmt.Sprintf("deleting snapshot %s in %s: %v; delete it by hand", sn, region, err))
		}
	}
}
