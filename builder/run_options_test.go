package builder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// The amazon-ebs keys of the build instance reach RunInstances.
func TestStepRunInstanceOptions(t *testing.T) {
	cloud := newFakeCloud()
	var got *ec2.RunInstancesInput
	client := &inputRecorder{fakeEC2: cloud.client("eu-west-1"), run: &got}
	state, _ := runInstanceState(t, cloud)
	c := testConfig(t, map[string]interface{}{
		"associate_public_ip_address": false,
		"metadata_options":            map[string]interface{}{"http_put_response_hop_limit": 2, "instance_metadata_tags": "enabled"},
		"spot_price":                  "0.05",
		"instance_type":               "",
		"spot_instance_types":         []string{"t3.small", "t3a.small"},
	})
	step := &stepRunInstance{EC2: client, Cfg: c, BuildID: c.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	if len(got.NetworkInterfaces) != 1 || aws.ToBool(got.NetworkInterfaces[0].AssociatePublicIpAddress) ||
		aws.ToString(got.NetworkInterfaces[0].SubnetId) != "subnet-aaaaaaaa" || got.NetworkInterfaces[0].Groups[0] != "sg-1" ||
		got.SubnetId != nil || got.SecurityGroupIds != nil {
		t.Errorf("network interface %+v, subnet %v, groups %v", got.NetworkInterfaces, got.SubnetId, got.SecurityGroupIds)
	}
	md := got.MetadataOptions
	if md.HttpTokens != ec2types.HttpTokensStateRequired || aws.ToInt32(md.HttpPutResponseHopLimit) != 2 || md.InstanceMetadataTags != ec2types.InstanceMetadataTagsStateEnabled {
		t.Errorf("metadata options %+v", md)
	}
	mo := got.InstanceMarketOptions
	if mo == nil || mo.MarketType != ec2types.MarketTypeSpot || aws.ToString(mo.SpotOptions.MaxPrice) != "0.05" ||
		mo.SpotOptions.SpotInstanceType != ec2types.SpotInstanceTypeOneTime || got.InstanceInitiatedShutdownBehavior != ec2types.ShutdownBehaviorTerminate {
		t.Errorf("market options %+v, shutdown %s", mo, got.InstanceInitiatedShutdownBehavior)
	}
	if inst := get[ec2types.Instance](state, keyInstance); inst.PublicIpAddress != nil {
		t.Errorf("public address %s despite associate_public_ip_address = false", aws.ToString(inst.PublicIpAddress))
	}
	step.Cleanup(state)
	if left := cloud.leftovers(); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
	if len(calls(cloud, "eu-west-1 CancelSpotInstanceRequests")) != 1 {
		t.Fatalf("Spot request not cancelled: %v", cloud.Calls())
	}
}

// A Spot build: the next type on SpotMaxPriceTooLow, no stop, and nothing
// left when any call fails or the build is cancelled after any call.
func TestBuildSpot(t *testing.T) {
	spot := func(t *testing.T) *Builder {
		b := &Builder{}
		raw := minimal()
		delete(raw, "instance_type")
		raw["spot_price"] = "auto"
		raw["spot_instance_types"] = []string{"t3.small", "t3a.small"}
		raw["ssh_cidrs"] = []string{"198.51.100.7/32"}
		raw["aws_polling"] = map[string]interface{}{"delay": "1ms", "timeout": "10s"}
		if _, _, err := b.Prepare(raw); err != nil {
			t.Fatal(err)
		}
		return b
	}
	tooLow := func(_, action string, n int) error {
		if action == "RunInstances" && n == 1 {
			return apiError("SpotMaxPriceTooLow")
		}
		return nil
	}
	cloud := newFakeCloud()
	cloud.fail = tooLow
	res := runBuild(context.Background(), t, spot(t), cloud)
	if res.err != nil {
		t.Fatalf("spot build: %v\n%s", res.err, res.ui.text())
	}
	if len(calls(cloud, "eu-west-1 StopInstances")) != 0 || !strings.Contains(res.ui.text(), "is not stopped (a one-time Spot instance cannot be)") {
		t.Errorf("a Spot instance was stopped: %v", cloud.Calls())
	}
	if gd, _ := res.artifact.State("generated_data").(map[string]interface{}); gd["InstanceType"] != "t3a.small" {
		t.Errorf("instance type %v, want the second Spot type", gd["InstanceType"])
	}
	reference := cloud.Calls()
	counts := map[string]int{}
	for _, c := range reference {
		counts[c]++
		region, action, _ := strings.Cut(c, " ")
		n := counts[c]
		if tooLow(region, action, n) != nil {
			continue // the call that already fails in the reference
		}
		t.Run("fault "+c, func(t *testing.T) {
			cl := newFakeCloud()
			cl.fail = func(r, a string, k int) error {
				if r == region && a == action && k == n {
					return apiError("InternalError")
				}
				return tooLow(r, a, k)
			}
			res := runBuild(context.Background(), t, spot(t), cl)
			if res.err != nil && !cleanupActions[action] && action != "CancelSpotInstanceRequests" {
				if left := cl.leftovers(); len(left) != 0 {
					t.Fatalf("failed (%v) and left %v", res.err, left)
				}
			}
		})
		t.Run("cancel "+c, func(t *testing.T) {
			cl := newFakeCloud()
			cl.fail = tooLow
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cl.after = func(r, a string, k int) {
				if r == region && a == action && k == n {
					cancel()
				}
			}
			if res := runBuild(ctx, t, spot(t), cl); res.err == nil {
				t.Fatal("cancelled build succeeded")
			}
			if left := cl.leftovers(); len(left) != 0 {
				t.Fatalf("cancelled and left %v", left)
			}
		})
	}
}

// skip_create_ami runs the instance and the provisioners, makes no AMI and
// leaves nothing.
func TestBuildSkipCreateAMI(t *testing.T) {
	b := &Builder{}
	raw := minimal()
	raw["skip_create_ami"] = true
	raw["ssh_cidrs"] = []string{"198.51.100.7/32"}
	raw["aws_polling"] = map[string]interface{}{"delay": "1ms", "timeout": "10s"}
	if _, _, err := b.Prepare(raw); err != nil {
		t.Fatal(err)
	}
	cloud := newFakeCloud()
	res := runBuild(context.Background(), t, b, cloud)
	if res.err != nil || res.artifact != nil {
		t.Fatalf("artifact %v, error %v", res.artifact, res.err)
	}
	if n := len(calls(cloud, "eu-west-1 CreateImage")); n != 0 {
		t.Fatalf("%d CreateImage calls", n)
	}
	if got := res.comm.commands(); len(got) != 2 {
		t.Fatalf("provisioning did not run: %q", got)
	}
	if left := cloud.leftovers(); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
}

// Extra volumes reach RunInstances and CreateImage, encrypted like the root.
func TestBlockDeviceMappings(t *testing.T) {
	cloud := newFakeCloud()
	var got *ec2.RunInstancesInput
	client := &inputRecorder{fakeEC2: cloud.client("eu-west-1"), run: &got}
	state, _ := runInstanceState(t, cloud)
	c := testConfig(t, map[string]interface{}{
		"root_volume": map[string]interface{}{"kms_key_id": "alias/root"},
		"launch_block_device_mappings": []map[string]interface{}{
			{"device_name": "/dev/sdf", "volume_size": 20, "volume_type": "gp3", "throughput": 250},
			{"device_name": "/dev/sdb", "virtual_name": "ephemeral0"},
		},
		"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdg", "volume_size": 5, "encrypted": false}},
	})
	step := &stepRunInstance{EC2: client, Cfg: c, BuildID: c.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	defer step.Cleanup(state)
	m := got.BlockDeviceMappings
	if len(m) != 3 || aws.ToString(m[1].DeviceName) != "/dev/sdf" || aws.ToInt32(m[1].Ebs.VolumeSize) != 20 || aws.ToInt32(m[1].Ebs.Throughput) != 250 ||
		!aws.ToBool(m[1].Ebs.Encrypted) || aws.ToString(m[1].Ebs.KmsKeyId) != "alias/root" || !aws.ToBool(m[1].Ebs.DeleteOnTermination) ||
		aws.ToString(m[2].VirtualName) != "ephemeral0" || m[2].Ebs != nil {
		t.Fatalf("launch mappings %+v", m)
	}
	ami := c.mappings(c.AMIBlockDevices)
	if len(ami) != 1 || aws.ToBool(ami[0].Ebs.Encrypted) || ami[0].Ebs.KmsKeyId != nil {
		t.Fatalf("ami mappings %+v", ami)
	}
	// The root device is root_volume's.
	bad := testConfig(t, map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/xvda", "volume_size": 5}}})
	state2, _ := runInstanceState(t, cloud)
	run2 := &stepRunInstance{EC2: cloud.client("eu-west-1"), Cfg: bad, BuildID: bad.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if run2.Run(context.Background(), state2) != multistep.ActionHalt || !strings.Contains(stateError(state2), "ami_block_device_mappings: /dev/xvda is the root device of the source AMI") {
		t.Fatalf("root device: %q", stateError(state2))
	}
}

// vpc_filter and security_group_filter fill vpc_id and the groups.
func TestStepNetworkFilters(t *testing.T) {
	cloud := newFakeCloud()
	cloud.region("eu-west-1").groups["sg-0000000000000b001"] = &ec2types.SecurityGroup{GroupId: aws.String("sg-0000000000000b001"),
		GroupName: aws.String("build"), VpcId: aws.String("vpc-default0"), Tags: []ec2types.Tag{{Key: aws.String("Role"), Value: aws.String("build")}}}
	cloud.region("eu-west-1").groups["sg-0000000000000b002"] = &ec2types.SecurityGroup{GroupId: aws.String("sg-0000000000000b002"),
		GroupName: aws.String("other"), VpcId: aws.String("vpc-22222222"), Tags: []ec2types.Tag{{Key: aws.String("Role"), Value: aws.String("build")}}}
	state, _ := testState(t)
	step := &stepNetwork{EC2: cloud.client("eu-west-1"), Net: RunConfig{
		VpcFilter:           &ResourceFilter{Filters: map[string]string{"is-default": "true"}},
		SecurityGroupFilter: &ResourceFilter{Filters: map[string]string{"tag:Role": "build"}},
	}}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	if v := get[string](state, keyVpcID); v != "vpc-default0" {
		t.Errorf("vpc %q", v)
	}
	// Only the group in the VPC found.
	if g := get[[]string](state, keySecurityGroup); len(g) != 1 || g[0] != "sg-0000000000000b001" {
		t.Errorf("groups %v", g)
	}
	none := &stepNetwork{EC2: cloud.client("eu-west-1"), Net: RunConfig{SecurityGroupFilter: &ResourceFilter{Filters: map[string]string{"tag:Role": "web"}}}}
	state2, _ := testState(t)
	if none.Run(context.Background(), state2) != multistep.ActionHalt || !strings.Contains(stateError(state2), "security_group_filter: no security group matches") {
		t.Fatalf("no match: %q", stateError(state2))
	}
}
