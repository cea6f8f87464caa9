//go:generate packer-sdc mapstructure-to-hcl2 -type Config

// Package builder is the wsgi-ami builder: it launches a temporary
// instance from a source AMI, lets the provisioners run over SSH, makes an
// AMI of it, copies and shares that AMI, and removes everything else it made.
package builder

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mitchellh/mapstructure"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"
	"github.com/hashicorp/packer-plugin-sdk/uuid"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// Config is the whole `source "wsgi-ami"` block.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`
	awscfg.AccessConfig `mapstructure:",squash"`
	SourceConfig        `mapstructure:",squash"`
	RunConfig           `mapstructure:",squash"`
	AMIConfig           `mapstructure:",squash"`
	Comm                communicator.Config `mapstructure:",squash"`

	// buildID is written to the wsgi:build-id tag of everything the build
	// makes, so cleanups find what an interrupted call created.
	buildID string
	ctx     interpolate.Context
}

// Prepare decodes raws into c and validates every block; all errors are
// returned together.
func (c *Config) Prepare(raws ...interface{}) ([]string, error) {
	var md mapstructure.Metadata
	err := config.Decode(c, &config.DecodeOpts{
		Metadata:           &md,
		PluginType:         BuilderID,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter: &interpolate.RenderFilter{
			// Rendered per region at build time, with the source AMI known.
			Exclude: []string{"ami_description", "tags", "snapshot_tags", "run_tags"},
		},
	}, raws...)
	if err != nil {
		return nil, fmt.Errorf("decoding the wsgi-ami configuration: %w", err)
	}
	c.buildID = uuid.TimeOrderedUUID()
	if c.AMIFamily == "" {
		c.AMIFamily = c.PackerBuildName
	}
	if c.AMIFamily == "" {
		c.AMIFamily = c.AMIName
	}

	var errs *packersdk.MultiError
	errs = packersdk.MultiErrorAppend(errs, c.AccessConfig.CheckExplicitZero(md.Keys)...)
	errs = packersdk.MultiErrorAppend(errs, c.AccessConfig.Prepare()...)
	errs = packersdk.MultiErrorAppend(errs, c.SourceConfig.Prepare()...)
	errs = packersdk.MultiErrorAppend(errs, c.RunConfig.Prepare()...)
	errs = packersdk.MultiErrorAppend(errs, c.AMIConfig.Prepare(c.Region, time.Now())...)
	if c.Comm.Type == "" {
		c.Comm.Type = "ssh"
	}
	errs = packersdk.MultiErrorAppend(errs, c.Comm.Prepare(&c.ctx)...)
	if c.Comm.Type == "winrm" {
		errs = packersdk.MultiErrorAppend(errs, errors.New("communicator: winrm is not supported; use \"ssh\" or \"none\""))
	}
	// The temporary key is always an ed25519 pair named from the build id
	// (its cleanup finds it by that name); amazon-ebs's knobs would be
	// ignored, so they are refused.
	if c.Comm.SSHTemporaryKeyPairName != "" {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("temporary_key_pair_name: not supported: the temporary key pair is named packer_wsgi_<build id>, which its cleanup looks for; remove it (got %q)", c.Comm.SSHTemporaryKeyPairName))
	}
	if t := c.Comm.SSHTemporaryKeyPairType; t != "" && t != "ed25519" {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("temporary_key_pair_type: the temporary key is always \"ed25519\", got %q; remove it", t))
	}
	if c.Comm.SSHTemporaryKeyPairBits != 0 {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("temporary_key_pair_bits: an ed25519 key has no size to choose, got %d; remove it", c.Comm.SSHTemporaryKeyPairBits))
	}
	if c.Comm.Type == "ssh" && c.Comm.SSHUsername == "" {
		errs = packersdk.MultiErrorAppend(errs, errors.New("ssh_username: required with the ssh communicator, e.g. \"admin\" for Debian"))
	}
	if c.Comm.SSHKeyPairName != "" && c.Comm.SSHPrivateKeyFile == "" && !c.Comm.SSHAgentAuth {
		errs = packersdk.MultiErrorAppend(errs, errors.New("ssh_keypair_name: needs ssh_private_key_file or ssh_agent_auth"))
	}
	if c.SSHInterface == "session_manager" {
		if c.Comm.Type != "ssh" {
			errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("ssh_interface: \"session_manager\" tunnels SSH; it needs communicator = \"ssh\", got %q", c.Comm.Type))
		}
		if c.Comm.SSHHost != "" {
			errs = packersdk.MultiErrorAppend(errs, errors.New("ssh_host: not used with ssh_interface = \"session_manager\" (SSH goes to 127.0.0.1 through the tunnel); remove one"))
		}
		if c.Comm.SSHBastionHost != "" {
			errs = packersdk.MultiErrorAppend(errs, errors.New("ssh_bastion_host: not used with ssh_interface = \"session_manager\" (the tunnel replaces a bastion); remove one"))
		}
	}
	errs = packersdk.MultiErrorAppend(errs, c.sharingErrors()...)
	if errs != nil && len(errs.Errors) > 0 {
		return nil, errs
	}
	return c.warnings(), nil
}

// sharingErrors refuses to share an AMI that the accounts it is shared with
// could not launch: one encrypted with the account's default EBS key
// (aws/ebs), whose key policy cannot be changed to let other accounts use
// it. That is the default (root_volume.encrypted = true, no kms_key_id),
// and a region copy without region_kms_key_ids gets that region's default
// key. amazon-ebs lets such a build succeed and the launch fail elsewhere.
func (c *Config) sharingErrors() []error {
	if !c.EncryptRoot() {
		return nil
	}
	var errs []error
	for _, pub := range []struct {
		key    string
		groups []string
	}{{"ami_groups", c.AMIGroups}, {"snapshot_groups", c.SnapshotGroups}} {
		if len(pub.groups) > 0 {
			errs = append(errs, fmt.Errorf("%s: a public AMI or snapshot cannot be encrypted; set root_volume.encrypted = false, or share with accounts (ami_users, snapshot_users) and a customer managed key instead", pub.key))
		}
	}
	key := ""
	switch {
	case len(c.AMIUsers) > 0:
		key = "ami_users"
	case len(c.AMIOrgARNs) > 0:
		key = "ami_org_arns"
	case len(c.AMIOUARNs) > 0:
		key = "ami_ou_arns"
	case len(c.SnapshotUsers) > 0:
		key = "snapshot_users"
	}
	if key == "" {
		return errs
	}
	isDefault := func(k string) bool { return k == "" || strings.HasSuffix(k, "alias/aws/ebs") }
	if isDefault(c.RootVolume.KMSKeyID) {
		errs = append(errs, fmt.Errorf("%s: the AMI would be encrypted with the account's default EBS key (aws/ebs), which other accounts cannot use, so they could not launch it; "+
			"set root_volume.kms_key_id to a customer managed key whose key policy lets them use it (kms:Decrypt, kms:DescribeKey, kms:CreateGrant, kms:ReEncrypt*, kms:GenerateDataKeyWithoutPlaintext), or root_volume.encrypted = false", key))
	}
	for _, r := range c.AMIRegions {
		if isDefault(c.RegionKMSKeyIDs[r]) {
			errs = append(errs, fmt.Errorf("region_kms_key_ids: the copy in %s would be encrypted with that region's default EBS key, which the accounts in %s cannot use; give %s a customer managed key they may use, e.g. region_kms_key_ids = { %q = \"alias/shared-ami\" }", r, key, r, r))
		}
	}
	return errs
}

func (c *Config) warnings() []string {
	var w []string
	for _, cidr := range c.SSHCIDRs {
		if cidr == "0.0.0.0/0" || cidr == "::/0" {
			w = append(w, fmt.Sprintf("ssh_cidrs: %s opens SSH on the build instance to the whole internet", cidr))
		}
	}
	if !c.EncryptRoot() {
		w = append(w, "root_volume.encrypted: false makes an unencrypted AMI")
	}
	return w
}

// needTempKey says whether the build makes and imports a temporary key pair.
func (c *Config) needTempKey() bool {
	return c.Comm.Type == "ssh" && c.Comm.SSHPrivateKeyFile == "" && !c.Comm.SSHAgentAuth && c.Comm.SSHKeyPairName == ""
}

// needTempSecurityGroup says whether the build makes a security group.
func (c *Config) needTempSecurityGroup() bool {
	return c.Comm.Type == "ssh" && len(c.SecurityGroupIDs) == 0 && c.SecurityGroupFilter == nil
}

// sessionManager says whether SSH goes through an SSM session.
func (c *Config) sessionManager() bool {
	return c.Comm.Type == "ssh" && c.SSHInterface == "session_manager"
}

// allRegions is the build region followed by the copy regions.
func (c *Config) allRegions(buildRegion string) []string {
	return append([]string{buildRegion}, c.AMIRegions...)
}

// BuilderID identifies this builder's artifacts.
const BuilderID = "wsgi-ami.builder"

// ssmEndpoint is the SSM endpoint session-manager-plugin is given, as the
// AWS CLI gives it: custom_endpoint_ssm, else the region's.
func (c *Config) ssmEndpoint(region string) string {
	if c.CustomEndpointSSM != "" {
		return c.CustomEndpointSSM
	}
	return "https://ssm." + region + ".amazonaws.com"
}
