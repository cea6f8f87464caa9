// Package contract is the agreement between a golden image and the first-boot payload that runs
// on it: the fixed paths both sides use, the stack schema version, the AMI tags that carry the
// stack's description through every copy, and the vocabulary of what a payload needs from an
// image. The image owns the stack; the payload carries only the app; Fits is the check that
// proves they fit before anything changes on AWS.
package contract

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// SchemaVersion is the version of the stack description and of the app description this plugin
// writes. A baked deploy refuses an app description of another version; the post-processor
// refuses to pair a payload with an image of another version.
const SchemaVersion = 1

// Paths on the instance that do not depend on any stack setting, so that a payload can name them
// without knowing how the image was baked.
const (
	// StackFile is the machine-readable description of the baked stack (JSON), written by wsgi-stack.
	StackFile = "/etc/wsgi-stack.json"
	// AppFile is the app description the payload writes; the baked deploy reads it.
	AppFile = "/etc/wsgi-app.conf"
	// DeployProgram is the baked deploy: first boot runs it with no argument.
	DeployProgram = "/usr/local/sbin/wsgi-deploy"
	// CtlProgram is the baked operations command.
	CtlProgram = "/usr/local/sbin/wsgi-ctl"
	// AWSHelper signs the instance's own AWS requests with the role credentials from IMDSv2.
	AWSHelper = "/usr/local/lib/wsgi/wsgi-aws"
)

// AMI tags the wsgi-ami builder writes from StackFile, on the AMI and every copy of it.
const (
	// TagSchema holds the stack schema version, in decimal.
	TagSchema = "wsgi:stack-schema"
	// TagDigest holds "sha256:" and the hex SHA-256 of StackFile's bytes.
	TagDigest = "wsgi:stack-digest"
	// TagProvides holds what the image provides to a payload: capabilities separated by spaces.
	TagProvides = "wsgi:stack-provides"
)

// Capabilities: what a payload can need and an image can provide. A payload's needs are an output
// of the wsgi-cloudinit data source; wsgi-stack takes them (first_boot) and installs what they ask
// for; the image's are in TagProvides.
const (
	// NeedGit: git on the image, for a git source.
	NeedGit = "git"
	// NeedAWSRequests: signed AWS requests from the instance (S3 source, SSM and Secrets Manager
	// secrets), made by AWSHelper with the instance role.
	NeedAWSRequests = "aws-requests"
)

// SchemaNeed is the capability that names a schema version, such as "schema-1".
func SchemaNeed(version int) string { return "schema-" + strconv.Itoa(version) }

// Known lists every capability this version of the plugin knows, sorted.
func Known() []string {
	return []string{NeedAWSRequests, NeedGit, SchemaNeed(SchemaVersion)}
}

// IsKnown reports whether c is a capability this version of the plugin knows.
func IsKnown(c string) bool { return slices.Contains(Known(), c) }

// ParseProvides splits a TagProvides value into its capabilities, sorted and without repeats.
func ParseProvides(tag string) []string {
	out := strings.Fields(tag)
	slices.Sort(out)
	return slices.Compact(out)
}

// FormatProvides is the TagProvides value for a list of capabilities.
func FormatProvides(caps []string) string {
	c := slices.Clone(caps)
	slices.Sort(c)
	return strings.Join(slices.Compact(c), " ")
}

// Missing returns the needs that provides does not meet, in the order of needs.
func Missing(needs, provides []string) []string {
	var out []string
	for _, n := range needs {
		if !slices.Contains(provides, n) {
			out = append(out, n)
		}
	}
	return out
}

// Fits checks a payload's needs against an image's tags. image names the image in the message
// (for example "ami-0123 in eu-west-1"). The error names both sides and says how to fix it.
func Fits(needs []string, image string, tags map[string]string) error {
	raw, ok := tags[TagProvides]
	if !ok {
		return fmt.Errorf("image %s has no %s tag: it was not baked by wsgi-stack with the wsgi-ami builder, so nothing proves the payload (needs %s) fits it; bake it with wsgi-stack, or leave the payload's needs out of the check (check_payload_fits = false)",
			image, TagProvides, strings.Join(needs, ", "))
	}
	provides := ParseProvides(raw)
	missing := Missing(needs, provides)
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("the payload needs %s, which image %s does not provide (its %s tag: %q): %s",
		strings.Join(missing, ", "), image, TagProvides, raw, fixFor(missing))
}

// fixFor says how to get each missing capability into an image.
func fixFor(missing []string) string {
	var fixes []string
	for _, m := range missing {
		switch {
		case m == NeedGit:
			fixes = append(fixes, "bake git into the image (first_boot = data.wsgi-cloudinit.NAME.needs in wsgi-stack)")
		case m == NeedAWSRequests:
			fixes = append(fixes, "rebake the image with this version of wsgi-stack, which installs the request signer")
		case strings.HasPrefix(m, "schema-"):
			fixes = append(fixes, fmt.Sprintf("the payload was rendered for stack %s; rebake the image with the same plugin version as the payload", m))
		default:
			fixes = append(fixes, fmt.Sprintf("%s is unknown to this plugin version", m))
		}
	}
	return strings.Join(fixes, "; ")
}
