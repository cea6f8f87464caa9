package launchtemplate

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// checkFits proves, with reads only, that every target AMI provides what the payload needs
// (contract.Fits on each AMI's tags), so a misfit fails the build before anything changes on
// AWS. Every region is checked, and every misfit reported.
func (p *PostProcessor) checkFits(ctx context.Context, ui packersdk.Ui, apis []ec2API, pairs []regionAMI) error {
	c := &p.config
	if !*c.CheckPayloadFits {
		ui.Say("check_payload_fits = false: the payload is not checked against the images")
		return nil
	}
	if c.userData == "" {
		ui.Say("No user data given: the new versions keep the user data of source_version, and no fit check is made")
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(c.userData)
	if err != nil {
		// Prepare produced this text; failing here is a bug, not a user error.
		return fmt.Errorf("user data: %w", err)
	}
	needs, found, err := cloudinit.NeedsOf(raw)
	if err != nil {
		return fmt.Errorf("check_payload_fits: reading what the payload needs: %w", err)
	}
	if !found {
		ui.Say("The user data is not a wsgi-cloudinit payload: no fit check against the images is made")
		return nil
	}
	var errs []error
	for i, pr := range pairs {
		tags, err := imageTags(ctx, apis[i], pr)
		if err == nil {
			err = contract.Fits(needs, pr.AMI+" in "+pr.Region, tags)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("check_payload_fits: %w", err))
			continue
		}
		ui.Say(fmt.Sprintf("%s: %s provides what the payload needs (%s)", pr.Region, pr.AMI, strings.Join(needs, ", ")))
	}
	return errors.Join(errs...)
}

// imageTags reads the tags of one AMI.
func imageTags(ctx context.Context, api imageAPI, pr regionAMI) (map[string]string, error) {
	out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{pr.AMI}})
	if err != nil {
		return nil, fmt.Errorf("%s: reading the tags of %s: %w", pr.Region, pr.AMI, err)
	}
	if len(out.Images) == 0 {
		return nil, fmt.Errorf("%s: AMI %s not found", pr.Region, pr.AMI)
	}
	tags := map[string]string{}
	for _, t := range out.Images[0].Tags {
		tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return tags, nil
}
