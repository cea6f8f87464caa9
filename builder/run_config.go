//go:generate packer-sdc mapstructure-to-hcl2 -type RunConfig,SubnetFilter,RootVolume

package builder

import (
	"fmt"
	"net"
	"net/url"
	"os"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// appendErr appends err when it is not nil.
func appendErr(errs []error, err error) []error {
	if err != nil {
		return append(errs, err)
	}
	return errs
}

// DefaultCheckIPURL answers with the caller's public address; used for the
// default of ssh_cidrs.
const DefaultCheckIPURL = "https://checkip.amazonaws.com"

// SubnetFilter selects the subnet by DescribeSubnets filters.
type SubnetFilter struct {
	// DescribeSubnets filters, e.g. `"tag:Tier" = "build"`.
	Filters map[string]string `mapstructure:"filters" required:"true"`
	// Of several matches, take the one with the most free addresses
	// instead of failing.
	MostFree bool `mapstructure:"most_free" required:"false"`
}

// RootVolume is the build instance's root volume, and so the AMI's.
type RootVolume struct {
	// Size in GiB. Defaults to the source AMI's root snapshot size.
	Size int32 `mapstructure:"size" required:"false"`
	// Volume type. Defaults to `gp3`.
	Type string `mapstructure:"type" required:"false"`
	// Provisioned IOPS (gp3, io1, io2).
	IOPS int32 `mapstructure:"iops" required:"false"`
	// Throughput in MiB/s (gp3).
	Throughput int32 `mapstructure:"throughput" required:"false"`
	// Encrypt the volume and so the AMI's snapshot. Defaults to true.
	Encrypted *bool `mapstructure:"encrypted" required:"false"`
	// KMS key for the encryption. Defaults to the account's EBS default key.
	KMSKeyID string `mapstructure:"kms_key_id" required:"false"`
}

// RunConfig is the temporary build instance.
type RunConfig struct {
	// Instance type of the build instance, e.g. `t3.small`.
	InstanceType string `mapstructure:"instance_type" required:"true"`
	// Instance types to try in order when `instance_type` has no capacity
	// (InsufficientInstanceCapacity).
	FallbackInstanceTypes []string `mapstructure:"fallback_instance_types" required:"false"`
	// Subnet to launch in. Without subnet_id and subnet_filter, the default
	// VPC's default subnet of an availability zone AWS picks.
	SubnetID string `mapstructure:"subnet_id" required:"false"`
	// Find the subnet with DescribeSubnets.
	SubnetFilter *SubnetFilter `mapstructure:"subnet_filter" required:"false"`
	// VPC for the temporary security group. Defaults to the subnet's VPC,
	// else the default VPC.
	VpcID string `mapstructure:"vpc_id" required:"false"`
	// Existing security groups. When set, no temporary group is made and
	// they must let the communicator in.
	SecurityGroupIDs []string `mapstructure:"security_group_ids" required:"false"`
	// CIDRs the temporary security group opens the SSH port to. Defaults
	// to this machine's public address (/32) as answered by checkip_url.
	// 0.0.0.0/0 is accepted only when written here.
	SSHCIDRs []string `mapstructure:"ssh_cidrs" required:"false"`
	// URL that answers with this machine's public IPv4 address. Defaults to
	// `https://checkip.amazonaws.com`.
	CheckIPURL string `mapstructure:"checkip_url" required:"false"`
	// Connect to `public_ip` or `private_ip`. Defaults to the public address
	// when the instance has one.
	SSHInterface string `mapstructure:"ssh_interface" required:"false"`
	// IAM instance profile name for the build instance.
	IAMInstanceProfile string `mapstructure:"iam_instance_profile" required:"false"`
	// Root volume settings.
	RootVolume RootVolume `mapstructure:"root_volume" required:"false"`
	// Tags for the build instance and its volumes.
	RunTags map[string]string `mapstructure:"run_tags" required:"false"`
	// User data for the build instance (not for the AMI's instances).
	UserData string `mapstructure:"user_data" required:"false"`
	// File with user data for the build instance.
	UserDataFile string `mapstructure:"user_data_file" required:"false"`
	// Do not wait for `cloud-init status --wait` before the provisioners.
	SkipCloudInitWait bool `mapstructure:"skip_cloud_init_wait" required:"false"`
}

// EncryptRoot reports whether the root volume is encrypted (default true).
func (c *RunConfig) EncryptRoot() bool {
	return c.RootVolume.Encrypted == nil || *c.RootVolume.Encrypted
}

// InstanceTypes is instance_type followed by the fallbacks.
func (c *RunConfig) InstanceTypes() []string {
	return append([]string{c.InstanceType}, c.FallbackInstanceTypes...)
}

// Prepare fills defaults and validates the block.
func (c *RunConfig) Prepare() []error {
	var errs []error
	if c.InstanceType == "" {
		errs = append(errs, fmt.Errorf("instance_type: required, e.g. \"t3.small\""))
	}
	if c.InstanceType != "" {
		errs = appendErr(errs, awscfg.CheckInstanceType("instance_type", c.InstanceType))
	}
	seen := map[string]bool{c.InstanceType: true}
	for _, t := range c.FallbackInstanceTypes {
		if t == "" || seen[t] {
			errs = append(errs, fmt.Errorf("fallback_instance_types: %q is empty or listed twice", t))
		} else {
			errs = appendErr(errs, awscfg.CheckInstanceType("fallback_instance_types", t))
		}
		seen[t] = true
	}
	if c.SubnetID != "" && c.SubnetFilter != nil {
		errs = append(errs, fmt.Errorf("subnet_id: set subnet_id or subnet_filter, not both"))
	}
	if c.SubnetFilter != nil && len(c.SubnetFilter.Filters) == 0 {
		errs = append(errs, fmt.Errorf("subnet_filter.filters: must have at least one filter"))
	}
	if c.SubnetID != "" {
		errs = appendErr(errs, awscfg.CheckResourceID("subnet_id", "subnet", c.SubnetID))
	}
	if c.VpcID != "" {
		errs = appendErr(errs, awscfg.CheckResourceID("vpc_id", "vpc", c.VpcID))
	}
	for _, id := range c.SecurityGroupIDs {
		errs = appendErr(errs, awscfg.CheckResourceID("security_group_ids", "sg", id))
	}
	if len(c.SecurityGroupIDs) > 0 && len(c.SSHCIDRs) > 0 {
		errs = append(errs, fmt.Errorf("ssh_cidrs: only used for the temporary security group; remove it or security_group_ids"))
	}
	for _, cidr := range c.SSHCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			errs = append(errs, fmt.Errorf("ssh_cidrs: %q is not a CIDR like 203.0.113.7/32", cidr))
		}
	}
	if c.CheckIPURL == "" {
		c.CheckIPURL = DefaultCheckIPURL
	}
	if u, err := url.Parse(c.CheckIPURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("checkip_url: must be an http(s) URL, got %q", c.CheckIPURL))
	}
	switch c.SSHInterface {
	case "", "public_ip", "private_ip":
	default:
		errs = append(errs, fmt.Errorf("ssh_interface: must be \"public_ip\" or \"private_ip\", got %q", c.SSHInterface))
	}
	rv := &c.RootVolume
	if rv.Type == "" {
		rv.Type = "gp3"
	}
	switch rv.Type {
	case "gp2", "gp3", "io1", "io2", "st1", "sc1", "standard":
	default:
		errs = append(errs, fmt.Errorf("root_volume.type: must be one of gp3, gp2, io1, io2, st1, sc1, standard, got %q", rv.Type))
	}
	if rv.Size < 0 || rv.Size > 16384 {
		errs = append(errs, fmt.Errorf("root_volume.size: must be between 1 and 16384 GiB, got %d", rv.Size))
	}
	if rv.IOPS != 0 && rv.Type != "gp3" && rv.Type != "io1" && rv.Type != "io2" {
		errs = append(errs, fmt.Errorf("root_volume.iops: only for gp3, io1 and io2, not %s", rv.Type))
	}
	if rv.Throughput != 0 && rv.Type != "gp3" {
		errs = append(errs, fmt.Errorf("root_volume.throughput: only for gp3, not %s", rv.Type))
	}
	if rv.KMSKeyID != "" && !c.EncryptRoot() {
		errs = append(errs, fmt.Errorf("root_volume.kms_key_id: needs root_volume.encrypted = true"))
	}
	if rv.KMSKeyID != "" {
		errs = appendErr(errs, awscfg.CheckKMSKey("root_volume.kms_key_id", rv.KMSKeyID))
	}
	errs = append(errs, reservedTagKeys("run_tags", c.RunTags)...)
	if c.UserData != "" && c.UserDataFile != "" {
		errs = append(errs, fmt.Errorf("user_data: set user_data or user_data_file, not both"))
	}
	if c.UserDataFile != "" {
		if _, err := os.Stat(c.UserDataFile); err != nil {
			errs = append(errs, fmt.Errorf("user_data_file: %w", err))
		}
	}
	return errs
}
