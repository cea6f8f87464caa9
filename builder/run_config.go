//go:generate packer-sdc mapstructure-to-hcl2 -type RunConfig,SubnetFilter,RootVolume,MetadataOptions,BlockDevice,ResourceFilter

package builder

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// prepareSpot checks spot_price and spot_instance_types.
func (c *RunConfig) prepareSpot() []error {
	var errs []error
	if c.SpotPrice != "" && c.SpotPrice != "auto" {
		if p, err := strconv.ParseFloat(c.SpotPrice, 64); err != nil || p <= 0 || math.IsInf(p, 0) {
			errs = append(errs, fmt.Errorf("spot_price: must be \"auto\" or a price in USD per hour like \"0.05\", got %q", c.SpotPrice))
		}
	}
	if len(c.SpotInstanceTypes) > 0 && c.SpotPrice == "" {
		errs = append(errs, fmt.Errorf("spot_instance_types: needs spot_price (\"auto\" for up to the On-Demand price)"))
	}
	if len(c.SpotInstanceTypes) > 0 && (c.InstanceType != "" || len(c.FallbackInstanceTypes) > 0) {
		errs = append(errs, fmt.Errorf("spot_instance_types: replaces instance_type and fallback_instance_types; set one or the others"))
	}
	seen := map[string]bool{}
	for _, t := range c.SpotInstanceTypes {
		if t == "" || seen[t] {
			errs = append(errs, fmt.Errorf("spot_instance_types: %q is empty or listed twice", t))
		} else {
			errs = appendErr(errs, awscfg.CheckInstanceType("spot_instance_types", t))
		}
		seen[t] = true
	}
	return errs
}

// prepare fills the defaults (IMDSv2 required, hop limit 1) and checks the block.
func (m *MetadataOptions) prepare() []error {
	var errs []error
	oneOf := func(key string, v *string, def string, allowed ...string) {
		if *v == "" {
			*v = def
		}
		if !slices.Contains(allowed, *v) {
			errs = append(errs, fmt.Errorf("metadata_options.%s: must be %s, got %q", key, strings.Join(quoteAll(allowed), " or "), *v))
		}
	}
	oneOf("http_endpoint", &m.HTTPEndpoint, "enabled", "enabled", "disabled")
	oneOf("http_tokens", &m.HTTPTokens, "required", "required", "optional")
	oneOf("instance_metadata_tags", &m.InstanceMetadataTags, "disabled", "enabled", "disabled")
	if m.HTTPPutResponseHopLimit == 0 {
		m.HTTPPutResponseHopLimit = 1
	}
	if m.HTTPPutResponseHopLimit < 1 || m.HTTPPutResponseHopLimit > 64 {
		errs = append(errs, fmt.Errorf("metadata_options.http_put_response_hop_limit: must be between 1 and 64, got %d", m.HTTPPutResponseHopLimit))
	}
	return errs
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strconv.Quote(v)
	}
	return out
}

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
	// Of several matches, take one at random instead of failing (spreads
	// builds over zones). Not with most_free.
	Random bool `mapstructure:"random" required:"false"`
}

// ResourceFilter selects EC2 resources by Describe filters (vpc_filter,
// security_group_filter).
type ResourceFilter struct {
	// Describe filters, e.g. `"tag:Name" = "build"` or `"is-default" = "false"`.
	Filters map[string]string `mapstructure:"filters" required:"true"`
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

// BlockDevice is one entry of launch_block_device_mappings or
// ami_block_device_mappings, with amazon-ebs's keys: an EBS volume, an
// instance store volume (virtual_name) or a mapping removed (no_device).
type BlockDevice struct {
	// Device name, e.g. `/dev/sdf` or `/dev/xvdb`. Required; not the root
	// device (that is root_volume).
	DeviceName string `mapstructure:"device_name" required:"true"`
	// EBS volume type. Defaults to `gp3`.
	VolumeType string `mapstructure:"volume_type" required:"false"`
	// Size in GiB. Required for an EBS volume without snapshot_id.
	VolumeSize int32 `mapstructure:"volume_size" required:"false"`
	// Provisioned IOPS (gp3, io1, io2).
	IOPS int32 `mapstructure:"iops" required:"false"`
	// Throughput in MiB/s (gp3).
	Throughput int32 `mapstructure:"throughput" required:"false"`
	// Encrypt the volume. Defaults to root_volume.encrypted.
	Encrypted *bool `mapstructure:"encrypted" required:"false"`
	// KMS key for the encryption. Defaults to root_volume.kms_key_id, so a
	// shared AMI's extra volumes use the key its users may use.
	KMSKeyID string `mapstructure:"kms_key_id" required:"false"`
	// Snapshot to create the volume from, e.g. `snap-0123456789abcdef0`.
	SnapshotID string `mapstructure:"snapshot_id" required:"false"`
	// Delete the volume when the instance terminates. Defaults to true; in
	// launch_block_device_mappings only true is accepted, so that no
	// volume of the build instance outlives it.
	DeleteOnTermination *bool `mapstructure:"delete_on_termination" required:"false"`
	// Instance store volume, e.g. `ephemeral0`, instead of an EBS volume.
	VirtualName string `mapstructure:"virtual_name" required:"false"`
	// Remove the source AMI's mapping of this device.
	NoDevice bool `mapstructure:"no_device" required:"false"`
}

// MetadataOptions is the build instance's instance metadata service, as
// amazon-ebs's metadata_options, with IMDSv2 required by default.
type MetadataOptions struct {
	// `enabled` (default) or `disabled`. Disabled, cloud-init cannot read
	// the SSH key or the user data.
	HTTPEndpoint string `mapstructure:"http_endpoint" required:"false"`
	// `required` (default: IMDSv2 only) or `optional` (IMDSv1 too).
	HTTPTokens string `mapstructure:"http_tokens" required:"false"`
	// How many network hops a metadata response may travel, 1 to 64.
	// Defaults to 1; 2 lets containers on the build instance reach it.
	HTTPPutResponseHopLimit int32 `mapstructure:"http_put_response_hop_limit" required:"false"`
	// `enabled` or `disabled` (default): the instance's tags in the metadata.
	InstanceMetadataTags string `mapstructure:"instance_metadata_tags" required:"false"`
}

// RunConfig is the temporary build instance.
type RunConfig struct {
	// Instance type of the build instance, e.g. `t3.small`. Required unless
	// spot_instance_types is set.
	InstanceType string `mapstructure:"instance_type" required:"true"`
	// Instance types to try in order when `instance_type` has no capacity
	// (InsufficientInstanceCapacity).
	FallbackInstanceTypes []string `mapstructure:"fallback_instance_types" required:"false"`
	// Maximum hourly price of a Spot build instance, e.g. `0.05`, or `auto`
	// for up to the On-Demand price. Unset: On-Demand. A one-time Spot
	// instance cannot be stopped, so it is imaged running: CreateImage
	// reboots it for a consistent file system, and ena_support is left as
	// the source AMI has it.
	SpotPrice string `mapstructure:"spot_price" required:"false"`
	// Instance types to try in order for the Spot instance, instead of
	// instance_type and fallback_instance_types; the next one is tried when
	// one has no Spot capacity or its price is above spot_price. Needs
	// spot_price.
	SpotInstanceTypes []string `mapstructure:"spot_instance_types" required:"false"`
	// Give the build instance a public IPv4 address (true) or none (false),
	// whatever the subnet's default. Unset: the subnet decides.
	AssociatePublicIPAddress *bool `mapstructure:"associate_public_ip_address" required:"false"`
	// Instance metadata options of the build instance.
	MetadataOptions MetadataOptions `mapstructure:"metadata_options" required:"false"`
	// Subnet to launch in. Without subnet_id and subnet_filter, the default
	// VPC's default subnet of an availability zone AWS picks.
	SubnetID string `mapstructure:"subnet_id" required:"false"`
	// Find the subnet with DescribeSubnets.
	SubnetFilter *SubnetFilter `mapstructure:"subnet_filter" required:"false"`
	// VPC for the temporary security group. Defaults to the subnet's VPC,
	// else the default VPC.
	VpcID string `mapstructure:"vpc_id" required:"false"`
	// Find vpc_id with DescribeVpcs (amazon-ebs's key); exactly one VPC
	// must match.
	VpcFilter *ResourceFilter `mapstructure:"vpc_filter" required:"false"`
	// Existing security groups. When set, no temporary group is made and
	// they must let the communicator in.
	SecurityGroupIDs []string `mapstructure:"security_group_ids" required:"false"`
	// Find security_group_ids with DescribeSecurityGroups (amazon-ebs's
	// key), in the build's VPC when it is known; every match is used, and
	// at least one must match.
	SecurityGroupFilter *ResourceFilter `mapstructure:"security_group_filter" required:"false"`
	// CIDRs the temporary security group opens the SSH port to. Defaults
	// to this machine's public address (/32) as answered by checkip_url.
	// 0.0.0.0/0 is accepted only when written here.
	SSHCIDRs []string `mapstructure:"ssh_cidrs" required:"false"`
	// URL that answers with this machine's public IPv4 address. Defaults to
	// `https://checkip.amazonaws.com`.
	CheckIPURL string `mapstructure:"checkip_url" required:"false"`
	// How the communicator reaches the instance (amazon-ebs's key):
	// `public_ip`, `private_ip`, `public_dns`, `private_dns`, or
	// `session_manager`. Defaults to the public address when the instance
	// has one, else the private one. `session_manager` needs no inbound
	// port: the builder starts an SSM port-forwarding session
	// (AWS-StartPortForwardingSession to the SSH port) and runs AWS's
	// `session-manager-plugin`, which must be on PATH, so that SSH goes to
	// 127.0.0.1 on a local port; the instance needs iam_instance_profile
	// with the AmazonSSMManagedInstanceCore permissions and a running SSM
	// agent. The session is terminated and the plugin stopped in cleanup.
	SSHInterface string `mapstructure:"ssh_interface" required:"false"`
	// With `ssh_interface = "session_manager"`: the time to wait after the
	// instance is running before the session is started (amazon-ebs's key),
	// e.g. `30s` for an agent that registers late. Defaults to 0: the start
	// is retried while SSM answers TargetNotConnected, until
	// aws_polling.timeout.
	PauseBeforeSSM time.Duration `mapstructure:"pause_before_ssm" required:"false"`
	// With `ssh_interface = "session_manager"`: the local port of the
	// tunnel (amazon-ebs's key). Defaults to a free port chosen at build
	// time.
	SessionManagerPort int `mapstructure:"session_manager_port" required:"false"`
	// IAM instance profile name for the build instance. Required with
	// `ssh_interface = "session_manager"`.
	IAMInstanceProfile string `mapstructure:"iam_instance_profile" required:"false"`
	// Root volume settings.
	RootVolume RootVolume `mapstructure:"root_volume" required:"false"`
	// More volumes of the build instance (amazon-ebs's key): extra EBS
	// volumes, instance store volumes, or source mappings removed. They go
	// into the AMI as the instance has them.
	LaunchBlockDevices []BlockDevice `mapstructure:"launch_block_device_mappings" required:"false"`
	// Volumes the AMI maps besides the instance's (amazon-ebs's key): an
	// instance of the AMI gets them; they are not on the build instance.
	AMIBlockDevices []BlockDevice `mapstructure:"ami_block_device_mappings" required:"false"`
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

// InstanceTypes are the types tried in order: spot_instance_types, else
// instance_type followed by the fallbacks.
func (c *RunConfig) InstanceTypes() []string {
	if len(c.SpotInstanceTypes) > 0 {
		return slices.Clone(c.SpotInstanceTypes)
	}
	return append([]string{c.InstanceType}, c.FallbackInstanceTypes...)
}

// Spot reports whether the build instance is a Spot instance.
func (c *RunConfig) Spot() bool { return c.SpotPrice != "" }

// Prepare fills defaults and validates the block.
func (c *RunConfig) Prepare() []error {
	var errs []error
	if c.InstanceType == "" && len(c.SpotInstanceTypes) == 0 {
		errs = append(errs, fmt.Errorf("instance_type: required, e.g. \"t3.small\""))
	}
	errs = append(errs, c.prepareSpot()...)
	errs = append(errs, c.MetadataOptions.prepare()...)
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
	if c.SubnetFilter != nil && c.SubnetFilter.MostFree && c.SubnetFilter.Random {
		errs = append(errs, fmt.Errorf("subnet_filter.random: set most_free or random, not both"))
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
	for _, f := range []struct {
		key    string
		filter *ResourceFilter
		other  bool
		with   string
	}{{"vpc_filter", c.VpcFilter, c.VpcID != "", "vpc_id"}, {"security_group_filter", c.SecurityGroupFilter, len(c.SecurityGroupIDs) > 0, "security_group_ids"}} {
		if f.filter == nil {
			continue
		}
		if len(f.filter.Filters) == 0 {
			errs = append(errs, fmt.Errorf("%s.filters: must have at least one filter, e.g. \"tag:Name\" = \"build\"", f.key))
		}
		if f.other {
			errs = append(errs, fmt.Errorf("%s: set %s or %s, not both", f.key, f.with, f.key))
		}
	}
	if c.SecurityGroupFilter != nil && len(c.SSHCIDRs) > 0 {
		errs = append(errs, fmt.Errorf("ssh_cidrs: only used for the temporary security group; remove it or security_group_filter"))
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
	case "", "public_ip", "private_ip", "public_dns", "private_dns", "session_manager":
	default:
		errs = append(errs, fmt.Errorf("ssh_interface: must be one of public_ip, private_ip, public_dns, private_dns, session_manager, got %q", c.SSHInterface))
	}
	if c.SSHInterface == "session_manager" {
		if c.IAMInstanceProfile == "" {
			errs = append(errs, fmt.Errorf("iam_instance_profile: required with ssh_interface = \"session_manager\": the SSM agent on the instance needs a profile whose role has the AmazonSSMManagedInstanceCore policy"))
		}
		if c.SessionManagerPort < 0 || c.SessionManagerPort > 65535 {
			errs = append(errs, fmt.Errorf("session_manager_port: must be between 1 and 65535 (or unset for a free port), got %d", c.SessionManagerPort))
		}
		if c.PauseBeforeSSM < 0 {
			errs = append(errs, fmt.Errorf("pause_before_ssm: must not be negative, got %s", c.PauseBeforeSSM))
		}
		if len(c.SSHCIDRs) > 0 {
			errs = append(errs, fmt.Errorf("ssh_cidrs: not used with ssh_interface = \"session_manager\" (no inbound rule is made); remove it"))
		}
	} else {
		if c.SessionManagerPort != 0 {
			errs = append(errs, fmt.Errorf("session_manager_port: only used with ssh_interface = \"session_manager\"; remove it or set ssh_interface"))
		}
		if c.PauseBeforeSSM != 0 {
			errs = append(errs, fmt.Errorf("pause_before_ssm: only used with ssh_interface = \"session_manager\"; remove it or set ssh_interface"))
		}
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
	errs = append(errs, prepareBlockDevices("launch_block_device_mappings", c.LaunchBlockDevices, true)...)
	errs = append(errs, prepareBlockDevices("ami_block_device_mappings", c.AMIBlockDevices, false)...)
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
