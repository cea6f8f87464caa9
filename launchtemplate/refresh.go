package launchtemplate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/smithy-go/waiter"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// refreshAPI is the part of Auto Scaling an instance refresh needs.
type refreshAPI interface {
	DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	StartInstanceRefresh(context.Context, *autoscaling.StartInstanceRefreshInput, ...func(*autoscaling.Options)) (*autoscaling.StartInstanceRefreshOutput, error)
	DescribeInstanceRefreshes(context.Context, *autoscaling.DescribeInstanceRefreshesInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeInstanceRefreshesOutput, error)
}

// ErrRefreshFailed is returned when an instance refresh ends in any state
// but Successful.
var ErrRefreshFailed = errors.New("instance refresh did not succeed")

// refreshWaiter follows a refresh the way the SDK's waiters do: a delay
// between MinDelay and MaxDelay with jitter, bounded by Timeout and ctx.
type refreshWaiter struct {
	MinDelay, MaxDelay, Timeout time.Duration
	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

// startRefresh starts an instance refresh that pins the exact version, so
// the group ends on it and a rollback has a previous configuration to
// return to.
func startRefresh(ctx context.Context, ui packersdk.Ui, api refreshAPI, rc *InstanceRefreshConfig, tv TemplateVersion) (string, error) {
	group := rc.AutoScalingGroupName
	out, err := api.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{group},
	})
	if err != nil {
		return "", fmt.Errorf("instance_refresh.auto_scaling_group_name: describing group %q: %w", group, err)
	}
	if len(out.AutoScalingGroups) == 0 {
		return "", fmt.Errorf("instance_refresh.auto_scaling_group_name: no Auto Scaling group %q in %s", group, tv.Region)
	}
	asg := out.AutoScalingGroups[0]
	pinned := &astypes.LaunchTemplateSpecification{
		LaunchTemplateId: aws.String(tv.TemplateID),
		Version:          aws.String(strconv.FormatInt(tv.Version, 10)),
	}
	desired := &astypes.DesiredConfiguration{}
	switch {
	case asg.MixedInstancesPolicy != nil && asg.MixedInstancesPolicy.LaunchTemplate != nil:
		cur := asg.MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification
		if err := sameTemplate(group, cur, tv); err != nil {
			return "", err
		}
		// The desired policy replaces the group's whole policy: keep its
		// overrides and distribution, change only the template version.
		mip := *asg.MixedInstancesPolicy
		lt := *mip.LaunchTemplate
		lt.LaunchTemplateSpecification = pinned
		mip.LaunchTemplate = &lt
		desired.MixedInstancesPolicy = &mip
	case asg.LaunchTemplate != nil:
		if err := sameTemplate(group, asg.LaunchTemplate, tv); err != nil {
			return "", err
		}
		desired.LaunchTemplate = pinned
	default:
		return "", fmt.Errorf("instance_refresh.auto_scaling_group_name: group %q uses no launch template (a launch configuration?); point it at %s first", group, tv.TemplateID)
	}

	prefs := &astypes.RefreshPreferences{
		MinHealthyPercentage: aws.Int32(int32(*rc.MinHealthyPercentage)),
		SkipMatching:         aws.Bool(rc.SkipMatching),
		AutoRollback:         aws.Bool(rc.AutoRollback),
	}
	if rc.InstanceWarmup > 0 {
		prefs.InstanceWarmup = aws.Int32(int32(rc.InstanceWarmup / time.Second))
	}
	for _, p := range rc.CheckpointPercentages {
		prefs.CheckpointPercentages = append(prefs.CheckpointPercentages, int32(p))
	}
	if rc.CheckpointDelay > 0 {
		prefs.CheckpointDelay = aws.Int32(int32(rc.CheckpointDelay / time.Second))
	}
	start, err := api.StartInstanceRefresh(ctx, &autoscaling.StartInstanceRefreshInput{
		AutoScalingGroupName: aws.String(group),
		Strategy:             astypes.RefreshStrategyRolling,
		DesiredConfiguration: desired,
		Preferences:          prefs,
	})
	if err != nil {
		return "", fmt.Errorf("starting an instance refresh of %q: %w", group, err)
	}
	id := aws.ToString(start.InstanceRefreshId)
	ui.Say(fmt.Sprintf("%s: instance refresh %s started on %s with %s version %d", tv.Region, id, group, tv.TemplateID, tv.Version))
	return id, nil
}

func sameTemplate(group string, cur *astypes.LaunchTemplateSpecification, tv TemplateVersion) error {
	if cur == nil {
		return nil
	}
	if id := aws.ToString(cur.LaunchTemplateId); id != "" && id != tv.TemplateID {
		return fmt.Errorf("instance_refresh.auto_scaling_group_name: group %q uses launch template %s, not %s; a refresh would switch templates", group, id, tv.TemplateID)
	}
	if name := aws.ToString(cur.LaunchTemplateName); name != "" && tv.TemplateName != "" && name != tv.TemplateName {
		return fmt.Errorf("instance_refresh.auto_scaling_group_name: group %q uses launch template %q, not %q; a refresh would switch templates", group, name, tv.TemplateName)
	}
	return nil
}

// wait follows the refresh until it ends, printing a line whenever its
// status or progress changes. It fails unless the refresh succeeds.
func (w refreshWaiter) wait(ctx context.Context, ui packersdk.Ui, api refreshAPI, region, group, id string) error {
	now := w.now
	if now == nil {
		now = time.Now
	}
	sleep := w.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	started := now()
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	look := fmt.Sprintf("look at `aws autoscaling describe-instance-refreshes --region %s --auto-scaling-group-name %s --instance-refresh-ids %s` and the group's activities (`aws autoscaling describe-scaling-activities --region %s --auto-scaling-group-name %s`)",
		region, group, id, region, group)
	last := ""
	status := astypes.InstanceRefreshStatus("unknown")
	for attempt := int64(1); ; attempt++ {
		out, err := api.DescribeInstanceRefreshes(ctx, &autoscaling.DescribeInstanceRefreshesInput{
			AutoScalingGroupName: aws.String(group),
			InstanceRefreshIds:   []string{id},
		})
		if err != nil {
			if ctx.Err() != nil {
				return w.stopped(ctx, id, status, now().Sub(started), look)
			}
			return fmt.Errorf("following instance refresh %s: %w", id, err)
		}
		if len(out.InstanceRefreshes) == 0 {
			return fmt.Errorf("following instance refresh %s: not found on group %q", id, group)
		}
		r := out.InstanceRefreshes[0]
		status = r.Status
		line := string(r.Status)
		if r.PercentageComplete != nil {
			line += fmt.Sprintf(", %d%% complete", *r.PercentageComplete)
		}
		if r.InstancesToUpdate != nil {
			line += fmt.Sprintf(", instances to update: %d", *r.InstancesToUpdate)
		}
		if reason := aws.ToString(r.StatusReason); reason != "" {
			line += ": " + reason
		}
		if line != last {
			ui.Say(fmt.Sprintf("instance refresh %s: %s (%s)", id, line, now().Sub(started).Round(time.Second)))
			last = line
		}
		switch r.Status {
		case astypes.InstanceRefreshStatusSuccessful:
			return nil
		case astypes.InstanceRefreshStatusFailed, astypes.InstanceRefreshStatusCancelled,
			astypes.InstanceRefreshStatusRollbackSuccessful, astypes.InstanceRefreshStatusRollbackFailed:
			reason := aws.ToString(r.StatusReason)
			if reason == "" {
				reason = "no reason given"
			}
			return fmt.Errorf("%w: %s on group %q ended %s (%s); %s", ErrRefreshFailed, id, group, r.Status, reason, look)
		}
		// As the SDK's waiters do: no attempt that could not finish in time.
		remaining := w.Timeout - now().Sub(started)
		if remaining <= w.MinDelay {
			return w.stopped(ctx, id, status, now().Sub(started), look)
		}
		delay, err := waiter.ComputeDelay(attempt, w.MinDelay, w.MaxDelay, remaining)
		if err != nil {
			return fmt.Errorf("following instance refresh %s: %w", id, err)
		}
		if err := sleep(ctx, delay); err != nil {
			return w.stopped(ctx, id, status, now().Sub(started), look)
		}
	}
}

func (w refreshWaiter) stopped(ctx context.Context, id string, status astypes.InstanceRefreshStatus, elapsed time.Duration, look string) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("stopped following instance refresh %s (still %s after %s; it goes on in AWS): %w", id, status, elapsed.Round(time.Second), ctx.Err())
	}
	return fmt.Errorf("instance refresh %s still %s after %s (instance_refresh.timeout); %s", id, status, elapsed.Round(time.Second), look)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
