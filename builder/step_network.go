package builder

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type networkAPI interface {
	DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeVpcs(context.Context, *ec2.DescribeVpcsInput, ...func(*ec2.Options)) (*ec2.DescribeVpcsOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
}

// stepNetwork finds the subnet and the VPC the build runs in, and the
// security groups of security_group_filter. The VPC is the subnet's, or
// vpc_id (or vpc_filter's); with neither it stays unknown and AWS uses the
// default VPC for the temporary group and the instance alike, so no call
// is spent finding it. It makes nothing.
type stepNetwork struct {
	EC2 networkAPI
	Net RunConfig
}

func (s *stepNetwork) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	subnetID, vpcID := s.Net.SubnetID, s.Net.VpcID
	if f := s.Net.VpcFilter; f != nil {
		out, err := s.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: filters(f.Filters)})
		if err != nil {
			return halt(state, fmt.Errorf("vpc_filter: describing VPCs: %w", err))
		}
		if len(out.Vpcs) != 1 {
			return halt(state, fmt.Errorf("vpc_filter: %d VPCs match %v; exactly one must", len(out.Vpcs), f.Filters))
		}
		vpcID = aws.ToString(out.Vpcs[0].VpcId)
	}
	var in *ec2.DescribeSubnetsInput
	switch {
	case subnetID != "":
		in = &ec2.DescribeSubnetsInput{SubnetIds: []string{subnetID}}
	case s.Net.SubnetFilter != nil:
		in = &ec2.DescribeSubnetsInput{Filters: filters(s.Net.SubnetFilter.Filters)}
		if vpcID != "" {
			in.Filters = append(in.Filters, ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{vpcID}})
		}
	}
	if in != nil {
		out, err := s.EC2.DescribeSubnets(ctx, in)
		if err != nil {
			return halt(state, fmt.Errorf("subnet: describing subnets: %w", err))
		}
		subnets := out.Subnets
		switch {
		case len(subnets) == 0 && subnetID != "":
			return halt(state, fmt.Errorf("subnet_id: %s not found", subnetID))
		case len(subnets) == 0:
			return halt(state, fmt.Errorf("subnet_filter: no subnet matches"))
		case len(subnets) > 1 && (s.Net.SubnetFilter == nil || !s.Net.SubnetFilter.MostFree && !s.Net.SubnetFilter.Random):
			return halt(state, fmt.Errorf("subnet_filter: %d subnets match; narrow the filters or set most_free = true or random = true", len(subnets)))
		case len(subnets) > 1 && s.Net.SubnetFilter.Random:
			pick := rand.IntN(len(subnets))
			subnets[0], subnets[pick] = subnets[pick], subnets[0]
		}
		if s.Net.SubnetFilter != nil && s.Net.SubnetFilter.MostFree {
			slices.SortStableFunc(subnets, func(a, b ec2types.Subnet) int {
				return cmp.Compare(aws.ToInt32(b.AvailableIpAddressCount), aws.ToInt32(a.AvailableIpAddressCount))
			})
		}
		subnetID = aws.ToString(subnets[0].SubnetId)
		if vpcID != "" && vpcID != aws.ToString(subnets[0].VpcId) {
			return halt(state, fmt.Errorf("vpc_id: subnet %s is in %s, not %s", subnetID, aws.ToString(subnets[0].VpcId), vpcID))
		}
		vpcID = aws.ToString(subnets[0].VpcId)
	}
	if subnetID != "" || vpcID != "" {
		say(ui(state), fmt.Sprintf("Network: subnet %q, VPC %q", subnetID, vpcID))
	}
	if f := s.Net.SecurityGroupFilter; f != nil {
		in := &ec2.DescribeSecurityGroupsInput{Filters: filters(f.Filters)}
		if vpcID != "" {
			in.Filters = append(in.Filters, ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{vpcID}})
		}
		out, err := s.EC2.DescribeSecurityGroups(ctx, in)
		if err != nil {
			return halt(state, fmt.Errorf("security_group_filter: describing security groups: %w", err))
		}
		if len(out.SecurityGroups) == 0 {
			return halt(state, fmt.Errorf("security_group_filter: no security group matches %v in VPC %q", f.Filters, vpcID))
		}
		var ids []string
		for _, g := range out.SecurityGroups {
			ids = append(ids, aws.ToString(g.GroupId))
		}
		say(ui(state), fmt.Sprintf("Security groups %v (security_group_filter)", ids))
		put(state, keySecurityGroup, ids)
	}
	put(state, keySubnetID, subnetID)
	put(state, keyVpcID, vpcID)
	return multistep.ActionContinue
}

func (s *stepNetwork) Cleanup(multistep.StateBag) {}
