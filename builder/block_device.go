package builder

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

var (
	deviceNamePattern  = regexp.MustCompile(`^/dev/(sd[a-z][0-9]*|xvd[a-z]{1,2}|nvme[0-9]+n[0-9]+)$`)
	virtualNamePattern = regexp.MustCompile(`^ephemeral[0-9]{1,2}$`)
	volumeTypes        = []string{"gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"}
)

// prepareBlockDevices fills defaults and checks one list; launch says it is
// launch_block_device_mappings (volumes die with the build instance).
func prepareBlockDevices(key string, devs []BlockDevice, launch bool) []error {
	var errs []error
	seen := map[string]bool{}
	for i := range devs {
		d := &devs[i]
		at := fmt.Sprintf("%s[%d]", key, i)
		switch {
		case d.DeviceName == "":
			errs = append(errs, fmt.Errorf("%s.device_name: required, e.g. \"/dev/sdf\"", at))
		case !deviceNamePattern.MatchString(d.DeviceName):
			errs = append(errs, fmt.Errorf("%s.device_name: %q is not a device name like /dev/sdf or /dev/xvdb", at, d.DeviceName))
		case seen[d.DeviceName]:
			errs = append(errs, fmt.Errorf("%s.device_name: %s is mapped twice", at, d.DeviceName))
		}
		seen[d.DeviceName] = true
		ebs := d.VolumeType != "" || d.VolumeSize != 0 || d.IOPS != 0 || d.Throughput != 0 || d.Encrypted != nil || d.KMSKeyID != "" || d.SnapshotID != ""
		switch {
		case d.NoDevice && (ebs || d.VirtualName != ""):
			errs = append(errs, fmt.Errorf("%s.no_device: removes the mapping; set no volume keys with it", at))
			continue
		case d.NoDevice:
			continue
		case d.VirtualName != "" && ebs:
			errs = append(errs, fmt.Errorf("%s.virtual_name: an instance store volume takes no EBS keys (volume_type, volume_size, ...)", at))
			continue
		case d.VirtualName != "":
			if !virtualNamePattern.MatchString(d.VirtualName) {
				errs = append(errs, fmt.Errorf("%s.virtual_name: must be ephemeral0 to ephemeral23, got %q", at, d.VirtualName))
			}
			continue
		}
		if d.VolumeType == "" {
			d.VolumeType = "gp3"
		}
		if !slices.Contains(volumeTypes, d.VolumeType) {
			errs = append(errs, fmt.Errorf("%s.volume_type: must be one of gp3, gp2, io1, io2, st1, sc1, standard, got %q", at, d.VolumeType))
		}
		if d.VolumeSize == 0 && d.SnapshotID == "" {
			errs = append(errs, fmt.Errorf("%s.volume_size: required without snapshot_id, in GiB", at))
		}
		if d.VolumeSize < 0 || d.VolumeSize > 65536 {
			errs = append(errs, fmt.Errorf("%s.volume_size: must be between 1 and 65536 GiB, got %d", at, d.VolumeSize))
		}
		if d.IOPS != 0 && !slices.Contains([]string{"gp3", "io1", "io2"}, d.VolumeType) {
			errs = append(errs, fmt.Errorf("%s.iops: only for gp3, io1 and io2, not %s", at, d.VolumeType))
		}
		if d.Throughput != 0 && d.VolumeType != "gp3" {
			errs = append(errs, fmt.Errorf("%s.throughput: only for gp3, not %s", at, d.VolumeType))
		}
		if d.SnapshotID != "" {
			errs = appendErr(errs, awscfg.CheckResourceID(at+".snapshot_id", "snap", d.SnapshotID))
		}
		if d.KMSKeyID != "" {
			errs = appendErr(errs, awscfg.CheckKMSKey(at+".kms_key_id", d.KMSKeyID))
			if d.Encrypted != nil && !*d.Encrypted {
				errs = append(errs, fmt.Errorf("%s.kms_key_id: needs encrypted = true", at))
			}
		}
		if launch && d.DeleteOnTermination != nil && !*d.DeleteOnTermination {
			errs = append(errs, fmt.Errorf("%s.delete_on_termination: the build instance's volumes are deleted with it, so that a failed build leaves none; map the volume in ami_block_device_mappings to keep it in the AMI", at))
		}
	}
	return errs
}

// mappings turns the list into EC2 block device mappings. EBS volumes are
// encrypted like the root volume unless they say otherwise.
func (c *RunConfig) mappings(devs []BlockDevice) []ec2types.BlockDeviceMapping {
	out := make([]ec2types.BlockDeviceMapping, 0, len(devs))
	for _, d := range devs {
		m := ec2types.BlockDeviceMapping{DeviceName: aws.String(d.DeviceName)}
		switch {
		case d.NoDevice:
			m.NoDevice = aws.String("")
		case d.VirtualName != "":
			m.VirtualName = aws.String(d.VirtualName)
		default:
			enc := c.EncryptRoot()
			if d.Encrypted != nil {
				enc = *d.Encrypted
			}
			ebs := &ec2types.EbsBlockDevice{
				VolumeType:          ec2types.VolumeType(d.VolumeType),
				Encrypted:           aws.Bool(enc),
				DeleteOnTermination: aws.Bool(d.DeleteOnTermination == nil || *d.DeleteOnTermination),
			}
			if d.VolumeSize > 0 {
				ebs.VolumeSize = aws.Int32(d.VolumeSize)
			}
			if d.IOPS > 0 {
				ebs.Iops = aws.Int32(d.IOPS)
			}
			if d.Throughput > 0 {
				ebs.Throughput = aws.Int32(d.Throughput)
			}
			if d.SnapshotID != "" {
				ebs.SnapshotId = aws.String(d.SnapshotID)
			}
			if kms := d.KMSKeyID; kms != "" {
				ebs.KmsKeyId = aws.String(kms)
			} else if enc && c.RootVolume.KMSKeyID != "" {
				ebs.KmsKeyId = aws.String(c.RootVolume.KMSKeyID)
			}
			m.Ebs = ebs
		}
		out = append(out, m)
	}
	return out
}
