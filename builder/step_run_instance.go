package builder

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

type instanceAPI interface {
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	CancelSpotInstanceRequests(context.Context, *ec2.CancelSpotInstanceRequestsInput, ...func(*ec2.Options)) (*ec2.CancelSpotInstanceRequestsOutput, error)
}

// stepRunInstance launches the build instance with IMDSv2 required and an
// encrypted gp3 root volume, trying the fallback instance types in order
// when one has no capacity, and waits until it runs. Cleanup terminates it
// and waits until it is gone; when RunInstances was interrupted before it
// answered, it finds the instance by the build's tag.
type stepRunInstance struct {
	EC2     instanceAPI
	Cfg     *Config
	BuildID string
	Region  string
	Wait    waitConfig

	attempted bool
	id        string
}

func (s *stepRunInstance) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	u := ui(state)
	src := get[ec2types.Image](state, keySourceImage)
	userData, err := s.userData()
	if err != nil {
		return halt(state, err)
	}
	tags, err := s.Cfg.runTags(infoFrom(src, s.Region))
	if err != nil {
		return halt(state, err)
	}
	if err := s.checkRootDevice(src); err != nil {
		return halt(state, err)
	}
	md := s.Cfg.MetadataOptions
	in := &ec2.RunInstancesInput{
		ImageId:  src.ImageId,
		MinCount: aws.Int32(1),
		MaxCount: aws.Int32(1),
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens:              ec2types.HttpTokensState(md.HTTPTokens),
			HttpEndpoint:            ec2types.InstanceMetadataEndpointState(md.HTTPEndpoint),
			HttpPutResponseHopLimit: aws.Int32(md.HTTPPutResponseHopLimit),
			InstanceMetadataTags:    ec2types.InstanceMetadataTagsState(md.InstanceMetadataTags),
		},
		BlockDeviceMappings: append([]ec2types.BlockDeviceMapping{s.rootVolume(src)}, s.Cfg.mappings(s.Cfg.LaunchBlockDevices)...),
		TagSpecifications: []ec2types.TagSpecification{
			{ResourceType: ec2types.ResourceTypeInstance, Tags: tags},
			{ResourceType: ec2types.ResourceTypeVolume, Tags: tags},
		},
		InstanceInitiatedShutdownBehavior: ec2types.ShutdownBehaviorStop,
	}
	if userData != "" {
		in.UserData = aws.String(userData)
	}
	if s.Cfg.Spot() {
		// One-time, so terminating the instance closes the request; such an
		// instance cannot stop itself, hence no stop on shutdown.
		in.InstanceInitiatedShutdownBehavior = ec2types.ShutdownBehaviorTerminate
		spot := &ec2types.SpotMarketOptions{
			SpotInstanceType:             ec2types.SpotInstanceTypeOneTime,
			InstanceInterruptionBehavior: ec2types.InstanceInterruptionBehaviorTerminate,
		}
		if s.Cfg.SpotPrice != "auto" {
			spot.MaxPrice = aws.String(s.Cfg.SpotPrice)
		}
		in.InstanceMarketOptions = &ec2types.InstanceMarketOptionsRequest{MarketType: ec2types.MarketTypeSpot, SpotOptions: spot}
	}
	subnet := get[string](state, keySubnetID)
	sgs := get[[]string](state, keySecurityGroup)
	if len(sgs) == 0 {
		sgs = s.Cfg.SecurityGroupIDs
	}
	if pub := s.Cfg.AssociatePublicIPAddress; pub != nil {
		// Only a network interface of the request can say it; the subnet
		// and groups then go there too.
		nic := ec2types.InstanceNetworkInterfaceSpecification{
			DeviceIndex: aws.Int32(0), AssociatePublicIpAddress: pub, DeleteOnTermination: aws.Bool(true), Groups: sgs,
		}
		if subnet != "" {
			nic.SubnetId = aws.String(subnet)
		}
		in.NetworkInterfaces = []ec2types.InstanceNetworkInterfaceSpecification{nic}
	} else {
		if subnet != "" {
			in.SubnetId = aws.String(subnet)
		}
		in.SecurityGroupIds = sgs
	}
	if name := get[string](state, keyKeyPairName); name != "" {
		in.KeyName = aws.String(name)
	} else if s.Cfg.Comm.SSHKeyPairName != "" {
		in.KeyName = aws.String(s.Cfg.Comm.SSHKeyPairName)
	}
	if s.Cfg.IAMInstanceProfile != "" {
		in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Name: aws.String(s.Cfg.IAMInstanceProfile)}
	}

	var out *ec2.RunInstancesOutput
	var used string
	for _, t := range s.Cfg.InstanceTypes() {
		in.InstanceType = ec2types.InstanceType(t)
		// One token per type: the SDK's retries of one call reuse it, so a
		// throttled or timed-out RunInstances never starts two instances.
		in.ClientToken = aws.String(s.BuildID + "-" + t)
		say(u, fmt.Sprintf("Launching a %s instance from %s", t, aws.ToString(src.ImageId)))
		s.attempted = true
		out, err = s.EC2.RunInstances(ctx, in)
		var apiErr smithy.APIError
		if err != nil && errors.As(err, &apiErr) && nextTypeCodes[apiErr.ErrorCode()] {
			say(u, fmt.Sprintf("No capacity for %s: %s", t, apiErr.ErrorMessage()))
			continue
		}
		used = t
		break
	}
	if err != nil {
		return halt(state, fmt.Errorf("launching the build instance: %w", err))
	}
	if len(out.Instances) != 1 {
		return halt(state, fmt.Errorf("launching the build instance: RunInstances returned %d instances", len(out.Instances)))
	}
	s.id = aws.ToString(out.Instances[0].InstanceId)
	put(state, keyInstanceID, s.id)
	putGenerated(state, map[string]string{"InstanceType": used})
	say(u, fmt.Sprintf("Instance %s launched", s.id))

	w := ec2.NewInstanceRunningWaiter(s.EC2, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = s.Wait.minDelay(), s.Wait.maxDelay()
	})
	desc := &ec2.DescribeInstancesInput{InstanceIds: []string{s.id}}
	var running *ec2.DescribeInstancesOutput
	err = waitFor(ctx, u, fmt.Sprintf("instance %s to run", s.id), func(ctx context.Context) error {
		var err error
		running, err = w.WaitForOutput(ctx, desc, s.Wait.timeout())
		return err
	})
	if err != nil {
		return halt(state, err)
	}
	inst := running.Reservations[0].Instances[0]
	put(state, keyInstance, inst)
	if ip := aws.ToString(inst.PublicIpAddress); ip != "" {
		say(u, fmt.Sprintf("Public address %s", ip))
	}
	if ip := aws.ToString(inst.PrivateIpAddress); ip != "" {
		say(u, fmt.Sprintf("Private address %s", ip))
	}
	return multistep.ActionContinue
}

// nextTypeCodes are the RunInstances errors after which the next instance
// type is tried: no capacity, or (Spot) none at spot_price.
var nextTypeCodes = map[string]bool{
	"InsufficientInstanceCapacity": true,
	"SpotMaxPriceTooLow":           true,
}

func (s *stepRunInstance) userData() (string, error) {
	data := []byte(s.Cfg.UserData)
	if s.Cfg.UserDataFile != "" {
		var err error
		if data, err = os.ReadFile(s.Cfg.UserDataFile); err != nil {
			return "", fmt.Errorf("user_data_file: %w", err)
		}
	}
	if len(data) == 0 {
		return "", nil
	}
	return base64.StdEncoding.EncodeToString(data), nil
}

// checkRootDevice refuses a block device mapping of the source's root
// device, which only Run knows: the root is root_volume's.
func (s *stepRunInstance) checkRootDevice(src ec2types.Image) error {
	root := aws.ToString(src.RootDeviceName)
	for _, m := range []struct {
		key  string
		devs []BlockDevice
	}{{"launch_block_device_mappings", s.Cfg.LaunchBlockDevices}, {"ami_block_device_mappings", s.Cfg.AMIBlockDevices}} {
		for _, d := range m.devs {
			if d.DeviceName == root {
				return fmt.Errorf("%s: %s is the root device of the source AMI %s; set the root volume with root_volume", m.key, root, aws.ToString(src.ImageId))
			}
		}
	}
	return nil
}

func (s *stepRunInstance) rootVolume(src ec2types.Image) ec2types.BlockDeviceMapping {
	rv := s.Cfg.RootVolume
	ebs := &ec2types.EbsBlockDevice{
		DeleteOnTermination: aws.Bool(true),
		VolumeType:          ec2types.VolumeType(rv.Type),
		Encrypted:           aws.Bool(s.Cfg.EncryptRoot()),
	}
	device := aws.ToString(src.RootDeviceName)
	if device == "" {
		device = "/dev/xvda"
	}
	ebs.VolumeSize = aws.Int32(rv.Size)
	if rv.Size == 0 {
		// Overriding the root mapping needs a size; keep the source's.
		ebs.VolumeSize = nil
		for _, m := range src.BlockDeviceMappings {
			if aws.ToString(m.DeviceName) == device && m.Ebs != nil {
				ebs.VolumeSize = m.Ebs.VolumeSize
			}
		}
	}
	if rv.IOPS > 0 {
		ebs.Iops = aws.Int32(rv.IOPS)
	}
	if rv.Throughput > 0 {
		ebs.Throughput = aws.Int32(rv.Throughput)
	}
	if rv.KMSKeyID != "" {
		ebs.KmsKeyId = aws.String(rv.KMSKeyID)
	}
	return ec2types.BlockDeviceMapping{DeviceName: aws.String(device), Ebs: ebs}
}

func (s *stepRunInstance) Cleanup(state multistep.StateBag) {
	if !s.attempted {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	u := ui(state)
	ids := []string{s.id}
	if s.id == "" {
		found, err := s.findByTag(ctx)
		if err != nil {
			sayErr(u, fmt.Sprintf("looking for instances tagged %s=%s: %v; check for them by hand", awscfg.TagBuildID, s.BuildID, err))
			return
		}
		if len(found) == 0 {
			return
		}
		ids = found
	}
	say(u, fmt.Sprintf("Terminating build instance %v", ids))
	if _, err := s.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		sayErr(u, fmt.Sprintf("terminating %v: %v; terminate it by hand", ids, err))
		return
	}
	// The wait is for what comes after: a temporary security group can be
	// deleted only once the instance is gone, and a Spot request id is
	// read from the terminated instance. Without either, TerminateInstances
	// accepted is the end (the volumes go with the instance).
	if !s.Cfg.needTempSecurityGroup() && !s.Cfg.Spot() {
		return
	}
	w := ec2.NewInstanceTerminatedWaiter(s.EC2, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay = s.Wait.minDelay(), s.Wait.maxDelay()
	})
	var gone *ec2.DescribeInstancesOutput
	err := waitFor(ctx, u, fmt.Sprintf("instance %v to terminate", ids), func(ctx context.Context) error {
		var err error
		gone, err = w.WaitForOutput(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, s.Wait.timeout())
		return err
	})
	if err != nil {
		sayErr(u, err.Error())
		return
	}
	// Terminating closes a one-time Spot request; cancel it anyway, so
	// that nothing of the build stays listed.
	var requests []string
	for _, r := range gone.Reservations {
		for _, i := range r.Instances {
			if id := aws.ToString(i.SpotInstanceRequestId); id != "" {
				requests = append(requests, id)
			}
		}
	}
	if len(requests) == 0 {
		return
	}
	say(u, fmt.Sprintf("Cancelling Spot request %v", requests))
	if _, err := s.EC2.CancelSpotInstanceRequests(ctx, &ec2.CancelSpotInstanceRequestsInput{SpotInstanceRequestIds: requests}); err != nil {
		sayErr(u, fmt.Sprintf("cancelling Spot request %v: %v; cancel it by hand", requests, err))
	}
}

func (s *stepRunInstance) findByTag(ctx context.Context) ([]string, error) {
	out, err := s.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:" + awscfg.TagBuildID), Values: []string{s.BuildID}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}},
	}})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
	}
	return ids, nil
}
