package builder

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type imageAttributeAPI interface {
	ModifyImageAttribute(context.Context, *ec2.ModifyImageAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error)
	ModifySnapshotAttribute(context.Context, *ec2.ModifySnapshotAttributeInput, ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error)
	EnableImageDeprecation(context.Context, *ec2.EnableImageDeprecationInput, ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
}

// stepImageAttributes sets, on the AMI in every region: IMDSv2 required
// (imds_support), launch permissions (ami_users, ami_org_arns, ami_ou_arns,
// ami_groups), create-volume permissions on its snapshots (snapshot_users,
// snapshot_groups) and deprecate_at. Its changes go with the AMI, which the image ledger
// removes on failure, so Cleanup has nothing to undo.
type stepImageAttributes struct {
	EC2         clientFor[imageAttributeAPI]
	IMDSv2      bool
	Users       []string
	OrgARNs     []string
	OUARNs      []string
	Groups      []string
	SnapUsers   []string
	SnapGroups  []string
	DeprecateAt time.Time
}

func (s *stepImageAttributes) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	u := ui(state)
	images := get[map[string]string](state, keyImages)
	details := get[map[string]ec2types.Image](state, keyImageDetails)
	for _, region := range slices.Sorted(maps.Keys(images)) {
		id := images[region]
		c, err := s.EC2(ctx, region)
		if err != nil {
			return halt(state, err)
		}
		// ImdsSupport cannot be set twice; a copy may already carry it.
		if s.IMDSv2 && details[region].ImdsSupport != ec2types.ImdsSupportValuesV20 {
			say(u, fmt.Sprintf("Requiring IMDSv2 for instances of %s in %s", id, region))
			if _, err := c.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
				ImageId:     aws.String(id),
				ImdsSupport: &ec2types.AttributeValue{Value: aws.String("v2.0")},
			}); err != nil {
				return halt(state, fmt.Errorf("imds_support: setting v2.0 on %s in %s: %w", id, region, err))
			}
		}
		if len(s.Users)+len(s.OrgARNs)+len(s.OUARNs)+len(s.Groups) > 0 {
			var add []ec2types.LaunchPermission
			for _, a := range s.Users {
				add = append(add, ec2types.LaunchPermission{UserId: aws.String(a)})
			}
			for _, a := range s.OrgARNs {
				add = append(add, ec2types.LaunchPermission{OrganizationArn: aws.String(a)})
			}
			for _, a := range s.OUARNs {
				add = append(add, ec2types.LaunchPermission{OrganizationalUnitArn: aws.String(a)})
			}
			for _, g := range s.Groups {
				add = append(add, ec2types.LaunchPermission{Group: ec2types.PermissionGroup(g)})
			}
			say(u, fmt.Sprintf("Sharing %s in %s with %d principals", id, region, len(add)))
			if _, err := c.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
				ImageId:          aws.String(id),
				LaunchPermission: &ec2types.LaunchPermissionModifications{Add: add},
			}); err != nil {
				return halt(state, fmt.Errorf("ami_users: sharing %s in %s: %w", id, region, err))
			}
		}
		if len(s.SnapUsers)+len(s.SnapGroups) > 0 {
			for _, sn := range snapshotIDs(details[region]) {
				say(u, fmt.Sprintf("Sharing snapshot %s of %s in %s with %d principals", sn, id, region, len(s.SnapUsers)+len(s.SnapGroups)))
				// The OperationType form: EC2 takes it as well as
				// CreateVolumePermission, and moto only this one.
				if _, err := c.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
					SnapshotId: aws.String(sn), Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission,
					OperationType: ec2types.OperationTypeAdd, UserIds: s.SnapUsers, GroupNames: s.SnapGroups,
				}); err != nil {
					return halt(state, fmt.Errorf("snapshot_users: sharing snapshot %s of %s in %s: %w", sn, id, region, err))
				}
			}
		}
		if !s.DeprecateAt.IsZero() {
			say(u, fmt.Sprintf("Deprecating %s in %s at %s", id, region, s.DeprecateAt.UTC().Format(time.RFC3339)))
			if _, err := c.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{
				ImageId:     aws.String(id),
				DeprecateAt: aws.Time(s.DeprecateAt.UTC().Truncate(time.Minute)),
			}); err != nil {
				return halt(state, fmt.Errorf("deprecate_at: on %s in %s: %w", id, region, err))
			}
		}
	}
	return multistep.ActionContinue
}

func (s *stepImageAttributes) Cleanup(multistep.StateBag) {}
