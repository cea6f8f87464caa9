package builder

import (
	"context"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/sync/errgroup"
)

type copyImageAPI interface {
	CopyImage(context.Context, *ec2.CopyImageInput, ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
	describeImagesAPI
}

// stepCopyImage copies the AMI to ami_regions in parallel, each copy with
// its region's KMS key, through a client of the destination region (so the
// custom endpoint is used there too), each copy and its snapshots tagged
// like the original in the CopyImage call. The first failure cancels the other copies. Every
// copy started, finished or not, is in the image ledger, whose rollback
// Cleanup runs when the build does not succeed (see imageLedger).
type stepCopyImage struct {
	EC2          clientFor[copyImageAPI]
	Cfg          *Config
	SourceRegion string
	Wait         waitConfig

	mu sync.Mutex // guards the results of the parallel copies
}

func (s *stepCopyImage) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	u := ui(state)
	srcID := get[map[string]string](state, keyImages)[s.SourceRegion]
	info := infoFrom(get[ec2types.Image](state, keySourceImage), s.SourceRegion)
	text, err := s.Cfg.imageText(info, get[map[string]string](state, keyStackTags))
	if err != nil {
		return halt(state, err)
	}
	desc, imgTags, snapTags := text.description, text.imageTags, text.snapTags
	ledger := get[*imageLedger](state, keyLedger)
	results := map[string]ec2types.Image{}
	g, gctx := errgroup.WithContext(ctx)
	for _, region := range s.Cfg.AMIRegions {
		g.Go(func() error {
			img, err := s.copyTo(gctx, u, ledger, region, srcID, desc, imgTags, snapTags)
			if err != nil {
				return err
			}
			s.mu.Lock()
			results[region] = img
			s.mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return halt(state, err)
	}
	images := get[map[string]string](state, keyImages)
	snaps := get[map[string][]string](state, keySnapshots)
	details := get[map[string]ec2types.Image](state, keyImageDetails)
	for region, img := range results {
		images[region] = aws.ToString(img.ImageId)
		snaps[region] = snapshotIDs(img)
		details[region] = img
	}
	return multistep.ActionContinue
}

func (s *stepCopyImage) copyTo(ctx context.Context, u uiSayer, ledger *imageLedger, region, srcID, desc string, imgTags, snapTags []ec2types.Tag) (ec2types.Image, error) {
	c, err := s.EC2(ctx, region)
	if err != nil {
		return ec2types.Image{}, err
	}
	in := &ec2.CopyImageInput{
		SourceImageId: aws.String(srcID),
		SourceRegion:  aws.String(s.SourceRegion),
		Name:          aws.String(s.Cfg.AMIName),
		// Idempotent across the SDK's retries of this call.
		ClientToken: aws.String(s.Cfg.buildID + "-" + region),
		// Tagged in the same call, as CreateImage: two CreateTags fewer
		// per region.
		TagSpecifications: tagSpecs(imgTags, snapTags),
	}
	if desc != "" {
		in.Description = aws.String(desc)
	}
	if kms := s.Cfg.RegionKMSKeyIDs[region]; kms != "" {
		in.Encrypted = aws.Bool(true)
		in.KmsKeyId = aws.String(kms)
	} else if s.Cfg.EncryptRoot() {
		in.Encrypted = aws.Bool(true)
	}
	ledger.begin(region, false)
	say(u, fmt.Sprintf("Copying %s to %s", srcID, region))
	out, err := c.CopyImage(ctx, in)
	if err != nil {
		return ec2types.Image{}, fmt.Errorf("ami_regions: copying %s to %s: %w", srcID, region, err)
	}
	id := aws.ToString(out.ImageId)
	ledger.made(region, id)
	img, err := waitImage(ctx, u, c, region, id, s.Wait)
	if err != nil {
		return ec2types.Image{}, fmt.Errorf("ami_regions: %w", err)
	}
	return img, nil
}

func (s *stepCopyImage) Cleanup(state multistep.StateBag) {
	if !failed(state) {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	get[*imageLedger](state, keyLedger).rollback(ctx, ui(state))
}
