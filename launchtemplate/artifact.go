package launchtemplate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// BuilderID identifies this post-processor's artifacts.
const BuilderID = "wsgi.post-processor.launch-template"

// regionAMI is one region:ami-id pair of the input artifact.
type regionAMI struct {
	Region string
	AMI    string
}

// parseAMIs reads packer's conventional AMI artifact id
// "us-east-1:ami-123,eu-west-1:ami-456", keeping its order.
func parseAMIs(id string) ([]regionAMI, error) {
	var out []regionAMI
	seen := map[string]bool{}
	for _, part := range strings.Split(id, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		region, ami, ok := strings.Cut(part, ":")
		if !ok || !validRegion(region) || !strings.HasPrefix(ami, "ami-") {
			return nil, fmt.Errorf("%q is not a region:ami-id pair", part)
		}
		if seen[region] {
			return nil, fmt.Errorf("region %s appears twice", region)
		}
		seen[region] = true
		out = append(out, regionAMI{Region: region, AMI: ami})
	}
	if len(out) == 0 {
		return nil, errors.New("no region:ami-id pairs")
	}
	return out, nil
}

// selectRegions keeps the pairs of the listed regions (all when empty); from names where the
// pairs came from ("the artifact" or "ami_ids").
func selectRegions(all []regionAMI, regions []string, from string) ([]regionAMI, error) {
	if len(regions) == 0 {
		return all, nil
	}
	byRegion := map[string]regionAMI{}
	var have []string
	for _, p := range all {
		byRegion[p.Region] = p
		have = append(have, p.Region)
	}
	var out []regionAMI
	for _, r := range regions {
		p, ok := byRegion[r]
		if !ok {
			return nil, fmt.Errorf("regions: %s has no AMI in %s (it has %s)", from, r, strings.Join(have, ", "))
		}
		out = append(out, p)
	}
	return out, nil
}

// TemplateVersion is what the post-processor made in one region.
type TemplateVersion struct {
	Region       string
	AMI          string
	TemplateID   string
	TemplateName string
	// Version is the version that carries the AMI.
	Version int64
	// PreviousDefault is the default version before this run (0 when the
	// template was created by this run).
	PreviousDefault int64
	// CreatedTemplate is true when this run created the template.
	CreatedTemplate bool
	// CreatedVersion is false when a retry found the version already there.
	CreatedVersion bool
	// DefaultChanged is true when this run moved the default version.
	DefaultChanged bool
}

// Artifact is the result of the post-processor: the new launch-template
// versions, the instance refresh and the AMIs retention removed.
type Artifact struct {
	Versions []TemplateVersion
	// RefreshID is the instance refresh started, if any.
	RefreshID string
	// RefreshGroup is the Auto Scaling group of RefreshID.
	RefreshGroup string
	// Deregistered lists the AMIs keep_releases removed, per region.
	Deregistered map[string][]string

	// undo removes what one region's TemplateVersion made; nil in tests
	// that do not destroy.
	undo func(ctx context.Context, v TemplateVersion) error
}

var _ packersdk.Artifact = (*Artifact)(nil)

// BuilderId returns this post-processor's id.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files returns nothing: the artifact lives in AWS.
func (a *Artifact) Files() []string { return nil }

// Id is "region:lt-id:version" per region, comma-separated.
func (a *Artifact) Id() string {
	parts := make([]string, 0, len(a.Versions))
	for _, v := range a.Versions {
		parts = append(parts, fmt.Sprintf("%s:%s:%d", v.Region, v.TemplateID, v.Version))
	}
	return strings.Join(parts, ",")
}

// String describes the versions and the refresh for the build's summary.
func (a *Artifact) String() string {
	var b strings.Builder
	b.WriteString("Launch template versions:\n")
	for _, v := range a.Versions {
		def := ""
		if v.DefaultChanged {
			def = ", now default"
		}
		fmt.Fprintf(&b, "%s: %s (%s) version %d with %s%s\n", v.Region, v.TemplateID, v.TemplateName, v.Version, v.AMI, def)
	}
	if a.RefreshID != "" {
		fmt.Fprintf(&b, "Instance refresh %s on %s\n", a.RefreshID, a.RefreshGroup)
	}
	regions := make([]string, 0, len(a.Deregistered))
	for r := range a.Deregistered {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		if len(a.Deregistered[r]) > 0 {
			fmt.Fprintf(&b, "%s: deregistered %s\n", r, strings.Join(a.Deregistered[r], ", "))
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// State exposes the versions for later post-processors.
func (a *Artifact) State(name string) interface{} {
	switch name {
	case "launch_template_versions":
		m := map[string]string{}
		for _, v := range a.Versions {
			m[v.Region] = fmt.Sprintf("%s:%d", v.TemplateID, v.Version)
		}
		return m
	case "instance_refresh_id":
		return a.RefreshID
	}
	return nil
}

// Destroy removes what this run created, newest region first: a template
// it created is deleted; otherwise the previous default version is
// restored and the new version deleted. The instance refresh is not
// undone (it is not a resource), and deregistered AMIs stay deregistered.
func (a *Artifact) Destroy() error {
	if a.undo == nil {
		return nil
	}
	var errs []error
	for i := len(a.Versions) - 1; i >= 0; i-- {
		if err := a.undo(context.Background(), a.Versions[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
