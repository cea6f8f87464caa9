package launchtemplate

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// unknownValue reports Packer's placeholder for a value that is not known yet: `packer
// validate` prepares the configuration before data sources run.
func unknownValue(s string) bool {
	return s == "<unknown>" || s == hcl2helper.UnknownVariableValue
}

// prepareAMIIDs checks ami_ids: region names as keys, AMI ids as values.
func (c *Config) prepareAMIIDs() []error {
	var errs []error
	for _, r := range slices.Sorted(maps.Keys(c.AMIIDs)) {
		id := c.AMIIDs[r]
		if unknownValue(r) || unknownValue(id) {
			continue
		}
		if !validRegion(r) {
			errs = append(errs, fmt.Errorf("ami_ids: key %q is not a region name like eu-west-1", r))
		}
		if !strings.HasPrefix(id, "ami-") {
			errs = append(errs, fmt.Errorf("ami_ids[%q]: must be an AMI id like ami-0123456789abcdef0, got %q", r, id))
		}
	}
	return errs
}

// targets returns the region:AMI pairs this run updates: the artifact's, or ami_ids when the
// artifact carries no AMI (a release without a bake, from the null builder). The second value
// names where they came from, for messages.
func (c *Config) targets(ui packersdk.Ui, source packersdk.Artifact) ([]regionAMI, string, error) {
	id := source.Id()
	if !strings.Contains(id, "ami-") && len(c.AMIIDs) > 0 {
		var pairs []regionAMI
		for _, r := range slices.Sorted(maps.Keys(c.AMIIDs)) {
			pairs = append(pairs, regionAMI{Region: r, AMI: c.AMIIDs[r]})
		}
		ui.Say(fmt.Sprintf("The artifact of %s carries no AMI: releasing on ami_ids (%s)", source.BuilderId(), describePairs(pairs)))
		return pairs, "ami_ids", nil
	}
	all, err := parseAMIs(id)
	if err != nil {
		return nil, "", fmt.Errorf("artifact of %s: %w; wsgi-launch-template needs an AMI artifact with an id like us-east-1:ami-0123456789abcdef0, or ami_ids (e.g. data.wsgi-golden-image.NAME.ami_ids) for a release without a bake", source.BuilderId(), err)
	}
	if len(c.AMIIDs) > 0 {
		ui.Say(fmt.Sprintf("ami_ids is not used: the artifact of %s carries AMIs (%s)", source.BuilderId(), describePairs(all)))
	}
	return all, "the artifact", nil
}

func describePairs(pairs []regionAMI) string {
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.Region + ":" + p.AMI
	}
	return strings.Join(parts, ", ")
}
