package builder

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// buildInfo is the data available to ami_description, tags, snapshot_tags
// and run_tags, e.g. `{{ .SourceAMI }}`.
type buildInfo struct {
	SourceAMI     string
	SourceAMIName string
	BuildRegion   string
}

func (c *Config) render(field, s string, info buildInfo) (string, error) {
	ctx := c.ctx
	ctx.Data = info
	out, err := interpolate.Render(s, &ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return out, nil
}

// renderTags renders user tags and adds the builder's own; the builder's
// win, so a family cannot be forged by a user tag (Prepare rejects wsgi:
// keys anyway).
func (c *Config) renderTags(field string, user map[string]string, info buildInfo, own map[string]string) ([]ec2types.Tag, error) {
	all := map[string]string{}
	for k, v := range user {
		rk, err := c.render(field, k, info)
		if err != nil {
			return nil, err
		}
		if err := reservedTagKey(rk); err != nil {
			// Prepare checked the key as written; a template can still make one.
			return nil, fmt.Errorf("%s: %q renders to %q: %w", field, k, rk, err)
		}
		rv, err := c.render(field, v, info)
		if err != nil {
			return nil, err
		}
		all[rk] = rv
	}
	maps.Copy(all, own)
	return tagList(all), nil
}

// reservedTagKey refuses the prefixes a user tag may not have: wsgi: is the
// builder's own (family, build id, stack tags), aws: is AWS's.
func reservedTagKey(k string) error {
	switch {
	case strings.HasPrefix(k, "wsgi:"):
		return fmt.Errorf("the wsgi: prefix is reserved for the tags the builder writes")
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return fmt.Errorf("the aws: prefix is reserved by AWS")
	}
	return nil
}

// artifactTags are written on the AMI and its snapshots in every region.
func (c *Config) artifactTags(info buildInfo) map[string]string {
	return map[string]string{
		awscfg.TagBuilder:   awscfg.BuilderName,
		awscfg.TagBuildID:   c.buildID,
		awscfg.TagAMIFamily: c.AMIFamily,
		awscfg.TagSourceAMI: info.SourceAMI,
	}
}

// tempTags are written on the temporary instance, key pair and group.
func (c *Config) tempTags() map[string]string {
	return map[string]string{
		"Name":            "packer wsgi-ami " + c.AMIName,
		awscfg.TagBuilder: awscfg.BuilderName,
		awscfg.TagBuildID: c.buildID,
	}
}

// imageTags and snapshotTags are the rendered tags of the AMI and its
// snapshots. The AMI also carries the stack tags (wsgi:stack-*, from
// stepStackTags; none for an image not baked by wsgi-stack).
func (c *Config) imageTags(info buildInfo, stack map[string]string) ([]ec2types.Tag, error) {
	own := c.artifactTags(info)
	maps.Copy(own, stack)
	return c.renderTags("tags", c.Tags, info, own)
}

func (c *Config) snapshotTags(info buildInfo) ([]ec2types.Tag, error) {
	return c.renderTags("snapshot_tags", c.SnapshotTags, info, c.artifactTags(info))
}

func (c *Config) runTags(info buildInfo) ([]ec2types.Tag, error) {
	return c.renderTags("run_tags", c.RunTags, info, c.tempTags())
}

func infoFrom(img ec2types.Image, region string) buildInfo {
	return buildInfo{SourceAMI: aws.ToString(img.ImageId), SourceAMIName: aws.ToString(img.Name), BuildRegion: region}
}

// filters turns a map into EC2 filters in key order.
func filters(m map[string]string) []ec2types.Filter {
	out := make([]ec2types.Filter, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, ec2types.Filter{Name: aws.String(k), Values: []string{m[k]}})
	}
	return out
}

// tagList turns a map into EC2 tags in key order.
func tagList(m map[string]string) []ec2types.Tag {
	tags := make([]ec2types.Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

// imageText is what every AMI of a build carries, the original and each region's copy alike:
// the rendered description and the image and snapshot tags.
type imageText struct {
	description string
	imageTags   []ec2types.Tag
	snapTags    []ec2types.Tag
}

func (c *Config) imageText(info buildInfo, stack map[string]string) (imageText, error) {
	var t imageText
	var err error
	if t.description, err = c.render("ami_description", c.AMIDescription, info); err != nil {
		return t, err
	}
	if t.imageTags, err = c.imageTags(info, stack); err != nil {
		return t, err
	}
	t.snapTags, err = c.snapshotTags(info)
	return t, err
}
