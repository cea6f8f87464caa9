package builder

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/ami"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

type describeImagesAPI interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
}

// deleteImageAPI is what finding and removing an AMI and its snapshots takes.
type deleteImageAPI interface {
	describeImagesAPI
	ami.DeleteAPI
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
}

// imagesNamed lists the account's own AMIs with this exact name.
func imagesNamed(ctx context.Context, c describeImagesAPI, name string) ([]ec2types.Image, error) {
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{name}}},
	})
	if err != nil {
		return nil, err
	}
	return out.Images, nil
}

// snapshotIDs lists the EBS snapshots of an image's block devices.
func snapshotIDs(img ec2types.Image) []string { return ami.SnapshotIDs(img) }

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

// removeImage deregisters the AMI (by id; when the id was never returned,
// the account's AMI named name, tagged with buildID when that is set) and
// deletes its snapshots and any snapshot tagged with this build, in one
// region. Problems are reported, not returned: a cleanup goes on with the
// rest.
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
	handled := map[string]bool{}
	out, err := c.DescribeImages(ctx, in)
	if ami.IsGone(err) {
		// An earlier cleanup removed it.
		out, err = &ec2.DescribeImagesOutput{}, nil
	}
	if err != nil {
		sayErr(u, fmt.Sprintf("describing AMI %s in %s for cleanup: %v; check for it by hand", id, region, err))
	}
	if out != nil {
		for _, img := range out.Images {
			say(u, fmt.Sprintf("Deregistering AMI %s in %s (snapshots %v)", aws.ToString(img.ImageId), region, snapshotIDs(img)))
			if _, err := ami.Delete(ctx, c, img); err != nil {
				sayErr(u, fmt.Sprintf("in %s: %v; remove it by hand", region, err))
			}
			for _, sn := range snapshotIDs(img) {
				handled[sn] = true
			}
		}
	}
	if buildID == "" {
		return
	}
	// Snapshots of an AMI whose create call did not answer carry the build's tag.
	tagged, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + awscfg.TagBuildID), Values: []string{buildID}},
	}})
	if err != nil {
		sayErr(u, fmt.Sprintf("looking for snapshots of build %s in %s: %v; check for them by hand", buildID, region, err))
		return
	}
	left := map[string]bool{}
	for _, sn := range tagged.Snapshots {
		if id := aws.ToString(sn.SnapshotId); !handled[id] {
			left[id] = true
		}
	}
	if len(left) == 0 {
		return
	}
	ids := slices.Sorted(maps.Keys(left))
	say(u, fmt.Sprintf("Deleting snapshots %v in %s", ids, region))
	if err := ami.DeleteSnapshots(ctx, c, ids, ""); err != nil {
		sayErr(u, fmt.Sprintf("in %s: %v; delete it by hand", region, err))
	}
}
