package builder

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type imageAPI interface {
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	CreateImage(context.Context, *ec2.CreateImageInput, ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	describeImagesAPI
}

// stepCreateImage makes the AMI of the stopped instance, tagged in the same
// call, waits until it is available and tags its snapshots. It records the
// AMI in the image ledger, whose rollback Cleanup runs when the build does
// not succeed (see imageLedger).
type stepCreateImage struct {
	EC2    imageAPI
	Cfg    *Config
	Region string
	Wait   waitConfig
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
	if len(s.Cfg.AMIBlockDevices) > 0 {
		in.BlockDeviceMappings = s.Cfg.mappings(s.Cfg.AMIBlockDevices)
	}
	say(u, fmt.Sprintf("Creating AMI %q from %s", s.Cfg.AMIName, aws.ToString(inst.InstanceId)))
	ledger := get[*imageLedger](state, keyLedger)
	ledger.begin(s.Region, true)
	out, err := s.EC2.CreateImage(ctx, in)
	if err != nil {
		return halt(state, fmt.Errorf("creating AMI %q: %w", s.Cfg.AMIName, err))
	}
	id := aws.ToString(out.ImageId)
	ledger.made(s.Region, id)
	put(state, keyImages, map[string]string{s.Region: id})
	say(u, fmt.Sprintf("AMI %s in %s", id, s.Region))

	img, err := waitImage(ctx, u, s.EC2, s.Region, id, s.Wait)
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

func (s *stepCreateImage) Cleanup(state multistep.StateBag) {
	if !failed(state) {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	get[*imageLedger](state, keyLedger).rollback(ctx, ui(state))
}
