package awscfg

import (
	"fmt"
	"regexp"
	"strings"
)

// Shape checks for the identifiers AWS documents a form for. Each returns
// an error that names key and shows the right form, or nil; the callers are
// the Prepare methods of the builder and this block.

var (
	// family "." size, e.g. t3.small, u-6tb1.metal, mac2-m2pro.metal.
	instanceTypePattern = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9-]+$`)
	kmsKeyIDPattern     = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	kmsAliasPattern     = regexp.MustCompile(`^alias/[A-Za-z0-9/_-]{1,250}$`)
	kmsARNPattern       = regexp.MustCompile(`^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})|alias/[A-Za-z0-9/_-]{1,250})$`)
	accountIDPattern    = regexp.MustCompile(`^[0-9]{12}$`)
)

// ValidRegion checks only the shape "letters-words-digit" (us-east-1,
// us-gov-west-1), loose on purpose: new partitions add new prefixes.
func ValidRegion(r string) bool { return validRegion(r) }

// CheckRegion checks a region name; an availability zone (us-east-1a) gets
// its region named in the message.
func CheckRegion(key, r string) error {
	if validRegion(r) {
		return nil
	}
	if n := len(r); n > 1 && r[n-1] >= 'a' && r[n-1] <= 'z' && validRegion(r[:n-1]) {
		return fmt.Errorf("%s: %q is an availability zone, not a region; use %q", key, r, r[:n-1])
	}
	return fmt.Errorf("%s: %q is not a region name like eu-west-1", key, r)
}

// CheckInstanceType checks the shape FAMILY.SIZE.
func CheckInstanceType(key, t string) error {
	if instanceTypePattern.MatchString(t) {
		return nil
	}
	return fmt.Errorf("%s: %q is not an instance type like t3.small (family, a dot, size)", key, t)
}

// CheckKMSKey checks a KMS key reference as EC2 takes it: a key id, a
// multi-Region key id, an alias, or the ARN of a key or an alias.
func CheckKMSKey(key, v string) error {
	if kmsKeyIDPattern.MatchString(v) || kmsAliasPattern.MatchString(v) || kmsARNPattern.MatchString(v) {
		return nil
	}
	return fmt.Errorf("%s: %q is not a KMS key: use a key id (1234abcd-12ab-34cd-56ef-1234567890ab), an alias (alias/ami) or an ARN (arn:aws:kms:eu-west-1:123456789012:key/1234abcd-...)", key, v)
}

// CheckResourceID checks an EC2 id of the form PREFIX-HEX (8 or 17 hex digits).
func CheckResourceID(key, prefix, v string) error {
	hex, ok := strings.CutPrefix(v, prefix+"-")
	if ok && (len(hex) == 8 || len(hex) == 17) && strings.Trim(hex, "0123456789abcdef") == "" {
		return nil
	}
	return fmt.Errorf("%s: %q is not an id like %s-0123456789abcdef0", key, v, prefix)
}

// CheckAccountID checks a 12-digit AWS account id.
func CheckAccountID(key, v string) error {
	if accountIDPattern.MatchString(v) {
		return nil
	}
	return fmt.Errorf("%s: %q is not a 12-digit account id", key, v)
}

// CheckExplicitZero refuses max_retries = 0 written out: Prepare cannot
// tell it from an unset key (which means the default), and 0 attempts would
// mean no call at all. set lists the keys the configuration gave.
func (c *AccessConfig) CheckExplicitZero(set []string) []error {
	for _, k := range set {
		if k == "max_retries" && c.MaxRetries == 0 {
			return []error{fmt.Errorf("max_retries: must be between 1 and 100, got 0; leave it out for the default (%d)", DefaultMaxRetries)}
		}
	}
	return nil
}
