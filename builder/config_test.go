package builder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid configuration.
func minimal() map[string]interface{} {
	return map[string]interface{}{
		"packer_build_name": "web",
		"region":            "eu-west-1",
		"source_ami":        "ami-0123456789abcdef0",
		"instance_type":     "t3.small",
		"ami_name":          "wsgi-app-{{timestamp}}",
		"ssh_username":      "admin",
	}
}

func TestPrepareDefaults(t *testing.T) {
	var c Config
	warns, err := c.Prepare(minimal())
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	checks := []struct {
		name      string
		got, want interface{}
	}{
		{"ami_name rendered", strings.HasPrefix(c.AMIName, "wsgi-app-") && !strings.Contains(c.AMIName, "{{"), true},
		{"communicator", c.Comm.Type, "ssh"},
		{"imds_support", c.IMDSSupport, "v2.0"},
		{"ena_support", c.ENA(), true},
		{"root_volume.type", c.RootVolume.Type, "gp3"},
		{"root_volume.encrypted", c.EncryptRoot(), true},
		{"ami_family", c.AMIFamily, "web"},
		{"checkip_url", c.CheckIPURL, DefaultCheckIPURL},
		{"max_retries", c.MaxRetries, 10},
		{"temporary key", c.needTempKey(), true},
		{"temporary group", c.needTempSecurityGroup(), true},
		{"build id set", len(c.buildID) == 36, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestPrepareErrors(t *testing.T) {
	userData := filepath.Join(t.TempDir(), "ud")
	if err := os.WriteFile(userData, []byte("#cloud-config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  map[string]interface{}
		del  []string
		want string
	}{
		{name: "no source", del: []string{"source_ami"}, want: "source_ami: set source_ami or source_ami_filter"},
		{name: "both sources", set: map[string]interface{}{"source_ami_filter": map[string]interface{}{"filters": map[string]string{"name": "x"}, "owners": []string{"amazon"}}},
			want: "source_ami: set source_ami or source_ami_filter, not both"},
		{name: "bad ami id", set: map[string]interface{}{"source_ami": "debian"}, want: `source_ami: must be an AMI id like ami-0123456789abcdef0 or resolve:ssm:/PARAMETER, got "debian"`},
		{name: "relative ssm", set: map[string]interface{}{"source_ami": "resolve:ssm:aws/x"}, want: "source_ami: the SSM parameter must be an absolute name"},
		{name: "filter without owners", del: []string{"source_ami"}, set: map[string]interface{}{"source_ami_filter": map[string]interface{}{"filters": map[string]string{"name": "x"}}},
			want: "source_ami_filter.owners: required"},
		{name: "filter without filters", del: []string{"source_ami"}, set: map[string]interface{}{"source_ami_filter": map[string]interface{}{"owners": []string{"amazon"}}},
			want: "source_ami_filter.filters: must have at least one filter"},
		{name: "no instance type", del: []string{"instance_type"}, want: `instance_type: required, e.g. "t3.small"`},
		{name: "duplicate fallback", set: map[string]interface{}{"fallback_instance_types": []string{"t3.small"}}, want: `fallback_instance_types: "t3.small" is empty or listed twice`},
		{name: "subnet both", set: map[string]interface{}{"subnet_id": "subnet-1234", "subnet_filter": map[string]interface{}{"filters": map[string]string{"tag:A": "b"}}},
			want: "subnet_id: set subnet_id or subnet_filter, not both"},
		{name: "bad cidr", set: map[string]interface{}{"ssh_cidrs": []string{"10.0.0.1"}}, want: `ssh_cidrs: "10.0.0.1" is not a CIDR like 203.0.113.7/32`},
		{name: "cidrs with groups", set: map[string]interface{}{"ssh_cidrs": []string{"10.0.0.1/32"}, "security_group_ids": []string{"sg-12345678"}},
			want: "ssh_cidrs: only used for the temporary security group"},
		{name: "bad interface", set: map[string]interface{}{"ssh_interface": "ipv6"}, want: `ssh_interface: must be one of public_ip, private_ip, public_dns, private_dns, session_manager, got "ipv6"`},
		{name: "ssm without profile", set: map[string]interface{}{"ssh_interface": "session_manager"},
			want: `iam_instance_profile: required with ssh_interface = "session_manager": the SSM agent on the instance needs a profile whose role has the AmazonSSMManagedInstanceCore policy`},
		{name: "ssm port range", set: map[string]interface{}{"ssh_interface": "session_manager", "iam_instance_profile": "ssm", "session_manager_port": 70000},
			want: "session_manager_port: must be between 1 and 65535 (or unset for a free port), got 70000"},
		{name: "ssm negative pause", set: map[string]interface{}{"ssh_interface": "session_manager", "iam_instance_profile": "ssm", "pause_before_ssm": "-5s"},
			want: "pause_before_ssm: must not be negative, got -5s"},
		{name: "ssm with cidrs", set: map[string]interface{}{"ssh_interface": "session_manager", "iam_instance_profile": "ssm", "ssh_cidrs": []string{"10.0.0.1/32"}},
			want: `ssh_cidrs: not used with ssh_interface = "session_manager" (no inbound rule is made); remove it`},
		{name: "ssm with ssh_host", set: map[string]interface{}{"ssh_interface": "session_manager", "iam_instance_profile": "ssm", "ssh_host": "10.0.0.5"},
			want: `ssh_host: not used with ssh_interface = "session_manager" (SSH goes to 127.0.0.1 through the tunnel); remove one`},
		{name: "ssm without ssh", set: map[string]interface{}{"ssh_interface": "session_manager", "iam_instance_profile": "ssm", "communicator": "none"},
			want: `ssh_interface: "session_manager" tunnels SSH; it needs communicator = "ssh", got "none"`},
		{name: "port without ssm", set: map[string]interface{}{"session_manager_port": 8022},
			want: `session_manager_port: only used with ssh_interface = "session_manager"; remove it or set ssh_interface`},
		{name: "pause without ssm", set: map[string]interface{}{"ssh_interface": "private_dns", "pause_before_ssm": "10s"},
			want: `pause_before_ssm: only used with ssh_interface = "session_manager"; remove it or set ssh_interface`},
		{name: "bad volume type", set: map[string]interface{}{"root_volume": map[string]interface{}{"type": "gp4"}}, want: `root_volume.type: must be one of gp3`},
		{name: "throughput on gp2", set: map[string]interface{}{"root_volume": map[string]interface{}{"type": "gp2", "throughput": 200}}, want: "root_volume.throughput: only for gp3, not gp2"},
		{name: "kms unencrypted", set: map[string]interface{}{"root_volume": map[string]interface{}{"encrypted": false, "kms_key_id": "alias/x"}}, want: "root_volume.kms_key_id: needs root_volume.encrypted = true"},
		{name: "user data twice", set: map[string]interface{}{"user_data": "x", "user_data_file": userData}, want: "user_data: set user_data or user_data_file, not both"},
		{name: "user data file missing", set: map[string]interface{}{"user_data_file": "/nonexistent/ud"}, want: "user_data_file: stat /nonexistent/ud"},
		{name: "no ami name", del: []string{"ami_name"}, want: "ami_name: required"},
		{name: "bad ami name", set: map[string]interface{}{"ami_name": "a!"}, want: `ami_name: must be 3-128 letters, digits, spaces and ()[]./-'@_, got "a!"`},
		{name: "bad imds", set: map[string]interface{}{"imds_support": "v1"}, want: `imds_support: must be "v2.0" or "off", got "v1"`},
		{name: "bad boot mode", set: map[string]interface{}{"boot_mode": "bios"}, want: `boot_mode: must be legacy-bios, uefi or uefi-preferred, got "bios"`},
		{name: "kms for other region", set: map[string]interface{}{"ami_regions": []string{"us-east-1"}, "region_kms_key_ids": map[string]string{"us-west-2": "alias/x"}},
			want: `region_kms_key_ids: "us-west-2" is not in ami_regions`},
		{name: "bad user", set: map[string]interface{}{"ami_users": []string{"12345"}, "root_volume": map[string]interface{}{"encrypted": false}}, want: `ami_users: "12345" is not a 12-digit account id`},
		{name: "instance type without a dot", set: map[string]interface{}{"instance_type": "t3small"}, want: `instance_type: "t3small" is not an instance type like t3.small`},
		{name: "fallback type shape", set: map[string]interface{}{"fallback_instance_types": []string{"T3.Large"}}, want: `fallback_instance_types: "T3.Large" is not an instance type`},
		{name: "zone in ami_regions", set: map[string]interface{}{"ami_regions": []string{"us-east-1a"}}, want: `ami_regions: "us-east-1a" is an availability zone, not a region; use "us-east-1"`},
		{name: "zone as region", set: map[string]interface{}{"region": "eu-west-1b"}, want: `region: "eu-west-1b" is an availability zone, not a region; use "eu-west-1"`},
		{name: "zone as kms map key", set: map[string]interface{}{"ami_regions": []string{"us-east-1"}, "region_kms_key_ids": map[string]string{"us-east-1a": "alias/x"}},
			want: `region_kms_key_ids: "us-east-1a" is an availability zone, not a region; use "us-east-1"`},
		{name: "kms value with a space", set: map[string]interface{}{"ami_regions": []string{"us-east-1"}, "region_kms_key_ids": map[string]string{"us-east-1": "alias/my key"}},
			want: `region_kms_key_ids.us-east-1: "alias/my key" is not a KMS key`},
		{name: "kms bare name", set: map[string]interface{}{"root_volume": map[string]interface{}{"kms_key_id": "my-ami-key"}}, want: `root_volume.kms_key_id: "my-ami-key" is not a KMS key: use a key id`},
		{name: "subnet id shape", set: map[string]interface{}{"subnet_id": "subnet-xyz"}, want: `subnet_id: "subnet-xyz" is not an id like subnet-0123456789abcdef0`},
		{name: "sg id shape", set: map[string]interface{}{"security_group_ids": []string{"default"}}, want: `security_group_ids: "default" is not an id like sg-0123456789abcdef0`},
		{name: "owner shape", del: []string{"source_ami"}, set: map[string]interface{}{"source_ami_filter": map[string]interface{}{"filters": map[string]string{"name": "x"}, "owners": []string{"debian"}}},
			want: `source_ami_filter.owners: "debian" is neither a 12-digit account id nor one of self, amazon`},
		{name: "spot price", set: map[string]interface{}{"spot_price": "cheap"}, want: `spot_price: must be "auto" or a price in USD per hour like "0.05", got "cheap"`},
		{name: "spot types without price", set: map[string]interface{}{"spot_instance_types": []string{"t3.small"}}, want: "spot_instance_types: needs spot_price"},
		{name: "spot types and instance type", set: map[string]interface{}{"spot_price": "auto", "spot_instance_types": []string{"t3.small"}},
			want: "spot_instance_types: replaces instance_type and fallback_instance_types"},
		{name: "spot type shape", del: []string{"instance_type"}, set: map[string]interface{}{"spot_price": "auto", "spot_instance_types": []string{"t3"}},
			want: `spot_instance_types: "t3" is not an instance type`},
		{name: "hop limit", set: map[string]interface{}{"metadata_options": map[string]interface{}{"http_put_response_hop_limit": 65}},
			want: "metadata_options.http_put_response_hop_limit: must be between 1 and 64, got 65"},
		{name: "http tokens", set: map[string]interface{}{"metadata_options": map[string]interface{}{"http_tokens": "v1"}},
			want: `metadata_options.http_tokens: must be "required" or "optional", got "v1"`},
		{name: "ami group", set: map[string]interface{}{"ami_groups": []string{"everyone"}}, want: `ami_groups: the only group is "all" (public), got "everyone"`},
		{name: "public and encrypted", set: map[string]interface{}{"ami_groups": []string{"all"}}, want: "ami_groups: a public AMI or snapshot cannot be encrypted; set root_volume.encrypted = false"},
		{name: "snapshot user", set: map[string]interface{}{"snapshot_users": []string{"x"}}, want: `snapshot_users: "x" is not a 12-digit account id`},
		{name: "snapshot shared with the default key", set: map[string]interface{}{"snapshot_users": []string{"123456789012"}},
			want: "snapshot_users: the AMI would be encrypted with the account's default EBS key"},
		{name: "subnet random and most free", set: map[string]interface{}{"subnet_filter": map[string]interface{}{"filters": map[string]string{"tag:A": "b"}, "most_free": true, "random": true}},
			want: "subnet_filter.random: set most_free or random, not both"},
		{name: "device name", set: map[string]interface{}{"launch_block_device_mappings": []map[string]interface{}{{"device_name": "sdf", "volume_size": 10}}},
			want: `launch_block_device_mappings[0].device_name: "sdf" is not a device name like /dev/sdf`},
		{name: "volume without size", set: map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdf"}}},
			want: "ami_block_device_mappings[0].volume_size: required without snapshot_id"},
		{name: "launch volume kept", set: map[string]interface{}{"launch_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdf", "volume_size": 10, "delete_on_termination": false}}},
			want: "launch_block_device_mappings[0].delete_on_termination: the build instance's volumes are deleted with it"},
		{name: "ephemeral with ebs keys", set: map[string]interface{}{"launch_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdb", "virtual_name": "ephemeral0", "volume_size": 10}}},
			want: "launch_block_device_mappings[0].virtual_name: an instance store volume takes no EBS keys"},
		{name: "device twice", set: map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdf", "volume_size": 1}, {"device_name": "/dev/sdf", "no_device": true}}},
			want: "ami_block_device_mappings[1].device_name: /dev/sdf is mapped twice"},
		{name: "snapshot id shape", set: map[string]interface{}{"ami_block_device_mappings": []map[string]interface{}{{"device_name": "/dev/sdf", "snapshot_id": "snap-x"}}},
			want: `ami_block_device_mappings[0].snapshot_id: "snap-x" is not an id like snap-0123456789abcdef0`},
		{name: "vpc filter and id", set: map[string]interface{}{"vpc_id": "vpc-12345678", "vpc_filter": map[string]interface{}{"filters": map[string]string{"tag:A": "b"}}},
			want: "vpc_filter: set vpc_id or vpc_filter, not both"},
		{name: "empty sg filter", set: map[string]interface{}{"security_group_filter": map[string]interface{}{}}, want: "security_group_filter.filters: must have at least one filter"},
		{name: "max_retries 0 written", set: map[string]interface{}{"max_retries": 0}, want: "max_retries: must be between 1 and 100, got 0; leave it out for the default (10)"},
		{name: "shared with the default key", set: map[string]interface{}{"ami_users": []string{"123456789012"}},
			want: "ami_users: the AMI would be encrypted with the account's default EBS key (aws/ebs), which other accounts cannot use"},
		{name: "shared copy with the default key", set: map[string]interface{}{"ami_org_arns": []string{"arn:aws:organizations::123456789012:organization/o-abc"},
			"root_volume": map[string]interface{}{"kms_key_id": "alias/shared"}, "ami_regions": []string{"us-east-1"}},
			want: `region_kms_key_ids: the copy in us-east-1 would be encrypted with that region's default EBS key, which the accounts in ami_org_arns cannot use`},
		{name: "bad org", set: map[string]interface{}{"ami_org_arns": []string{"o-123"}}, want: `ami_org_arns: "o-123" is not an organization ARN`},
		{name: "bad ou", set: map[string]interface{}{"ami_ou_arns": []string{"ou-123"}}, want: `ami_ou_arns: "ou-123" is not an OU ARN`},
		{name: "bad deprecate", set: map[string]interface{}{"deprecate_at": "next year"}, want: `deprecate_at: must be an RFC 3339 time like 2027-01-01T00:00:00Z or a duration like 4320h, got "next year"`},
		{name: "past deprecate", set: map[string]interface{}{"deprecate_at": "2001-01-01T00:00:00Z"}, want: "deprecate_at: must be in the future, got 2001-01-01T00:00:00Z"},
		{name: "reserved tag", set: map[string]interface{}{"tags": map[string]string{"wsgi:ami-family": "x"}}, want: `tags: "wsgi:ami-family": the wsgi: prefix is reserved`},
		{name: "aws tag", set: map[string]interface{}{"snapshot_tags": map[string]string{"aws:x": "x"}}, want: `snapshot_tags: "aws:x": the aws: prefix is reserved by AWS`},
		{name: "stack tag", set: map[string]interface{}{"tags": map[string]string{"wsgi:stack-digest": "sha256:0"}}, want: `tags: "wsgi:stack-digest": the wsgi: prefix is reserved`},
		{name: "reserved run tag", set: map[string]interface{}{"run_tags": map[string]string{"aws:cloudformation:x": "x"}}, want: `run_tags: "aws:cloudformation:x": the aws: prefix is reserved by AWS`},
		{name: "no ssh user", del: []string{"ssh_username"}, want: "ssh_username: required with the ssh communicator"},
		{name: "winrm", set: map[string]interface{}{"communicator": "winrm", "winrm_username": "a"}, want: "communicator: winrm is not supported"},
		{name: "temporary key name", set: map[string]interface{}{"temporary_key_pair_name": "mine"}, want: `temporary_key_pair_name: not supported: the temporary key pair is named packer_wsgi_<build id>, which its cleanup looks for; remove it (got "mine")`},
		{name: "temporary key type", set: map[string]interface{}{"temporary_key_pair_type": "rsa"}, want: `temporary_key_pair_type: the temporary key is always "ed25519", got "rsa"; remove it`},
		{name: "temporary key bits", set: map[string]interface{}{"temporary_key_pair_bits": 4096}, want: "temporary_key_pair_bits: an ed25519 key has no size to choose, got 4096; remove it"},
		{name: "access block", set: map[string]interface{}{"retry_mode": "legacy"}, want: `retry_mode: must be "standard" or "adaptive", got "legacy"`},
		{name: "endpoint", set: map[string]interface{}{"custom_endpoint_ec2": "localhost:4566"}, want: `custom_endpoint_ec2: must be a URL like https://ec2.example.com, got "localhost:4566"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := minimal()
			for _, k := range tt.del {
				delete(raw, k)
			}
			for k, v := range tt.set {
				raw[k] = v
			}
			var c Config
			_, err := c.Prepare(raw)
			if err == nil {
				t.Fatalf("want error %q, got none", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want error containing %q, got:\n%v", tt.want, err)
			}
		})
	}
}

func TestPrepareAllErrorsTogether(t *testing.T) {
	raw := minimal()
	delete(raw, "instance_type")
	raw["ami_name"] = "x"
	raw["imds_support"] = "v1"
	var c Config
	_, err := c.Prepare(raw)
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"instance_type:", "ami_name:", "imds_support:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestPrepareWarningsAndNormalisation(t *testing.T) {
	raw := minimal()
	raw["ssh_cidrs"] = []string{"0.0.0.0/0"}
	raw["root_volume"] = map[string]interface{}{"encrypted": false}
	raw["ami_regions"] = []string{"us-east-1", "eu-west-1", "us-east-1"}
	raw["deprecate_at"] = "720h"
	var c Config
	warns, err := c.Prepare(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "whole internet") || !strings.Contains(warns[1], "unencrypted") {
		t.Errorf("warnings: %q", warns)
	}
	// The build region and duplicates are dropped from the copy list.
	if strings.Join(c.AMIRegions, ",") != "us-east-1" {
		t.Errorf("ami_regions: %v", c.AMIRegions)
	}
	if d := time.Until(c.DeprecationTime()); d < 719*time.Hour || d > 721*time.Hour {
		t.Errorf("deprecate_at 720h resolved to %s from now", d)
	}
}

func TestHCL2SpecHasEveryKey(t *testing.T) {
	spec := (&Builder{}).ConfigSpec()
	for _, key := range []string{
		"region", "custom_endpoint_ec2", "assume_role", "aws_polling", "source_ami", "source_ami_filter",
		"instance_type", "fallback_instance_types", "subnet_filter", "ssh_cidrs", "root_volume", "run_tags",
		"ami_name", "ami_family", "imds_support", "ami_regions", "region_kms_key_ids", "ami_org_arns",
		"deprecate_at", "force_deregister", "skip_cloud_init_wait", "ssh_host", "ssh_port", "communicator",
		"spot_price", "spot_instance_types", "associate_public_ip_address", "metadata_options", "ami_groups",
		"snapshot_users", "snapshot_groups", "shared_credentials_file",
	} {
		if _, ok := spec[key]; !ok {
			t.Errorf("HCL spec has no %q", key)
		}
	}
}
