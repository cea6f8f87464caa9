package builder

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// StateAMIs is the Artifact.State key of the region -> AMI id map, for
// post-processors (the same data as Id, without parsing).
const StateAMIs = "amis"

// Artifact is the AMI in every region it was made or copied to.
type Artifact struct {
	// Amis maps region to AMI id.
	Amis map[string]string
	// Snapshots maps region to the AMI's snapshot ids.
	Snapshots map[string][]string
	// SourceAMI is the id of the AMI the build started from.
	SourceAMI string
	// BuildRegion is the region the AMI was made in.
	BuildRegion string
	// StackTags are the wsgi:stack-* tags of every AMI (nil for an image
	// not baked by wsgi-stack).
	StackTags map[string]string
	// StateData holds generated_data, for provisioners and post-processors.
	StateData map[string]interface{}

	remover func(ctx context.Context, region string) (deleteImageAPI, error)
}

func (a *Artifact) BuilderId() string { return BuilderID }

func (a *Artifact) Files() []string { return nil }

// Id is `region:ami-id` pairs joined by commas, sorted by region.
func (a *Artifact) Id() string {
	regions := slices.Sorted(maps.Keys(a.Amis))
	parts := make([]string, len(regions))
	for i, r := range regions {
		parts[i] = r + ":" + a.Amis[r]
	}
	return strings.Join(parts, ",")
}

func (a *Artifact) String() string {
	var b strings.Builder
	b.WriteString("AMIs were created:\n")
	for _, r := range slices.Sorted(maps.Keys(a.Amis)) {
		fmt.Fprintf(&b, "%s: %s\n", r, a.Amis[r])
	}
	return b.String()
}

func (a *Artifact) State(name string) interface{} {
	switch name {
	case StateAMIs:
		return a.Amis
	case registryimage.ArtifactStateURI:
		return a.registryImages()
	}
	return a.StateData[name]
}

// stackLabels are the HCP Packer labels that carry the stack tags, so a
// registry channel tells the same as the AMI's tags.
var stackLabels = map[string]string{
	"stack_schema":   contract.TagSchema,
	"stack_digest":   contract.TagDigest,
	"stack_provides": contract.TagProvides,
}

// registryImages is the HCP Packer registry metadata: one image per region.
func (a *Artifact) registryImages() []*registryimage.Image {
	var out []*registryimage.Image
	for _, r := range slices.Sorted(maps.Keys(a.Amis)) {
		labels := map[string]string{}
		if a.SourceAMI != "" {
			labels["source_ami"] = a.SourceAMI
		}
		if r == a.BuildRegion {
			labels["build_region"] = "true"
		}
		for label, tag := range stackLabels {
			if v, ok := a.StackTags[tag]; ok {
				labels[label] = v
			}
		}
		out = append(out, &registryimage.Image{
			ImageID:        a.Amis[r],
			ProviderName:   "aws",
			ProviderRegion: r,
			SourceImageID:  a.SourceAMI,
			Labels:         labels,
		})
	}
	return out
}

// Destroy deregisters the AMI in every region and deletes its snapshots.
func (a *Artifact) Destroy() error {
	if a.remover == nil {
		return fmt.Errorf("destroying %s: artifact has no AWS access", a.Id())
	}
	ctx := context.Background()
	var errs []string
	for _, r := range slices.Sorted(maps.Keys(a.Amis)) {
		c, err := a.remover(ctx, r)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		u := &errorCollector{}
		removeImage(ctx, u, c, r, a.Amis[r], "", "")
		errs = append(errs, u.errs...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("destroying AMIs: %s", strings.Join(errs, "; "))
	}
	return nil
}

// errorCollector keeps the errors a cleanup helper reports.
type errorCollector struct{ errs []string }

func (e *errorCollector) Say(string)       {}
func (e *errorCollector) Error(msg string) { e.errs = append(e.errs, msg) }
