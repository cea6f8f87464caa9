package launchtemplate

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/ami"
)

// imageAPI is the part of EC2 that keep_releases needs.
type imageAPI interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeLaunchTemplateVersions(context.Context, *ec2.DescribeLaunchTemplateVersionsInput, ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// familyOf reads the retention tag from this build's AMI, so that only the
// AMIs of the same family are ever considered.
func familyOf(ctx context.Context, api imageAPI, region, ami, key string) (string, error) {
	out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
	if err != nil {
		return "", fmt.Errorf("%s: keep_releases: reading the tags of %s: %w", region, ami, err)
	}
	if len(out.Images) == 0 {
		return "", fmt.Errorf("%s: keep_releases: AMI %s not found", region, ami)
	}
	for _, t := range out.Images[0].Tags {
		if aws.ToString(t.Key) == key && aws.ToString(t.Value) != "" {
			return aws.ToString(t.Value), nil
		}
	}
	return "", fmt.Errorf("%s: keep_releases: AMI %s has no %q tag to tell its family (the wsgi-ami builder writes it); set retention_tag_value or retention_tag_key", region, ami, key)
}

// pruneReleases deregisters the family's AMIs beyond the newest keep
// (counting the AMIs of this build) and deletes their snapshots. AMIs that
// the default or latest version of any launch template uses are kept.
// It returns the AMIs deregistered.
func pruneReleases(ctx context.Context, ui packersdk.Ui, api imageAPI, region string, keep int, key, value string, current []string) ([]string, error) {
	var images []types.Image
	p := ec2.NewDescribeImagesPaginator(api, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag:" + key), Values: []string{value}}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: keep_releases: listing AMIs tagged %s=%s: %w", region, key, value, err)
		}
		images = append(images, page.Images...)
	}
	isCurrent := map[string]bool{}
	for _, id := range current {
		isCurrent[id] = true
	}
	// Newest first; this build's AMIs first of all, whatever their dates.
	sort.SliceStable(images, func(i, j int) bool {
		ci, cj := isCurrent[aws.ToString(images[i].ImageId)], isCurrent[aws.ToString(images[j].ImageId)]
		if ci != cj {
			return ci
		}
		return aws.ToString(images[i].CreationDate) > aws.ToString(images[j].CreationDate)
	})
	if len(images) <= keep {
		ui.Say(fmt.Sprintf("%s: keep_releases: %d AMIs of %s=%s, keeping all (limit %d)", region, len(images), key, value, keep))
		return nil, nil
	}
	inUse, err := imagesInUse(ctx, api)
	if err != nil {
		return nil, fmt.Errorf("%s: keep_releases: %w", region, err)
	}
	var removed []string
	for _, img := range images[keep:] {
		id := aws.ToString(img.ImageId)
		if isCurrent[id] {
			continue
		}
		if users := inUse[id]; len(users) > 0 {
			ui.Say(fmt.Sprintf("%s: keep_releases: keeping %s, used by %s", region, id, strings.Join(users, ", ")))
			continue
		}
		deregistered, err := ami.Delete(ctx, api, img)
		if deregistered {
			removed = append(removed, id)
		}
		if err != nil {
			return removed, fmt.Errorf("%s: keep_releases: %w", region, err)
		}
		ui.Say(fmt.Sprintf("%s: keep_releases: deregistered %s (%s, created %s), deleted snapshots %s",
			region, id, aws.ToString(img.Name), aws.ToString(img.CreationDate), strings.Join(ami.SnapshotIDs(img), ", ")))
	}
	return removed, nil
}

// imagesInUse maps an AMI id to the launch-template versions (default or
// latest, of every template in the region) that launch it.
func imagesInUse(ctx context.Context, api imageAPI) (map[string][]string, error) {
	used := map[string][]string{}
	p := ec2.NewDescribeLaunchTemplateVersionsPaginator(api, &ec2.DescribeLaunchTemplateVersionsInput{
		Versions:   []string{"$Default", "$Latest"},
		MaxResults: aws.Int32(200),
	})
	seen := map[string]bool{}
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing the default and latest launch-template versions: %w", err)
		}
		for _, v := range page.LaunchTemplateVersions {
			if v.LaunchTemplateData == nil || v.LaunchTemplateData.ImageId == nil {
				continue
			}
			ref := fmt.Sprintf("%s version %d", aws.ToString(v.LaunchTemplateId), aws.ToInt64(v.VersionNumber))
			if seen[ref] {
				continue
			}
			seen[ref] = true
			id := aws.ToString(v.LaunchTemplateData.ImageId)
			used[id] = append(used[id], ref)
		}
	}
	return used, nil
}
