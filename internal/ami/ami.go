// Package ami is the one way this plugin deletes an AMI: deregister it, then
// delete its EBS snapshots, with one rule for what is already gone. The
// wsgi-ami builder uses it for its cleanups and force_deregister, the
// wsgi-launch-template post-processor for keep_releases.
package ami

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// DeleteAPI is the part of EC2 that deleting an AMI takes.
type DeleteAPI interface {
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// goneCodes are the EC2 error codes that say the AMI or snapshot no longer
// exists: deleting it is then done, not a failure. (A deregistered AMI
// answers Unavailable for a while, then NotFound.)
var goneCodes = map[string]bool{
	"InvalidAMIID.NotFound":    true,
	"InvalidAMIID.Unavailable": true,
	"InvalidSnapshot.NotFound": true,
}

// IsGone reports whether err says the AMI or snapshot is already gone.
func IsGone(err error) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && goneCodes[apiErr.ErrorCode()]
}

// SnapshotIDs lists the EBS snapshots of an image's block devices, in
// mapping order.
func SnapshotIDs(img types.Image) []string {
	var ids []string
	for _, bdm := range img.BlockDeviceMappings {
		if bdm.Ebs != nil && aws.ToString(bdm.Ebs.SnapshotId) != "" {
			ids = append(ids, aws.ToString(bdm.Ebs.SnapshotId))
		}
	}
	return ids
}

// Delete deregisters img, then deletes its snapshots (a snapshot cannot be
// deleted while an AMI uses it). What is already gone counts as deleted.
// deregistered says whether the AMI is gone at the end, also when a
// snapshot failed; the error names each call that failed.
func Delete(ctx context.Context, api DeleteAPI, img types.Image) (deregistered bool, err error) {
	id := aws.ToString(img.ImageId)
	if _, err := api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: img.ImageId}); err != nil && !IsGone(err) {
		return false, fmt.Errorf("deregistering %s: %w", id, err)
	}
	return true, DeleteSnapshots(ctx, api, SnapshotIDs(img), id)
}

// DeleteSnapshots deletes every snapshot in ids, going on after a failure;
// of names their AMI in the errors ("" when there is none).
func DeleteSnapshots(ctx context.Context, api DeleteAPI, ids []string, of string) error {
	var errs []error
	for _, sn := range ids {
		if _, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(sn)}); err != nil && !IsGone(err) {
			if of != "" {
				errs = append(errs, fmt.Errorf("deleting snapshot %s of %s: %w", sn, of, err))
			} else {
				errs = append(errs, fmt.Errorf("deleting snapshot %s: %w", sn, err))
			}
		}
	}
	return errors.Join(errs...)
}
