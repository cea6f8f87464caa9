package acceptance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// sweep removes everything of a run, whether the plugin's own cleanup ran or not: instances (the
// boot check's and a build instance left by a killed build), the launch template with all its
// versions, the AMI and its snapshots, the builder's temporary key pair and security groups.
// It finds them by the run's tag or by the names derived from the run id, and reports every
// deletion that failed rather than stopping at the first.
func sweep(ctx context.Context, c *ec2.Client, runID string, logf func(string, ...any)) error {
	var errs []error
	byRun := ec2types.Filter{Name: aws.String("tag:" + runTag), Values: []string{runID}}
	byBuilderName := ec2types.Filter{Name: aws.String("tag:Name"), Values: []string{builderTempName(runID)}}

	// Instances first: their network interfaces hold the security groups.
	// The build instance matches both filters; an id given twice fails DescribeInstances.
	var instances []string
	seen := map[string]bool{}
	for _, f := range []ec2types.Filter{byRun, byBuilderName} {
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{f,
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped", "shutting-down"}}}})
		if err != nil {
			errs = append(errs, fmt.Errorf("describe instances: %w", err))
			continue
		}
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				if id := aws.ToString(i.InstanceId); !seen[id] {
					seen[id] = true
					instances = append(instances, id)
				}
			}
		}
	}
	if len(instances) > 0 {
		logf("sweep: terminating %v", instances)
		if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: instances}); err != nil {
			errs = append(errs, fmt.Errorf("terminate %v: %w", instances, err))
		} else if err := ec2.NewInstanceTerminatedWaiter(c).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: instances}, 15*time.Minute); err != nil {
			errs = append(errs, fmt.Errorf("wait for %v to terminate: %w", instances, err))
		}
	}

	// The template and so every version the post-processor added. It is looked up first, so a
	// run that never got to the post-processor is not an error.
	lts, err := c.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{Filters: []ec2types.Filter{
		{Name: aws.String("launch-template-name"), Values: []string{templateName(runID)}}}})
	if err != nil {
		errs = append(errs, fmt.Errorf("describe launch template %s: %w", templateName(runID), err))
	} else {
		for _, lt := range lts.LaunchTemplates {
			if _, err := c.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: lt.LaunchTemplateId}); err != nil {
				errs = append(errs, fmt.Errorf("delete launch template %s: %w", templateName(runID), err))
			} else {
				logf("sweep: deleted launch template %s (%s) with its versions", templateName(runID), aws.ToString(lt.LaunchTemplateId))
			}
		}
	}

	// AMIs by tag and by name (an AMI whose tagging failed), then their snapshots.
	snapshots := map[string]bool{}
	images := map[string]bool{}
	for _, f := range []ec2types.Filter{byRun, {Name: aws.String("name"), Values: []string{amiName(runID)}}} {
		out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{f}})
		if err != nil {
			errs = append(errs, fmt.Errorf("describe images: %w", err))
			continue
		}
		for _, img := range out.Images {
			images[aws.ToString(img.ImageId)] = true
			for _, bdm := range img.BlockDeviceMappings {
				if bdm.Ebs != nil && aws.ToString(bdm.Ebs.SnapshotId) != "" {
					snapshots[aws.ToString(bdm.Ebs.SnapshotId)] = true
				}
			}
		}
	}
	for id := range images {
		if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil && !isCode(err, "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable") {
			errs = append(errs, fmt.Errorf("deregister %s: %w", id, err))
		} else {
			logf("sweep: deregistered %s", id)
		}
	}
	snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{byRun}})
	if err != nil {
		errs = append(errs, fmt.Errorf("describe snapshots: %w", err))
	} else {
		for _, s := range snaps.Snapshots {
			snapshots[aws.ToString(s.SnapshotId)] = true
		}
	}
	for id := range snapshots {
		if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil && !isCode(err, "InvalidSnapshot.NotFound") {
			errs = append(errs, fmt.Errorf("delete snapshot %s: %w", id, err))
		} else {
			logf("sweep: deleted snapshot %s", id)
		}
	}

	// The builder's temporary key pair (named packer_wsgi_<build id>, tagged with the AMI name).
	keys, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []ec2types.Filter{byBuilderName}})
	if err != nil {
		errs = append(errs, fmt.Errorf("describe key pairs: %w", err))
	} else {
		for _, k := range keys.KeyPairs {
			if _, err := c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: k.KeyName}); err != nil {
				errs = append(errs, fmt.Errorf("delete key pair %s: %w", aws.ToString(k.KeyName), err))
			} else {
				logf("sweep: deleted key pair %s", aws.ToString(k.KeyName))
			}
		}
	}

	// Security groups: the boot check's and the builder's temporary one. A group stays in use for
	// a while after its instance terminated, so DependencyViolation is retried.
	for _, f := range []ec2types.Filter{byRun, byBuilderName} {
		out, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{f}})
		if err != nil {
			errs = append(errs, fmt.Errorf("describe security groups: %w", err))
			continue
		}
		for _, g := range out.SecurityGroups {
			if err := deleteGroup(ctx, c, aws.ToString(g.GroupId)); err != nil {
				errs = append(errs, err)
			} else {
				logf("sweep: deleted security group %s", aws.ToString(g.GroupId))
			}
		}
	}
	return errors.Join(errs...)
}

func deleteGroup(ctx context.Context, c *ec2.Client, id string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		_, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
		if err == nil || isCode(err, "InvalidGroup.NotFound") {
			return nil
		}
		if !isCode(err, "DependencyViolation") || time.Now().After(deadline) {
			return fmt.Errorf("delete security group %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("delete security group %s: %w", id, ctx.Err())
		case <-time.After(10 * time.Second):
		}
	}
}

// isCode reports whether err is an AWS API error with one of the codes.
func isCode(err error, codes ...string) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	for _, c := range codes {
		if ae.ErrorCode() == c {
			return true
		}
	}
	return false
}
