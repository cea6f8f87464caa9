package ami

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// fakeEC2 answers DeregisterImage and DeleteSnapshot from a table of errors
// and records the calls.
type fakeEC2 struct {
	errs  map[string]error // "DeregisterImage ami-1", "DeleteSnapshot snap-1"
	calls []string
}

func (f *fakeEC2) DeregisterImage(_ context.Context, in *ec2.DeregisterImageInput, _ ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	c := "DeregisterImage " + aws.ToString(in.ImageId)
	f.calls = append(f.calls, c)
	return &ec2.DeregisterImageOutput{}, f.errs[c]
}

func (f *fakeEC2) DeleteSnapshot(_ context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	c := "DeleteSnapshot " + aws.ToString(in.SnapshotId)
	f.calls = append(f.calls, c)
	return &ec2.DeleteSnapshotOutput{}, f.errs[c]
}

func apiErr(code string) error { return &smithy.GenericAPIError{Code: code, Message: "test"} }

func image() types.Image {
	return types.Image{ImageId: aws.String("ami-1"), BlockDeviceMappings: []types.BlockDeviceMapping{
		{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: aws.String("snap-1")}},
		{DeviceName: aws.String("/dev/sdb")}, // ephemeral: no snapshot
		{DeviceName: aws.String("/dev/sdc"), Ebs: &types.EbsBlockDevice{SnapshotId: aws.String("snap-2")}},
	}}
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name      string
		errs      map[string]error
		wantDereg bool
		wantCalls string
		wantErr   []string
	}{
		{name: "all there", wantDereg: true,
			wantCalls: "DeregisterImage ami-1,DeleteSnapshot snap-1,DeleteSnapshot snap-2"},
		{name: "already gone", wantDereg: true,
			errs:      map[string]error{"DeregisterImage ami-1": apiErr("InvalidAMIID.NotFound"), "DeleteSnapshot snap-1": apiErr("InvalidSnapshot.NotFound")},
			wantCalls: "DeregisterImage ami-1,DeleteSnapshot snap-1,DeleteSnapshot snap-2"},
		{name: "deregistered a moment ago", wantDereg: true,
			errs:      map[string]error{"DeregisterImage ami-1": apiErr("InvalidAMIID.Unavailable")},
			wantCalls: "DeregisterImage ami-1,DeleteSnapshot snap-1,DeleteSnapshot snap-2"},
		{name: "deregister denied: snapshots untouched",
			errs:      map[string]error{"DeregisterImage ami-1": apiErr("UnauthorizedOperation")},
			wantCalls: "DeregisterImage ami-1", wantErr: []string{"deregistering ami-1: ", "UnauthorizedOperation"}},
		{name: "malformed id is not gone",
			errs:      map[string]error{"DeregisterImage ami-1": apiErr("InvalidAMIID.Malformed")},
			wantCalls: "DeregisterImage ami-1", wantErr: []string{"InvalidAMIID.Malformed"}},
		{name: "one snapshot fails, the other is still deleted", wantDereg: true,
			errs:      map[string]error{"DeleteSnapshot snap-1": apiErr("InvalidSnapshot.InUse")},
			wantCalls: "DeregisterImage ami-1,DeleteSnapshot snap-1,DeleteSnapshot snap-2",
			wantErr:   []string{"deleting snapshot snap-1 of ami-1: ", "InvalidSnapshot.InUse"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeEC2{errs: tt.errs}
			dereg, err := Delete(context.Background(), f, image())
			if dereg != tt.wantDereg {
				t.Errorf("deregistered = %v, want %v", dereg, tt.wantDereg)
			}
			if got := strings.Join(f.calls, ","); got != tt.wantCalls {
				t.Errorf("calls %s, want %s", got, tt.wantCalls)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDeleteSnapshotsWithoutAMI(t *testing.T) {
	f := &fakeEC2{errs: map[string]error{"DeleteSnapshot snap-9": apiErr("InternalError")}}
	err := DeleteSnapshots(context.Background(), f, []string{"snap-9"}, "")
	if err == nil || !strings.HasPrefix(err.Error(), "deleting snapshot snap-9: ") {
		t.Fatalf("error %v", err)
	}
}

func TestIsGone(t *testing.T) {
	if IsGone(errors.New("InvalidAMIID.NotFound")) {
		t.Error("a plain error is not an EC2 answer")
	}
	if !IsGone(&smithy.OperationError{Err: apiErr("InvalidSnapshot.NotFound")}) {
		t.Error("a wrapped NotFound is gone")
	}
}
