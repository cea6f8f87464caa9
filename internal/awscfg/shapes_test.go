package awscfg

import (
	"strings"
	"testing"
)

func TestShapes(t *testing.T) {
	good := []error{
		CheckRegion("k", "us-gov-west-1"), CheckRegion("k", "ap-southeast-2"),
		CheckInstanceType("k", "t3.small"), CheckInstanceType("k", "u-6tb1.metal"), CheckInstanceType("k", "mac2-m2pro.metal"),
		CheckKMSKey("k", "1234abcd-12ab-34cd-56ef-1234567890ab"), CheckKMSKey("k", "mrk-1234abcd12ab34cd56ef1234567890ab"),
		CheckKMSKey("k", "alias/team/ami_key-1"), CheckKMSKey("k", "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
		CheckKMSKey("k", "arn:aws-us-gov:kms:us-gov-west-1:123456789012:alias/ami"),
		CheckResourceID("k", "subnet", "subnet-0123456789abcdef0"), CheckResourceID("k", "sg", "sg-12345678"),
		CheckAccountID("k", "123456789012"),
	}
	for i, err := range good {
		if err != nil {
			t.Errorf("good value %d refused: %v", i, err)
		}
	}
	bad := []struct {
		err  error
		want string
	}{
		{CheckRegion("ami_regions", "us-east-1a"), `ami_regions: "us-east-1a" is an availability zone, not a region; use "us-east-1"`},
		{CheckRegion("region", "Ireland"), `region: "Ireland" is not a region name like eu-west-1`},
		{CheckInstanceType("instance_type", "t3small"), `instance_type: "t3small" is not an instance type like t3.small`},
		{CheckKMSKey("kms_key_id", "my-ami-key"), `kms_key_id: "my-ami-key" is not a KMS key`},
		{CheckKMSKey("kms_key_id", "alias/my key"), `"alias/my key" is not a KMS key`},
		{CheckKMSKey("kms_key_id", "arn:aws:kms:eu-west-1:123:key/x"), `is not a KMS key`},
		{CheckResourceID("vpc_id", "vpc", "vpc-12"), `vpc_id: "vpc-12" is not an id like vpc-0123456789abcdef0`},
		{CheckResourceID("subnet_id", "subnet", "sg-12345678"), `subnet_id: "sg-12345678" is not an id like subnet-`},
		{CheckAccountID("ami_users", "12345"), `ami_users: "12345" is not a 12-digit account id`},
	}
	for _, b := range bad {
		if b.err == nil || !strings.Contains(b.err.Error(), b.want) {
			t.Errorf("want %q, got %v", b.want, b.err)
		}
	}
}

func TestCheckExplicitZero(t *testing.T) {
	c := &AccessConfig{}
	if errs := c.CheckExplicitZero([]string{"region"}); errs != nil {
		t.Fatalf("unset max_retries refused: %v", errs)
	}
	if errs := c.CheckExplicitZero([]string{"max_retries"}); len(errs) != 1 || !strings.Contains(errs[0].Error(), "max_retries: must be between 1 and 100, got 0") {
		t.Fatalf("max_retries = 0: %v", errs)
	}
}
