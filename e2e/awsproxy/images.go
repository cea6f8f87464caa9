package awsproxy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ImageTagSpecs answers the tag specifications of EC2's CreateImage and
// CopyImage as EC2 does (every Proxy has it built in), where moto 5.2.1
// falls short: its CreateImage
// fails with HTTP 500 (NotImplementedError) on a "snapshot" specification,
// and its CopyImage ignores every specification. The interceptor sends
// the call to m without those specifications, then tags the new image and
// its snapshots with CreateTags, and answers with moto's own answer. A
// call without them goes on to moto unchanged.
func ImageTagSpecs(m *Moto) Interceptor {
	return func(w http.ResponseWriter, c *Call) bool {
		if c.Service != "ec2" || (c.Action != "CreateImage" && c.Action != "CopyImage") {
			return false
		}
		specs, rest := splitTagSpecs(c.Form)
		moved := map[string][]tag{}
		for _, s := range specs {
			if s.resource == "snapshot" || c.Action == "CopyImage" {
				moved[s.resource] = append(moved[s.resource], s.tags...)
			} else {
				rest = appendTagSpec(rest, s)
			}
		}
		if len(moved) == 0 {
			return false
		}
		if err := m.createImageTagged(context.Background(), w, c, rest, moved); err != nil {
			WriteError(w, c, http.StatusInternalServerError, "InternalError", "awsproxy: "+err.Error())
		}
		return true
	}
}

type tag struct{ key, value string }

type tagSpec struct {
	resource string
	tags     []tag
}

var tagSpecKey = regexp.MustCompile(`^TagSpecification\.(\d+)\.(ResourceType|Tag\.(\d+)\.(Key|Value))$`)

// splitTagSpecs takes the TagSpecification.N parameters out of form: the
// specifications in order, and the other parameters.
func splitTagSpecs(form url.Values) ([]tagSpec, url.Values) {
	rest := url.Values{}
	byN := map[int]*tagSpec{}
	tags := map[int]map[int]*tag{}
	for k, vs := range form {
		m := tagSpecKey.FindStringSubmatch(k)
		if m == nil {
			rest[k] = vs
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if byN[n] == nil {
			byN[n], tags[n] = &tagSpec{}, map[int]*tag{}
		}
		v := ""
		if len(vs) > 0 {
			v = vs[0]
		}
		if m[2] == "ResourceType" {
			byN[n].resource = v
			continue
		}
		i, _ := strconv.Atoi(m[3])
		if tags[n][i] == nil {
			tags[n][i] = &tag{}
		}
		if m[4] == "Key" {
			tags[n][i].key = v
		} else {
			tags[n][i].value = v
		}
	}
	var specs []tagSpec
	for _, n := range slices.Sorted(maps.Keys(byN)) {
		s := byN[n]
		for _, i := range slices.Sorted(maps.Keys(tags[n])) {
			s.tags = append(s.tags, *tags[n][i])
		}
		specs = append(specs, *s)
	}
	return specs, rest
}

// appendTagSpec adds s to form as the next TagSpecification.N.
func appendTagSpec(form url.Values, s tagSpec) url.Values {
	n := 1
	for form.Has(fmt.Sprintf("TagSpecification.%d.ResourceType", n)) {
		n++
	}
	form.Set(fmt.Sprintf("TagSpecification.%d.ResourceType", n), s.resource)
	for i, t := range s.tags {
		form.Set(fmt.Sprintf("TagSpecification.%d.Tag.%d.Key", n, i+1), t.key)
		form.Set(fmt.Sprintf("TagSpecification.%d.Tag.%d.Value", n, i+1), t.value)
	}
	return form
}

var (
	imageIDElem    = regexp.MustCompile(`<imageId>(ami-[0-9a-f]+)</imageId>`)
	snapshotIDElem = regexp.MustCompile(`<snapshotId>(snap-[0-9a-f]+)</snapshotId>`)
)

var formHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}}

// createImageTagged sends c's action with the parameters rest to moto,
// tags the new image with moved["image"] and its snapshots with
// moved["snapshot"], and writes moto's answer to w.
func (m *Moto) createImageTagged(ctx context.Context, w http.ResponseWriter, c *Call, rest url.Values, moved map[string][]tag) error {
	out, err := m.Call(ctx, c.Region, "ec2", http.MethodPost, "/", formHeader, []byte(rest.Encode()))
	var ce *CallError
	if errors.As(err, &ce) {
		// moto's refusal (a duplicate name, an unknown instance) as it is.
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(ce.Status)
		_, _ = w.Write(ce.Body)
		return nil
	}
	if err != nil {
		return err
	}
	id := imageIDElem.FindSubmatch(out)
	if id == nil {
		return fmt.Errorf("%s: no imageId in moto's answer %s", c.Action, out)
	}
	image := string(id[1])
	if err := m.createTags(ctx, c.Region, []string{image}, moved["image"]); err != nil {
		return err
	}
	if tags := moved["snapshot"]; len(tags) > 0 {
		desc := url.Values{"Action": {"DescribeImages"}, "Version": {"2016-11-15"}, "ImageId.1": {image}}
		imgs, err := m.Call(ctx, c.Region, "ec2", http.MethodPost, "/", formHeader, []byte(desc.Encode()))
		if err != nil {
			return err
		}
		var snaps []string
		for _, s := range snapshotIDElem.FindAllSubmatch(imgs, -1) {
			snaps = append(snaps, string(s[1]))
		}
		if err := m.createTags(ctx, c.Region, snaps, tags); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write(out)
	return nil
}

func (m *Moto) createTags(ctx context.Context, region string, ids []string, tags []tag) error {
	if len(ids) == 0 || len(tags) == 0 {
		return nil
	}
	v := url.Values{"Action": {"CreateTags"}, "Version": {"2016-11-15"}}
	for i, id := range ids {
		v.Set(fmt.Sprintf("ResourceId.%d", i+1), id)
	}
	for i, t := range tags {
		v.Set(fmt.Sprintf("Tag.%d.Key", i+1), t.key)
		v.Set(fmt.Sprintf("Tag.%d.Value", i+1), t.value)
	}
	if _, err := m.Call(ctx, region, "ec2", http.MethodPost, "/", formHeader, []byte(v.Encode())); err != nil {
		return fmt.Errorf("tagging %s: %w", strings.Join(ids, " "), err)
	}
	return nil
}
