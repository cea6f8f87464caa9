package builder

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type stopInstanceAPI interface {
	StopInstances(context.Context, *ec2.StopInstancesInput, ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	ModifyInstanceAttribute(context.Context, *ec2.ModifyInstanceAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyInstanceAttributeOutput, error)
}

// stepStopInstance stops the build instance so the image is taken from a
// quiet file system, then enables ENA on it (an attribute of a stopped
// instance) so the AMI carries it. Termination is stepRunInstance's cleanup.
// A one-time Spot instance cannot be stopped: it is left running, and
// CreateImage reboots it instead.
type stepStopInstance struct {
	EC2  stopInstanceAPI
	ENA  bool
	Spot bool
	Wait waitConfig
}

func (s *stepStopInstance) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	inst := get[ec2types.Instance](state, keyInstance)
	id := aws.ToString(inst.InstanceId)
	u := ui(state)
	if s.Spot {
		say(u, fmt.Sprintf("Spot instance %s is not stopped (a one-time Spot instance cannot be): CreateImage reboots it; ENA support stays as the source AMI has it", id))
		return multistep.ActionContinue
	}
	say(u, fmt.Sprintf("Stopping instance %s", id))
	if _, err := s.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		return halt(state, fmt.Errorf("stopping instance %s: %w", id, err))
	}
	w := ec2.NewInstanceStoppedWaiter(s.EC2, func(o *ec2.InstanceStoppedWaiterOptions) {
		o.MinDelay, o.MaxDelay = s.Wait.minDelay(), s.Wait.maxDelay()
	})
	if err := waitFor(ctx, u, fmt.Sprintf("instance %s to stop", id), func(ctx context.Context) error {
		return w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, s.Wait.timeout())
	}); err != nil {
		return halt(state, err)
	}
	// An instance launched from an AMI with ENA support has it already.
	if src := get[ec2types.Image](state, keySourceImage); s.ENA && !aws.ToBool(src.EnaSupport) {
		if _, err := s.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
			InstanceId: aws.String(id),
			EnaSupport: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)},
		}); err != nil {
			return halt(state, fmt.Errorf("ena_support: enabling ENA on %s: %w", id, err))
		}
	}
	return multistep.ActionContinue
}

func (s *stepStopInstance) Cleanup(multistep.StateBag) {}
