// Package launchtemplate is the wsgi-launch-template post-processor: it
// checks that the first-boot user data fits each AMI, then adds a
// launch-template version with the AMI (the built one, or the golden image
// of ami_ids for a release without a bake) and the user data in every
// region, makes it the default, optionally moves an Auto Scaling group to it
// with an instance refresh, and prunes the build family's older AMIs.
package launchtemplate

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/hcl/v2/hcldec"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
)

// ec2API is every EC2 call the post-processor makes in one region.
type ec2API interface {
	templateAPI
	undoAPI
	imageAPI
}

// PostProcessor is the wsgi-launch-template post-processor.
type PostProcessor struct {
	config Config

	// newEC2 and newAutoScaling build the clients for one region; tests
	// put recording fakes here.
	newEC2         func(ctx context.Context, region string) (ec2API, error)
	newAutoScaling func(ctx context.Context, region string) (refreshAPI, error)
	// waiter follows the instance refresh; tests shorten its delays.
	waiter *refreshWaiter
}

var _ packersdk.PostProcessor = (*PostProcessor)(nil)

// ConfigSpec returns the HCL spec of Config.
func (p *PostProcessor) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

// Configure decodes and validates the configuration.
func (p *PostProcessor) Configure(raws ...interface{}) error {
	err := config.Decode(&p.config, &config.DecodeOpts{
		PluginType: "packer.post-processor.wsgi-launch-template",
		// No Go-template interpolation: it parses every string, and user
		// data may be a cloud-init jinja template whose {{ v1.* }} is not
		// Packer's. HCL expressions (${build.ID}, timestamp()) still work.
		Interpolate: false,
	}, raws...)
	if err != nil {
		return err
	}
	return p.config.Prepare()
}

// PostProcess adds the versions, runs the refresh and applies retention.
// The input AMIs are always kept: the new versions launch them.
func (p *PostProcessor) PostProcess(ctx context.Context, ui packersdk.Ui, source packersdk.Artifact) (packersdk.Artifact, bool, bool, error) {
	art, err := p.run(ctx, ui, source)
	if err != nil {
		return nil, true, true, err
	}
	return art, true, true, nil
}

func (p *PostProcessor) clients() (func(context.Context, string) (ec2API, error), func(context.Context, string) (refreshAPI, error)) {
	newEC2, newAS := p.newEC2, p.newAutoScaling
	if newEC2 == nil {
		newEC2 = func(ctx context.Context, region string) (ec2API, error) {
			return p.config.AccessConfig.EC2(ctx, region)
		}
	}
	if newAS == nil {
		newAS = func(ctx context.Context, region string) (refreshAPI, error) {
			return p.config.AccessConfig.AutoScaling(ctx, region)
		}
	}
	return newEC2, newAS
}

func (p *PostProcessor) run(ctx context.Context, ui packersdk.Ui, source packersdk.Artifact) (*Artifact, error) {
	c := &p.config
	all, from, err := c.targets(ui, source)
	if err != nil {
		return nil, err
	}
	pairs, err := selectRegions(all, c.Regions, from)
	if err != nil {
		return nil, err
	}
	if c.LaunchTemplateID != "" && len(pairs) > 1 {
		return nil, fmt.Errorf("launch_template_id: names a template in one region, but the artifact has %d regions; use launch_template_name or list one region in regions", len(pairs))
	}
	refreshAt := -1
	if rc := c.InstanceRefresh; rc != nil {
		region := rc.Region
		if region == "" && len(pairs) == 1 {
			region = pairs[0].Region
		}
		for i, pr := range pairs {
			if pr.Region == region {
				refreshAt = i
			}
		}
		if refreshAt < 0 {
			return nil, fmt.Errorf("instance_refresh.region: %q is not a region this post-processor updates; set it to one of the artifact's regions", region)
		}
	}

	newEC2, newAS := p.clients()
	apis := make([]ec2API, len(pairs))
	for i, pr := range pairs {
		if apis[i], err = newEC2(ctx, pr.Region); err != nil {
			return nil, fmt.Errorf("%s: %w", pr.Region, err)
		}
	}

	// Nothing changes on AWS before the payload is known to fit every image.
	if err := p.checkFits(ctx, ui, apis, pairs); err != nil {
		return nil, err
	}

	// Check the retention tag before changing anything, so a missing tag
	// fails the build while nothing has been made yet.
	families := make([]string, len(pairs))
	if c.KeepReleases > 0 {
		for i, pr := range pairs {
			families[i] = c.RetentionTagValue
			if families[i] == "" {
				if families[i], err = familyOf(ctx, apis[i], pr.Region, pr.AMI, c.RetentionTagKey); err != nil {
					return nil, err
				}
			}
		}
	}

	art := &Artifact{Deregistered: map[string][]string{}}
	art.undo = func(ctx context.Context, v TemplateVersion) error {
		api, err := newEC2(ctx, v.Region)
		if err != nil {
			return err
		}
		return undoVersion(ctx, api, v)
	}
	undoAll := func(cause error) error {
		errs := []error{cause}
		for i := len(art.Versions) - 1; i >= 0; i-- {
			v := art.Versions[i]
			if err := undoVersion(context.WithoutCancel(ctx), apis[indexOf(pairs, v.Region)], v); err != nil {
				errs = append(errs, fmt.Errorf("undoing: %w", err))
				continue
			}
			if v.CreatedVersion || v.DefaultChanged {
				ui.Say(fmt.Sprintf("%s: undid %s version %d", v.Region, v.TemplateID, v.Version))
			}
		}
		return errors.Join(errs...)
	}

	for i, pr := range pairs {
		tv, err := ensureVersion(ctx, ui, apis[i], versionRequest{
			Region:      pr.Region,
			AMI:         pr.AMI,
			TemplateID:  c.LaunchTemplateID,
			Name:        c.LaunchTemplateName,
			Create:      c.CreateIfMissing,
			Source:      c.SourceVersion,
			SetDefault:  *c.SetDefault,
			Description: c.VersionDescription,
			UserData:    c.userData,
			Tags:        c.Tags,
			TokenSource: c.ClientToken,
		})
		art.Versions = append(art.Versions, tv)
		if err != nil {
			return nil, undoAll(err)
		}
	}

	if rc := c.InstanceRefresh; rc != nil {
		tv := art.Versions[refreshAt]
		as, err := newAS(ctx, tv.Region)
		if err != nil {
			return nil, undoAll(fmt.Errorf("%s: %w", tv.Region, err))
		}
		id, err := startRefresh(ctx, ui, as, rc, tv)
		if err != nil {
			return nil, undoAll(err)
		}
		art.RefreshID, art.RefreshGroup = id, rc.AutoScalingGroupName
		if *rc.Wait {
			w := refreshWaiter{MinDelay: c.AccessConfig.WaitDelay(), MaxDelay: 12 * c.AccessConfig.WaitDelay(), Timeout: rc.Timeout}
			if p.waiter != nil {
				w = *p.waiter
			}
			if err := w.wait(ctx, ui, as, tv.Region, rc.AutoScalingGroupName, id); err != nil {
				// Instances may already run the new version, so it stays for
				// inspection; only the default goes back, so that launches
				// outside the refresh do not pick up a failed release.
				return nil, errors.Join(err, p.restoreDefaults(ctx, ui, apis, pairs, art.Versions))
			}
		}
	}

	if c.KeepReleases > 0 {
		for i, pr := range pairs {
			removed, err := pruneReleases(ctx, ui, apis[i], pr.Region, c.KeepReleases, c.RetentionTagKey, families[i], []string{pr.AMI})
			art.Deregistered[pr.Region] = removed
			if err != nil {
				return nil, err
			}
		}
	}
	return art, nil
}

func (p *PostProcessor) restoreDefaults(ctx context.Context, ui packersdk.Ui, apis []ec2API, pairs []regionAMI, versions []TemplateVersion) error {
	var errs []error
	for _, v := range versions {
		if !v.DefaultChanged || v.PreviousDefault == 0 {
			continue
		}
		if err := restoreDefault(context.WithoutCancel(ctx), apis[indexOf(pairs, v.Region)], v); err != nil {
			errs = append(errs, err)
			continue
		}
		ui.Say(fmt.Sprintf("%s: default version of %s set back to %d; version %d kept for inspection", v.Region, v.TemplateID, v.PreviousDefault, v.Version))
	}
	return errors.Join(errs...)
}

func indexOf(pairs []regionAMI, region string) int {
	for i, p := range pairs {
		if p.Region == region {
			return i
		}
	}
	return -1
}
