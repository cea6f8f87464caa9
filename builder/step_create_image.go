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
	CreateImage(context.Context, *ec2.CreateImageInput, ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	describeImagesAPI
}

// stepCreateImage makes the AMI of the stopped instance, it and its
// snapshots tagged in the same call, and waits until it is available. It records the
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
		// The snapshots are tagged in the same call: no CreateTags after the
		// wait (moto lacks this; the e2e proxy answers it as EC2 does).
		TagSpecifications: tagSpecs(imgTags, snapTags),
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
	put(state, keySnapshots, map[string][]string{s.Region: snapshotIDs(img)})
	put(state, keyImageDetails, map[string]ec2types.Image{s.Region: img})
	return multistep.ActionContinue
}

// tagSpecs tags an AMI and its snapshots in the call that makes them
// (CreateImage, CopyImage).
func tagSpecs(image, snapshots []ec2types.Tag) []ec2types.TagSpecification {
	specs := []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: image}}
	if len(snapshots) > 0 {
		specs = append(specs, ec2types.TagSpecification{ResourceType: ec2types.ResourceTypeSnapshot, Tags: snapshots})
	}
	return specs
}

func (s *stepCreateImage) Cleanup(state multistep.StateBag) {
	if !failed(state) {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	get[*imageLedger](state, keyLedger).rollback(ctx, ui(state))
}
