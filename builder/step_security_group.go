package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type securityGroupAPI interface {
	CreateSecurityGroup(context.Context, *ec2.CreateSecurityGroupInput, ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	AuthorizeSecurityGroupIngress(context.Context, *ec2.AuthorizeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	DeleteSecurityGroup(context.Context, *ec2.DeleteSecurityGroupInput, ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error)
}

// stepSecurityGroup makes a security group that lets only ssh_cidrs (by
// default this machine's public address) reach the SSH port; with
// NoIngress (Session Manager) it lets nothing in, and keeps the default
// outbound rule the SSM agent needs to reach SSM over HTTPS. Cleanup
// deletes it; when the create call was interrupted, it finds the group by
// its build-derived name first.
type stepSecurityGroup struct {
	EC2        securityGroupAPI
	CIDRs      []string
	CheckIPURL string
	Port       int
	BuildID    string
	Tags       []ec2types.Tag
	HTTPClient *http.Client
	NoIngress  bool

	attempted bool
	name, id  string
	vpcID     string
}

func (s *stepSecurityGroup) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cidrs := s.CIDRs
	if len(cidrs) == 0 && !s.NoIngress {
		ip, err := s.publicIP(ctx)
		if err != nil {
			return halt(state, fmt.Errorf("ssh_cidrs: finding this machine's public address at %s: %w; set ssh_cidrs", s.CheckIPURL, err))
		}
		cidrs = []string{ip + "/32"}
		if strings.Contains(ip, ":") {
			cidrs = []string{ip + "/128"}
		}
	}
	s.vpcID = get[string](state, keyVpcID)
	s.name = "packer_wsgi_" + s.BuildID
	if s.NoIngress {
		say(ui(state), fmt.Sprintf("Creating temporary security group %s (no inbound rule: SSH goes through Session Manager)", s.name))
	} else {
		say(ui(state), fmt.Sprintf("Creating temporary security group %s (port %d from %s)", s.name, s.Port, strings.Join(cidrs, ", ")))
	}
	s.attempted = true
	in := &ec2.CreateSecurityGroupInput{
		GroupName:         aws.String(s.name),
		Description:       aws.String("Temporary group for wsgi-ami build " + s.BuildID),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: s.Tags}},
	}
	if s.vpcID != "" {
		in.VpcId = aws.String(s.vpcID)
	}
	out, err := s.EC2.CreateSecurityGroup(ctx, in)
	var ae smithy.APIError
	if err != nil && s.vpcID == "" && errors.As(err, &ae) && ae.ErrorCode() == "VPCIdNotSpecified" {
		return halt(state, fmt.Errorf("vpc_id: this region has no default VPC; set subnet_id or vpc_id (creating security group %s: %w)", s.name, err))
	}
	if err != nil {
		return halt(state, fmt.Errorf("creating security group %s: %w", s.name, err))
	}
	s.id = aws.ToString(out.GroupId)
	if s.NoIngress {
		put(state, keySecurityGroup, []string{s.id})
		return multistep.ActionContinue
	}
	perm := ec2types.IpPermission{
		IpProtocol: aws.String("tcp"),
		FromPort:   aws.Int32(int32(s.Port)),
		ToPort:     aws.Int32(int32(s.Port)),
	}
	for _, c := range cidrs {
		if strings.Contains(c, ":") {
			perm.Ipv6Ranges = append(perm.Ipv6Ranges, ec2types.Ipv6Range{CidrIpv6: aws.String(c), Description: aws.String("packer ssh")})
		} else {
			perm.IpRanges = append(perm.IpRanges, ec2types.IpRange{CidrIp: aws.String(c), Description: aws.String("packer ssh")})
		}
	}
	if _, err := s.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId:       aws.String(s.id),
		IpPermissions: []ec2types.IpPermission{perm},
	}); err != nil {
		return halt(state, fmt.Errorf("opening port %d in security group %s: %w", s.Port, s.id, err))
	}
	put(state, keySecurityGroup, []string{s.id})
	return multistep.ActionContinue
}

func (s *stepSecurityGroup) Cleanup(state multistep.StateBag) {
	if !s.attempted {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	u := ui(state)
	if s.id == "" {
		in := &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{s.name}}}}
		if s.vpcID != "" {
			in.Filters = append(in.Filters, ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{s.vpcID}})
		}
		out, err := s.EC2.DescribeSecurityGroups(ctx, in)
		if err != nil {
			sayErr(u, fmt.Sprintf("looking for security group %s: %v; check for it by hand", s.name, err))
			return
		}
		if len(out.SecurityGroups) == 0 {
			return
		}
		s.id = aws.ToString(out.SecurityGroups[0].GroupId)
	}
	say(u, fmt.Sprintf("Deleting temporary security group %s", s.id))
	// A terminated instance's network interface can hold the group for a
	// while: let the SDK retry DependencyViolation with its backoff.
	_, err := s.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(s.id)},
		func(o *ec2.Options) { o.Retryer = retry.AddWithErrorCodes(o.Retryer, "DependencyViolation") })
	if err != nil {
		sayErr(u, fmt.Sprintf("deleting security group %s: %v; delete it by hand", s.id, err))
	}
}

// publicIP asks checkip_url for this machine's address.
func (s *stepSecurityGroup) publicIP(ctx context.Context) (string, error) {
	c := s.HTTPClient
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.CheckIPURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	ip := net.ParseIP(strings.TrimSpace(string(body)))
	if ip == nil {
		return "", fmt.Errorf("answer %q is not an IP address", strings.TrimSpace(string(body)))
	}
	return ip.String(), nil
}
