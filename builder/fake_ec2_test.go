package builder

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
)

// fakeCloud is a small in-memory EC2 across regions. It records every call
// as "region Action" and can fail any call, so tests assert the exact
// sequence of calls and that cleanups leave nothing behind.
type fakeCloud struct {
	mu    sync.Mutex
	calls []string
	seq   int
	// fail, when set, may return an error for the n-th (1-based) call of
	// action in region; the call then changes nothing.
	fail func(region, action string, n int) error
	// after, when set, runs after the n-th call of action in region
	// succeeded (e.g. to cancel a build).
	after  func(region, action string, n int)
	counts map[string]int

	regions map[string]*fakeRegion
	params  map[string]string
	// sessions holds Session Manager session id -> its StartSession input,
	// until TerminateSession.
	sessions map[string]*ssm.StartSessionInput
	// lostStart, when set, says whether the n-th StartSession, which makes
	// its session, loses its answer.
	lostStart func(n int) bool
}

type fakeRegion struct {
	images    map[string]*ec2types.Image
	instances map[string]*ec2types.Instance
	keyPairs  map[string][]ec2types.Tag
	groups    map[string]*ec2types.SecurityGroup
	snapshots map[string]*ec2types.Snapshot
	launch    map[string][]ec2types.LaunchPermission
	deprecate map[string]string
	tokens    map[string]string // client token -> id
	spot      map[string]string // Spot request id -> state (active, closed, cancelled)
	snapPerms map[string][]ec2types.CreateVolumePermission
}

const fakeSourceAMI = "ami-0123456789abcdef0"

func newFakeCloud() *fakeCloud {
	c := &fakeCloud{regions: map[string]*fakeRegion{}, counts: map[string]int{}, params: map[string]string{}, sessions: map[string]*ssm.StartSessionInput{}}
	r := c.region("eu-west-1")
	r.images[fakeSourceAMI] = &ec2types.Image{
		ImageId: aws.String(fakeSourceAMI), Name: aws.String("debian-12-amd64-20250101"), OwnerId: aws.String("136693071363"),
		Architecture: ec2types.ArchitectureValuesX8664, State: ec2types.ImageStateAvailable, RootDeviceName: aws.String("/dev/xvda"),
		CreationDate: aws.String("2025-01-01T00:00:00.000Z"), BootMode: ec2types.BootModeValuesUefiPreferred,
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &ec2types.EbsBlockDevice{
			SnapshotId: aws.String("snap-source"), VolumeSize: aws.Int32(8)}}},
	}
	c.params["/aws/service/debian/release/12/latest/amd64"] = fakeSourceAMI
	return c
}

func (c *fakeCloud) region(name string) *fakeRegion {
	r, ok := c.regions[name]
	if !ok {
		r = &fakeRegion{
			images: map[string]*ec2types.Image{}, instances: map[string]*ec2types.Instance{},
			keyPairs: map[string][]ec2types.Tag{}, groups: map[string]*ec2types.SecurityGroup{},
			snapshots: map[string]*ec2types.Snapshot{}, launch: map[string][]ec2types.LaunchPermission{},
			deprecate: map[string]string{}, tokens: map[string]string{}, spot: map[string]string{},
			snapPerms: map[string][]ec2types.CreateVolumePermission{},
		}
		c.regions[name] = r
	}
	return r
}

func (c *fakeCloud) client(region string) *fakeEC2 { return &fakeEC2{cloud: c, name: region} }

func (c *fakeCloud) regional() regionalEC2 {
	return func(_ context.Context, region string) (ec2API, error) { return c.client(region), nil }
}

// call records a call, applies the fault hook, and locks the cloud for the
// caller (unlocked by the returned func).
func (c *fakeCloud) call(region, action string) (unlock func(), err error) {
	c.mu.Lock()
	c.calls = append(c.calls, region+" "+action)
	c.counts[region+" "+action]++
	n := c.counts[region+" "+action]
	if c.fail != nil {
		if err := c.fail(region, action, n); err != nil {
			c.mu.Unlock()
			return nil, err
		}
	}
	return func() {
		c.mu.Unlock()
		if c.after != nil {
			c.after(region, action, n)
		}
	}, nil
}

func (c *fakeCloud) id(prefix string) string {
	c.seq++
	return fmt.Sprintf("%s-%017x", prefix, c.seq)
}

// Calls returns the recorded calls.
func (c *fakeCloud) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// leftovers lists everything a build made that is still there: instances
// not terminated, key pairs, security groups, AMIs and snapshots (the
// source AMI and its snapshot excluded).
func (c *fakeCloud) leftovers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name, r := range c.regions {
		for id, i := range r.instances {
			if i.State.Name != ec2types.InstanceStateNameTerminated {
				out = append(out, name+" instance "+id)
			}
		}
		for k := range r.keyPairs {
			out = append(out, name+" key pair "+k)
		}
		for id := range r.groups {
			out = append(out, name+" security group "+id)
		}
		for id := range r.images {
			if id != fakeSourceAMI {
				out = append(out, name+" image "+id)
			}
		}
		for id := range r.snapshots {
			out = append(out, name+" snapshot "+id)
		}
		for id, st := range r.spot {
			if st == "active" {
				out = append(out, name+" spot request "+id)
			}
		}
	}
	for id := range c.sessions {
		out = append(out, "ssm session "+id)
	}
	sort.Strings(out)
	return out
}

func apiError(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: "injected " + code}
}

func hasTag(tags []ec2types.Tag, key, value string) bool {
	for _, t := range tags {
		if aws.ToString(t.Key) == key && aws.ToString(t.Value) == value {
			return true
		}
	}
	return false
}

func tagsOf(specs []ec2types.TagSpecification, rt ec2types.ResourceType) []ec2types.Tag {
	for _, s := range specs {
		if s.ResourceType == rt {
			return s.Tags
		}
	}
	return nil
}

type fakeEC2 struct {
	cloud *fakeCloud
	name  string
}

func (f *fakeEC2) r() *fakeRegion { return f.cloud.region(f.name) }

func (f *fakeEC2) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	unlock, err := f.cloud.call(f.name, "DescribeImages")
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := &ec2.DescribeImagesOutput{}
	for _, id := range slices.Sorted(maps.Keys(f.r().images)) {
		img := f.r().images[id]
		if len(in.ImageIds) > 0 && !slices.Contains(in.ImageIds, id) {
			continue
		}
		if slices.Contains(in.Owners, "self") && aws.ToString(img.OwnerId) != "self" {
			continue
		}
		if !matches(in.Filters, map[string]string{"name": aws.ToString(img.Name)}, img.Tags) {
			continue
		}
		out.Images = append(out.Images, *img)
	}
	if len(in.ImageIds) > 0 && len(out.Images) == 0 {
		return nil, apiError("InvalidAMIID.NotFound")
	}
	return out, nil
}

// matches applies name=value and tag:KEY=value filters.
func matches(filters []ec2types.Filter, attrs map[string]string, tags []ec2types.Tag) bool {
	for _, fl := range filters {
		name := aws.ToString(fl.Name)
		ok := false
		for _, v := range fl.Values {
			if strings.HasPrefix(name, "tag:") {
				ok = ok || hasTag(tags, strings.TrimPrefix(name, "tag:"), v)
			} else if got, known := attrs[name]; known {
				ok = ok || matchGlob(v, got)
			} else {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func matchGlob(pattern, s string) bool {
	if strings.HasSuffix(pattern, "*") {
		return strings.HasPrefix(s, strings.TrimSuffix(pattern, "*"))
	}
	return pattern == s
}

func (f *fakeEC2) DescribeInstanceTypes(_ context.Context, in *ec2.DescribeInstanceTypesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error) {
	unlock, err := f.cloud.call(f.name, "DescribeInstanceTypes")
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := &ec2.DescribeInstanceTypesOutput{}
	for _, t := range in.InstanceTypes {
		arch := ec2types.ArchitectureTypeX8664
		switch {
		case strings.HasPrefix(string(t), "nope"):
			continue
		case strings.Contains(strings.SplitN(string(t), ".", 2)[0], "g"):
			arch = ec2types.ArchitectureTypeArm64
		}
		out.InstanceTypes = append(out.InstanceTypes, ec2types.InstanceTypeInfo{
			InstanceType:  t,
			ProcessorInfo: &ec2types.ProcessorInfo{SupportedArchitectures: []ec2types.ArchitectureType{arch}},
		})
	}
	return out, nil
}

func (f *fakeEC2) DescribeSubnets(_ context.Context, in *ec2.DescribeSubnetsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error) {
	unlock, err := f.cloud.call(f.name, "DescribeSubnets")
	if err != nil {
		return nil, err
	}
	defer unlock()
	all := []ec2types.Subnet{
		{SubnetId: aws.String("subnet-aaaaaaaa"), VpcId: aws.String("vpc-11111111"), AvailableIpAddressCount: aws.Int32(10),
			Tags: []ec2types.Tag{{Key: aws.String("Tier"), Value: aws.String("build")}}},
		{SubnetId: aws.String("subnet-bbbbbbbb"), VpcId: aws.String("vpc-11111111"), AvailableIpAddressCount: aws.Int32(200),
			Tags: []ec2types.Tag{{Key: aws.String("Tier"), Value: aws.String("build")}}},
		{SubnetId: aws.String("subnet-cccccccc"), VpcId: aws.String("vpc-22222222"), AvailableIpAddressCount: aws.Int32(50)},
	}
	out := &ec2.DescribeSubnetsOutput{}
	for _, s := range all {
		if len(in.SubnetIds) > 0 && !slices.Contains(in.SubnetIds, aws.ToString(s.SubnetId)) {
			continue
		}
		if !matches(in.Filters, map[string]string{"vpc-id": aws.ToString(s.VpcId)}, s.Tags) {
			continue
		}
		out.Subnets = append(out.Subnets, s)
	}
	return out, nil
}

func (f *fakeEC2) DescribeVpcs(_ context.Context, in *ec2.DescribeVpcsInput, _ ...func(*ec2.Options)) (*ec2.DescribeVpcsOutput, error) {
	unlock, err := f.cloud.call(f.name, "DescribeVpcs")
	if err != nil {
		return nil, err
	}
	defer unlock()
	return &ec2.DescribeVpcsOutput{Vpcs: []ec2types.Vpc{{VpcId: aws.String("vpc-default0"), IsDefault: aws.Bool(true)}}}, nil
}

func (f *fakeEC2) ImportKeyPair(_ context.Context, in *ec2.ImportKeyPairInput, _ ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error) {
	unlock, err := f.cloud.call(f.name, "ImportKeyPair")
	if err != nil {
		return nil, err
	}
	defer unlock()
	name := aws.ToString(in.KeyName)
	if _, ok := f.r().keyPairs[name]; ok {
		return nil, apiError("InvalidKeyPair.Duplicate")
	}
	if !strings.HasPrefix(string(in.PublicKeyMaterial), "ssh-ed25519 ") {
		return nil, apiError("InvalidKey.Format")
	}
	f.r().keyPairs[name] = tagsOf(in.TagSpecifications, ec2types.ResourceTypeKeyPair)
	return &ec2.ImportKeyPairOutput{KeyName: in.KeyName, KeyPairId: aws.String(f.cloud.id("key"))}, nil
}

func (f *fakeEC2) DeleteKeyPair(_ context.Context, in *ec2.DeleteKeyPairInput, _ ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error) {
	unlock, err := f.cloud.call(f.name, "DeleteKeyPair")
	if err != nil {
		return nil, err
	}
	defer unlock()
	delete(f.r().keyPairs, aws.ToString(in.KeyName))
	return &ec2.DeleteKeyPairOutput{}, nil
}

func (f *fakeEC2) CreateSecurityGroup(_ context.Context, in *ec2.CreateSecurityGroupInput, _ ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error) {
	unlock, err := f.cloud.call(f.name, "CreateSecurityGroup")
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := f.cloud.id("sg")
	vpc := in.VpcId
	if vpc == nil {
		// As EC2: the default VPC.
		vpc = aws.String("vpc-default0")
	}
	f.r().groups[id] = &ec2types.SecurityGroup{GroupId: aws.String(id), GroupName: in.GroupName, VpcId: vpc,
		Tags: tagsOf(in.TagSpecifications, ec2types.ResourceTypeSecurityGroup)}
	return &ec2.CreateSecurityGroupOutput{GroupId: aws.String(id)}, nil
}

func (f *fakeEC2) AuthorizeSecurityGroupIngress(_ context.Context, in *ec2.AuthorizeSecurityGroupIngressInput, _ ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error) {
	unlock, err := f.cloud.call(f.name, "AuthorizeSecurityGroupIngress")
	if err != nil {
		return nil, err
	}
	defer unlock()
	g, ok := f.r().groups[aws.ToString(in.GroupId)]
	if !ok {
		return nil, apiError("InvalidGroup.NotFound")
	}
	g.IpPermissions = append(g.IpPermissions, in.IpPermissions...)
	return &ec2.AuthorizeSecurityGroupIngressOutput{}, nil
}

func (f *fakeEC2) DescribeSecurityGroups(_ context.Context, in *ec2.DescribeSecurityGroupsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error) {
	unlock, err := f.cloud.call(f.name, "DescribeSecurityGroups")
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := &ec2.DescribeSecurityGroupsOutput{}
	for _, id := range slices.Sorted(maps.Keys(f.r().groups)) {
		g := f.r().groups[id]
		if matches(in.Filters, map[string]string{"group-name": aws.ToString(g.GroupName), "vpc-id": aws.ToString(g.VpcId)}, g.Tags) {
			out.SecurityGroups = append(out.SecurityGroups, *g)
		}
	}
	return out, nil
}

func (f *fakeEC2) DeleteSecurityGroup(_ context.Context, in *ec2.DeleteSecurityGroupInput, _ ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error) {
	unlock, err := f.cloud.call(f.name, "DeleteSecurityGroup")
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := aws.ToString(in.GroupId)
	for _, i := range f.r().instances {
		if i.State.Name != ec2types.InstanceStateNameTerminated {
			for _, g := range i.SecurityGroups {
				if aws.ToString(g.GroupId) == id {
					return nil, apiError("DependencyViolation")
				}
			}
		}
	}
	delete(f.r().groups, id)
	return &ec2.DeleteSecurityGroupOutput{}, nil
}

func (f *fakeEC2) RunInstances(_ context.Context, in *ec2.RunInstancesInput, _ ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	unlock, err := f.cloud.call(f.name, "RunInstances")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if id, ok := f.r().tokens[aws.ToString(in.ClientToken)]; ok && in.ClientToken != nil {
		return &ec2.RunInstancesOutput{Instances: []ec2types.Instance{*f.r().instances[id]}}, nil
	}
	if _, ok := f.r().images[aws.ToString(in.ImageId)]; !ok {
		return nil, apiError("InvalidAMIID.NotFound")
	}
	id := f.cloud.id("i")
	inst := &ec2types.Instance{
		InstanceId: aws.String(id), ImageId: in.ImageId, InstanceType: in.InstanceType, KeyName: in.KeyName,
		EnaSupport:       f.r().images[aws.ToString(in.ImageId)].EnaSupport, // as EC2: the AMI's
		State:            &ec2types.InstanceState{Name: ec2types.InstanceStateNameRunning},
		PublicIpAddress:  aws.String("203.0.113.10"),
		PrivateIpAddress: aws.String("10.0.0.10"),
		Tags:             tagsOf(in.TagSpecifications, ec2types.ResourceTypeInstance),
		MetadataOptions:  &ec2types.InstanceMetadataOptionsResponse{HttpTokens: ec2types.HttpTokensState(in.MetadataOptions.HttpTokens)},
		BlockDeviceMappings: []ec2types.InstanceBlockDeviceMapping{{DeviceName: in.BlockDeviceMappings[0].DeviceName,
			Ebs: &ec2types.EbsInstanceBlockDevice{VolumeId: aws.String(f.cloud.id("vol"))}}},
	}
	groups := in.SecurityGroupIds
	if len(in.NetworkInterfaces) > 0 {
		nic := in.NetworkInterfaces[0]
		groups = nic.Groups
		if !aws.ToBool(nic.AssociatePublicIpAddress) {
			inst.PublicIpAddress = nil
		}
		inst.SubnetId = nic.SubnetId
	}
	for _, g := range groups {
		inst.SecurityGroups = append(inst.SecurityGroups, ec2types.GroupIdentifier{GroupId: aws.String(g)})
	}
	if mo := in.InstanceMarketOptions; mo != nil && mo.MarketType == ec2types.MarketTypeSpot {
		if in.InstanceInitiatedShutdownBehavior == ec2types.ShutdownBehaviorStop {
			return nil, apiError("InvalidParameterCombination")
		}
		req := f.cloud.id("sir")
		f.r().spot[req] = "active"
		inst.SpotInstanceRequestId = aws.String(req)
		inst.InstanceLifecycle = ec2types.InstanceLifecycleTypeSpot
	}
	inst.MetadataOptions.HttpPutResponseHopLimit = in.MetadataOptions.HttpPutResponseHopLimit
	inst.MetadataOptions.HttpEndpoint = ec2types.InstanceMetadataEndpointState(in.MetadataOptions.HttpEndpoint)
	f.r().instances[id] = inst
	f.r().tokens[aws.ToString(in.ClientToken)] = id
	return &ec2.RunInstancesOutput{Instances: []ec2types.Instance{*inst}}, nil
}

func (f *fakeEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	unlock, err := f.cloud.call(f.name, "DescribeInstances")
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := ec2types.Reservation{}
	for _, id := range slices.Sorted(maps.Keys(f.r().instances)) {
		i := f.r().instances[id]
		if len(in.InstanceIds) > 0 && !slices.Contains(in.InstanceIds, id) {
			continue
		}
		if !matches(in.Filters, map[string]string{}, i.Tags) {
			continue
		}
		if !matchesState(in.Filters, string(i.State.Name)) {
			continue
		}
		res.Instances = append(res.Instances, *i)
	}
	out := &ec2.DescribeInstancesOutput{}
	if len(res.Instances) > 0 {
		out.Reservations = []ec2types.Reservation{res}
	}
	return out, nil
}

func matchesState(filters []ec2types.Filter, state string) bool {
	for _, fl := range filters {
		if aws.ToString(fl.Name) == "instance-state-name" && !slices.Contains(fl.Values, state) {
			return false
		}
	}
	return true
}

func (f *fakeEC2) TerminateInstances(_ context.Context, in *ec2.TerminateInstancesInput, _ ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	unlock, err := f.cloud.call(f.name, "TerminateInstances")
	if err != nil {
		return nil, err
	}
	defer unlock()
	for _, id := range in.InstanceIds {
		i, ok := f.r().instances[id]
		if !ok {
			return nil, apiError("InvalidInstanceID.NotFound")
		}
		i.State = &ec2types.InstanceState{Name: ec2types.InstanceStateNameTerminated}
		if req := aws.ToString(i.SpotInstanceRequestId); req != "" {
			f.r().spot[req] = "closed"
		}
	}
	return &ec2.TerminateInstancesOutput{}, nil
}

func (f *fakeEC2) CancelSpotInstanceRequests(_ context.Context, in *ec2.CancelSpotInstanceRequestsInput, _ ...func(*ec2.Options)) (*ec2.CancelSpotInstanceRequestsOutput, error) {
	unlock, err := f.cloud.call(f.name, "CancelSpotInstanceRequests")
	if err != nil {
		return nil, err
	}
	defer unlock()
	for _, id := range in.SpotInstanceRequestIds {
		if _, ok := f.r().spot[id]; !ok {
			return nil, apiError("InvalidSpotInstanceRequestID.NotFound")
		}
		f.r().spot[id] = "cancelled"
	}
	return &ec2.CancelSpotInstanceRequestsOutput{}, nil
}

func (f *fakeEC2) ModifySnapshotAttribute(_ context.Context, in *ec2.ModifySnapshotAttributeInput, _ ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error) {
	unlock, err := f.cloud.call(f.name, "ModifySnapshotAttribute")
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := aws.ToString(in.SnapshotId)
	if f.r().snapshots[id] == nil {
		return nil, apiError("InvalidSnapshot.NotFound")
	}
	if in.OperationType != ec2types.OperationTypeAdd {
		return nil, apiError("InvalidParameterValue")
	}
	for _, u := range in.UserIds {
		f.r().snapPerms[id] = append(f.r().snapPerms[id], ec2types.CreateVolumePermission{UserId: aws.String(u)})
	}
	for _, g := range in.GroupNames {
		f.r().snapPerms[id] = append(f.r().snapPerms[id], ec2types.CreateVolumePermission{Group: ec2types.PermissionGroup(g)})
	}
	return &ec2.ModifySnapshotAttributeOutput{}, nil
}

func (f *fakeEC2) StopInstances(_ context.Context, in *ec2.StopInstancesInput, _ ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error) {
	unlock, err := f.cloud.call(f.name, "StopInstances")
	if err != nil {
		return nil, err
	}
	defer unlock()
	for _, id := range in.InstanceIds {
		if f.r().instances[id].InstanceLifecycle == ec2types.InstanceLifecycleTypeSpot {
			return nil, apiError("UnsupportedOperation")
		}
		f.r().instances[id].State = &ec2types.InstanceState{Name: ec2types.InstanceStateNameStopped}
	}
	return &ec2.StopInstancesOutput{}, nil
}

func (f *fakeEC2) ModifyInstanceAttribute(_ context.Context, in *ec2.ModifyInstanceAttributeInput, _ ...func(*ec2.Options)) (*ec2.ModifyInstanceAttributeOutput, error) {
	unlock, err := f.cloud.call(f.name, "ModifyInstanceAttribute")
	if err != nil {
		return nil, err
	}
	defer unlock()
	i := f.r().instances[aws.ToString(in.InstanceId)]
	if i.State.Name != ec2types.InstanceStateNameStopped {
		return nil, apiError("IncorrectInstanceState")
	}
	i.EnaSupport = in.EnaSupport.Value
	return &ec2.ModifyInstanceAttributeOutput{}, nil
}

func (f *fakeEC2) CreateImage(_ context.Context, in *ec2.CreateImageInput, _ ...func(*ec2.Options)) (*ec2.CreateImageOutput, error) {
	unlock, err := f.cloud.call(f.name, "CreateImage")
	if err != nil {
		return nil, err
	}
	defer unlock()
	for _, img := range f.r().images {
		if aws.ToString(img.Name) == aws.ToString(in.Name) && aws.ToString(img.OwnerId) == "self" {
			return nil, apiError("InvalidAMIName.Duplicate")
		}
	}
	inst := f.r().instances[aws.ToString(in.InstanceId)]
	id, snap := f.cloud.id("ami"), f.cloud.id("snap")
	f.r().snapshots[snap] = &ec2types.Snapshot{SnapshotId: aws.String(snap), Tags: tagsOf(in.TagSpecifications, ec2types.ResourceTypeSnapshot)}
	f.r().images[id] = &ec2types.Image{
		ImageId: aws.String(id), Name: in.Name, Description: in.Description, OwnerId: aws.String("self"),
		State: ec2types.ImageStateAvailable, EnaSupport: inst.EnaSupport,
		Tags: tagsOf(in.TagSpecifications, ec2types.ResourceTypeImage),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"),
			Ebs: &ec2types.EbsBlockDevice{SnapshotId: aws.String(snap)}}},
	}
	return &ec2.CreateImageOutput{ImageId: aws.String(id)}, nil
}

func (f *fakeEC2) CopyImage(_ context.Context, in *ec2.CopyImageInput, _ ...func(*ec2.Options)) (*ec2.CopyImageOutput, error) {
	unlock, err := f.cloud.call(f.name, "CopyImage")
	if err != nil {
		return nil, err
	}
	defer unlock()
	src, ok := f.cloud.region(aws.ToString(in.SourceRegion)).images[aws.ToString(in.SourceImageId)]
	if !ok {
		return nil, apiError("InvalidAMIID.NotFound")
	}
	id, snap := f.cloud.id("ami"), f.cloud.id("snap")
	f.r().snapshots[snap] = &ec2types.Snapshot{SnapshotId: aws.String(snap), KmsKeyId: in.KmsKeyId, Encrypted: in.Encrypted,
		Tags: tagsOf(in.TagSpecifications, ec2types.ResourceTypeSnapshot)}
	f.r().images[id] = &ec2types.Image{
		ImageId: aws.String(id), Name: in.Name, Description: in.Description, OwnerId: aws.String("self"),
		State: ec2types.ImageStateAvailable, ImdsSupport: src.ImdsSupport, Tags: tagsOf(in.TagSpecifications, ec2types.ResourceTypeImage),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"),
			Ebs: &ec2types.EbsBlockDevice{SnapshotId: aws.String(snap), KmsKeyId: in.KmsKeyId, Encrypted: in.Encrypted}}},
	}
	return &ec2.CopyImageOutput{ImageId: aws.String(id)}, nil
}

func (f *fakeEC2) CreateTags(_ context.Context, in *ec2.CreateTagsInput, _ ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	unlock, err := f.cloud.call(f.name, "CreateTags")
	if err != nil {
		return nil, err
	}
	defer unlock()
	for _, id := range in.Resources {
		switch {
		case f.r().images[id] != nil:
			f.r().images[id].Tags = append(f.r().images[id].Tags, in.Tags...)
		case f.r().snapshots[id] != nil:
			f.r().snapshots[id].Tags = append(f.r().snapshots[id].Tags, in.Tags...)
		default:
			return nil, apiError("InvalidID")
		}
	}
	return &ec2.CreateTagsOutput{}, nil
}

func (f *fakeEC2) DeregisterImage(_ context.Context, in *ec2.DeregisterImageInput, _ ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	unlock, err := f.cloud.call(f.name, "DeregisterImage")
	if err != nil {
		return nil, err
	}
	defer unlock()
	delete(f.r().images, aws.ToString(in.ImageId))
	return &ec2.DeregisterImageOutput{}, nil
}

func (f *fakeEC2) DescribeSnapshots(_ context.Context, in *ec2.DescribeSnapshotsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	unlock, err := f.cloud.call(f.name, "DescribeSnapshots")
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := &ec2.DescribeSnapshotsOutput{}
	for _, id := range slices.Sorted(maps.Keys(f.r().snapshots)) {
		if s := f.r().snapshots[id]; matches(in.Filters, nil, s.Tags) {
			out.Snapshots = append(out.Snapshots, *s)
		}
	}
	return out, nil
}

func (f *fakeEC2) DeleteSnapshot(_ context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	unlock, err := f.cloud.call(f.name, "DeleteSnapshot")
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := aws.ToString(in.SnapshotId)
	for _, img := range f.r().images {
		if slices.Contains(snapshotIDs(*img), id) {
			return nil, apiError("InvalidSnapshot.InUse")
		}
	}
	delete(f.r().snapshots, id)
	return &ec2.DeleteSnapshotOutput{}, nil
}

func (f *fakeEC2) ModifyImageAttribute(_ context.Context, in *ec2.ModifyImageAttributeInput, _ ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error) {
	unlock, err := f.cloud.call(f.name, "ModifyImageAttribute")
	if err != nil {
		return nil, err
	}
	defer unlock()
	img, ok := f.r().images[aws.ToString(in.ImageId)]
	if !ok {
		return nil, apiError("InvalidAMIID.NotFound")
	}
	if in.ImdsSupport != nil {
		if img.ImdsSupport == ec2types.ImdsSupportValuesV20 {
			return nil, apiError("InvalidParameter")
		}
		img.ImdsSupport = ec2types.ImdsSupportValues(aws.ToString(in.ImdsSupport.Value))
	}
	if in.LaunchPermission != nil {
		f.r().launch[aws.ToString(in.ImageId)] = append(f.r().launch[aws.ToString(in.ImageId)], in.LaunchPermission.Add...)
	}
	return &ec2.ModifyImageAttributeOutput{}, nil
}

func (f *fakeEC2) EnableImageDeprecation(_ context.Context, in *ec2.EnableImageDeprecationInput, _ ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error) {
	unlock, err := f.cloud.call(f.name, "EnableImageDeprecation")
	if err != nil {
		return nil, err
	}
	defer unlock()
	f.r().deprecate[aws.ToString(in.ImageId)] = in.DeprecateAt.UTC().Format("2006-01-02T15:04:05Z")
	return &ec2.EnableImageDeprecationOutput{}, nil
}

// fakeSSM answers GetParameter from the cloud's parameters, and the
// Session Manager calls.
type fakeSSM struct{ cloud *fakeCloud }

func (f *fakeSSM) GetParameter(_ context.Context, in *ssm.GetParameterInput, _ ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	unlock, err := f.cloud.call("ssm", "GetParameter")
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, ok := f.cloud.params[aws.ToString(in.Name)]
	if !ok {
		return nil, apiError("ParameterNotFound")
	}
	return &ssm.GetParameterOutput{Parameter: &ssmtypes.Parameter{Name: in.Name, Value: aws.String(v)}}, nil
}

// StartSession opens a session on a running instance of the build region.
// Like the SDK, it returns ctx's error when ctx ended while the answer was
// on its way (the after hook runs first, so a test cancelling there sees
// that); the cloud's lostStart makes it answer with errConnReset after making the
// session, as a broken connection would.
func (f *fakeSSM) StartSession(ctx context.Context, in *ssm.StartSessionInput, _ ...func(*ssm.Options)) (*ssm.StartSessionOutput, error) {
	unlock, err := f.cloud.call("ssm", "StartSession")
	if err != nil {
		return nil, err
	}
	inst := f.cloud.regions["eu-west-1"].instances[aws.ToString(in.Target)]
	if inst == nil || inst.State == nil || inst.State.Name != ec2types.InstanceStateNameRunning {
		unlock()
		return nil, apiError("InvalidTarget")
	}
	id := f.cloud.id("session")
	f.cloud.sessions[id] = in
	lost := f.cloud.lostStart != nil && f.cloud.lostStart(f.cloud.counts["ssm StartSession"])
	unlock()
	if lost {
		return nil, errConnReset
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &ssm.StartSessionOutput{SessionId: aws.String(id), StreamUrl: aws.String("wss://fake/" + id), TokenValue: aws.String("token")}, nil
}

// errConnReset is what the SDK returns when the connection breaks before the
// answer is read.
var errConnReset = errors.New("read tcp 127.0.0.1:50000->127.0.0.1:443: connection reset by peer")

// DescribeSessions lists the open sessions (State Active) to the Target of
// the filter.
func (f *fakeSSM) DescribeSessions(_ context.Context, in *ssm.DescribeSessionsInput, _ ...func(*ssm.Options)) (*ssm.DescribeSessionsOutput, error) {
	unlock, err := f.cloud.call("ssm", "DescribeSessions")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if in.State != ssmtypes.SessionStateActive || len(in.Filters) != 1 || in.Filters[0].Key != ssmtypes.SessionFilterKeyTargetId {
		return nil, apiError("InvalidFilterKey")
	}
	out := &ssm.DescribeSessionsOutput{}
	for id, s := range f.cloud.sessions {
		if aws.ToString(s.Target) == aws.ToString(in.Filters[0].Value) {
			out.Sessions = append(out.Sessions, ssmtypes.Session{SessionId: aws.String(id), Target: s.Target, Status: ssmtypes.SessionStatusConnected})
		}
	}
	return out, nil
}

func (f *fakeSSM) TerminateSession(_ context.Context, in *ssm.TerminateSessionInput, _ ...func(*ssm.Options)) (*ssm.TerminateSessionOutput, error) {
	unlock, err := f.cloud.call("ssm", "TerminateSession")
	if err != nil {
		return nil, err
	}
	defer unlock()
	delete(f.cloud.sessions, aws.ToString(in.SessionId))
	return &ssm.TerminateSessionOutput{SessionId: in.SessionId}, nil
}

var _ ssmAPI = (*fakeSSM)(nil)

var _ ec2API = (*fakeEC2)(nil)
