package launchtemplate

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// call is one recorded API call.
type call struct {
	Op string
	In any
}

type fakeTemplate struct {
	id, name string
	def      int64
	versions []types.LaunchTemplateVersion
	tags     map[string]string
}

// fakeEC2 is a small in-memory EC2 of one region that records every call.
// It keeps launch templates and images so that tests can assert on the
// state after a run, as the end-to-end test does against moto.
type fakeEC2 struct {
	region    string
	calls     []call
	templates []*fakeTemplate
	images    []types.Image
	snapshots map[string]bool
	tokens    map[string]int64
	// fail makes an operation return an error.
	fail map[string]error
}

func newFakeEC2(region string) *fakeEC2 {
	return &fakeEC2{region: region, snapshots: map[string]bool{}, tokens: map[string]int64{}, fail: map[string]error{}}
}

func (f *fakeEC2) record(op string, in any) error {
	f.calls = append(f.calls, call{op, in})
	return f.fail[op]
}

func (f *fakeEC2) ops() []string {
	var out []string
	for _, c := range f.calls {
		out = append(out, c.Op)
	}
	return out
}

func (f *fakeEC2) count(op string) int {
	n := 0
	for _, c := range f.calls {
		if c.Op == op {
			n++
		}
	}
	return n
}

func apiErr(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: code + " (fake)"}
}

// addTemplate makes a template with versions whose image ids are given.
func (f *fakeEC2) addTemplate(name string, images ...string) *fakeTemplate {
	t := &fakeTemplate{id: fmt.Sprintf("lt-%017x", len(f.templates)+1), name: name, def: 1, tags: map[string]string{}}
	for _, img := range images {
		t.add(&types.RequestLaunchTemplateData{ImageId: aws.String(img), InstanceType: "t3.micro"}, "", nil)
	}
	f.templates = append(f.templates, t)
	return t
}

func (t *fakeTemplate) add(d *types.RequestLaunchTemplateData, desc string, base *types.ResponseLaunchTemplateData) types.LaunchTemplateVersion {
	data := types.ResponseLaunchTemplateData{}
	if base != nil {
		data = *base
	}
	if d.ImageId != nil {
		data.ImageId = d.ImageId
	}
	if d.UserData != nil {
		data.UserData = d.UserData
	}
	if d.InstanceType != "" {
		data.InstanceType = d.InstanceType
	}
	v := types.LaunchTemplateVersion{
		LaunchTemplateId:   aws.String(t.id),
		LaunchTemplateName: aws.String(t.name),
		VersionNumber:      aws.Int64(int64(len(t.versions) + 1)),
		LaunchTemplateData: &data,
		VersionDescription: optional(desc),
	}
	t.versions = append(t.versions, v)
	return v
}

func (t *fakeTemplate) version(s string) (types.LaunchTemplateVersion, bool) {
	switch s {
	case "$Latest":
		return t.versions[len(t.versions)-1], true
	case "$Default":
		return t.versions[t.def-1], true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > len(t.versions) || t.versions[n-1].VersionNumber == nil {
		return types.LaunchTemplateVersion{}, false
	}
	return t.versions[n-1], true
}

func (t *fakeTemplate) summary() types.LaunchTemplate {
	return types.LaunchTemplate{
		LaunchTemplateId:     aws.String(t.id),
		LaunchTemplateName:   aws.String(t.name),
		DefaultVersionNumber: aws.Int64(t.def),
		LatestVersionNumber:  t.versions[len(t.versions)-1].VersionNumber,
	}
}

func (f *fakeEC2) byID(id string) *fakeTemplate {
	for _, t := range f.templates {
		if t.id == id {
			return t
		}
	}
	return nil
}

func (f *fakeEC2) byName(name string) *fakeTemplate {
	for _, t := range f.templates {
		if t.name == name {
			return t
		}
	}
	return nil
}

func (f *fakeEC2) DescribeLaunchTemplates(_ context.Context, in *ec2.DescribeLaunchTemplatesInput, _ ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplatesOutput, error) {
	if err := f.record("DescribeLaunchTemplates", in); err != nil {
		return nil, err
	}
	out := &ec2.DescribeLaunchTemplatesOutput{}
	for _, id := range in.LaunchTemplateIds {
		t := f.byID(id)
		if t == nil {
			return nil, apiErr("InvalidLaunchTemplateId.NotFound")
		}
		out.LaunchTemplates = append(out.LaunchTemplates, t.summary())
	}
	for _, name := range in.LaunchTemplateNames {
		t := f.byName(name)
		if t == nil {
			return nil, apiErr("InvalidLaunchTemplateName.NotFoundException")
		}
		out.LaunchTemplates = append(out.LaunchTemplates, t.summary())
	}
	return out, nil
}

func (f *fakeEC2) DescribeLaunchTemplateVersions(_ context.Context, in *ec2.DescribeLaunchTemplateVersionsInput, _ ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error) {
	if err := f.record("DescribeLaunchTemplateVersions", in); err != nil {
		return nil, err
	}
	out := &ec2.DescribeLaunchTemplateVersionsOutput{}
	var ts []*fakeTemplate
	switch {
	case in.LaunchTemplateId != nil:
		t := f.byID(*in.LaunchTemplateId)
		if t == nil {
			return nil, apiErr("InvalidLaunchTemplateId.NotFound")
		}
		ts = []*fakeTemplate{t}
	default:
		ts = f.templates
	}
	for _, t := range ts {
		for _, s := range in.Versions {
			v, ok := t.version(s)
			if !ok {
				return nil, apiErr("InvalidLaunchTemplateId.VersionNotFound")
			}
			out.LaunchTemplateVersions = append(out.LaunchTemplateVersions, v)
		}
	}
	return out, nil
}

func (f *fakeEC2) CreateLaunchTemplate(_ context.Context, in *ec2.CreateLaunchTemplateInput, _ ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateOutput, error) {
	if err := f.record("CreateLaunchTemplate", in); err != nil {
		return nil, err
	}
	t := &fakeTemplate{id: fmt.Sprintf("lt-%017x", len(f.templates)+1), name: *in.LaunchTemplateName, def: 1, tags: map[string]string{}}
	for _, ts := range in.TagSpecifications {
		for _, tag := range ts.Tags {
			t.tags[*tag.Key] = *tag.Value
		}
	}
	t.add(in.LaunchTemplateData, aws.ToString(in.VersionDescription), nil)
	f.templates = append(f.templates, t)
	s := t.summary()
	return &ec2.CreateLaunchTemplateOutput{LaunchTemplate: &s}, nil
}

func (f *fakeEC2) CreateLaunchTemplateVersion(_ context.Context, in *ec2.CreateLaunchTemplateVersionInput, _ ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateVersionOutput, error) {
	if err := f.record("CreateLaunchTemplateVersion", in); err != nil {
		return nil, err
	}
	t := f.byID(aws.ToString(in.LaunchTemplateId))
	if t == nil {
		return nil, apiErr("InvalidLaunchTemplateId.NotFound")
	}
	// EC2 answers a repeated token with the version it made the first time.
	if n, ok := f.tokens[aws.ToString(in.ClientToken)]; ok && in.ClientToken != nil {
		return &ec2.CreateLaunchTemplateVersionOutput{LaunchTemplateVersion: &t.versions[n-1]}, nil
	}
	var base *types.ResponseLaunchTemplateData
	if in.SourceVersion != nil {
		src, ok := t.version(*in.SourceVersion)
		if !ok {
			return nil, apiErr("InvalidLaunchTemplateId.VersionNotFound")
		}
		base = src.LaunchTemplateData
	}
	v := t.add(in.LaunchTemplateData, aws.ToString(in.VersionDescription), base)
	if in.ClientToken != nil {
		f.tokens[*in.ClientToken] = *v.VersionNumber
	}
	return &ec2.CreateLaunchTemplateVersionOutput{LaunchTemplateVersion: &v}, nil
}

func (f *fakeEC2) ModifyLaunchTemplate(_ context.Context, in *ec2.ModifyLaunchTemplateInput, _ ...func(*ec2.Options)) (*ec2.ModifyLaunchTemplateOutput, error) {
	if err := f.record("ModifyLaunchTemplate", in); err != nil {
		return nil, err
	}
	t := f.byID(aws.ToString(in.LaunchTemplateId))
	if t == nil {
		return nil, apiErr("InvalidLaunchTemplateId.NotFound")
	}
	n, err := strconv.ParseInt(aws.ToString(in.DefaultVersion), 10, 64)
	if err != nil || n < 1 || n > int64(len(t.versions)) {
		return nil, apiErr("InvalidLaunchTemplateId.VersionNotFound")
	}
	t.def = n
	s := t.summary()
	return &ec2.ModifyLaunchTemplateOutput{LaunchTemplate: &s}, nil
}

func (f *fakeEC2) CreateTags(_ context.Context, in *ec2.CreateTagsInput, _ ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	if err := f.record("CreateTags", in); err != nil {
		return nil, err
	}
	for _, r := range in.Resources {
		if t := f.byID(r); t != nil {
			for _, tag := range in.Tags {
				t.tags[*tag.Key] = *tag.Value
			}
		}
	}
	return &ec2.CreateTagsOutput{}, nil
}

func (f *fakeEC2) DeleteLaunchTemplate(_ context.Context, in *ec2.DeleteLaunchTemplateInput, _ ...func(*ec2.Options)) (*ec2.DeleteLaunchTemplateOutput, error) {
	if err := f.record("DeleteLaunchTemplate", in); err != nil {
		return nil, err
	}
	for i, t := range f.templates {
		if t.id == aws.ToString(in.LaunchTemplateId) {
			f.templates = append(f.templates[:i], f.templates[i+1:]...)
			return &ec2.DeleteLaunchTemplateOutput{}, nil
		}
	}
	return nil, apiErr("InvalidLaunchTemplateId.NotFound")
}

func (f *fakeEC2) DeleteLaunchTemplateVersions(_ context.Context, in *ec2.DeleteLaunchTemplateVersionsInput, _ ...func(*ec2.Options)) (*ec2.DeleteLaunchTemplateVersionsOutput, error) {
	if err := f.record("DeleteLaunchTemplateVersions", in); err != nil {
		return nil, err
	}
	t := f.byID(aws.ToString(in.LaunchTemplateId))
	out := &ec2.DeleteLaunchTemplateVersionsOutput{}
	for _, s := range in.Versions {
		n, _ := strconv.ParseInt(s, 10, 64)
		if t == nil || n == t.def || n < 1 || n > int64(len(t.versions)) {
			out.UnsuccessfullyDeletedLaunchTemplateVersions = append(out.UnsuccessfullyDeletedLaunchTemplateVersions,
				types.DeleteLaunchTemplateVersionsResponseErrorItem{
					VersionNumber: aws.Int64(n),
					ResponseError: &types.ResponseError{Code: "launchTemplateVersionDoesNotExist", Message: aws.String("cannot delete")},
				})
			continue
		}
		// Keep numbering stable: a deleted version leaves a hole.
		t.versions[n-1].VersionNumber = nil
	}
	return out, nil
}

func (f *fakeEC2) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	if err := f.record("DescribeImages", in); err != nil {
		return nil, err
	}
	out := &ec2.DescribeImagesOutput{}
	for _, img := range f.images {
		if len(in.ImageIds) > 0 && !contains(in.ImageIds, *img.ImageId) {
			continue
		}
		if !matchesFilters(img, in.Filters) {
			continue
		}
		out.Images = append(out.Images, img)
	}
	return out, nil
}

func matchesFilters(img types.Image, filters []types.Filter) bool {
	for _, fl := range filters {
		key, ok := strings.CutPrefix(aws.ToString(fl.Name), "tag:")
		if !ok {
			panic("fake supports only tag: filters")
		}
		found := false
		for _, t := range img.Tags {
			if aws.ToString(t.Key) == key && contains(fl.Values, aws.ToString(t.Value)) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (f *fakeEC2) DeregisterImage(_ context.Context, in *ec2.DeregisterImageInput, _ ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	if err := f.record("DeregisterImage", in); err != nil {
		return nil, err
	}
	for i, img := range f.images {
		if *img.ImageId == *in.ImageId {
			f.images = append(f.images[:i], f.images[i+1:]...)
			return &ec2.DeregisterImageOutput{}, nil
		}
	}
	return nil, apiErr("InvalidAMIID.NotFound")
}

func (f *fakeEC2) DeleteSnapshot(_ context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	if err := f.record("DeleteSnapshot", in); err != nil {
		return nil, err
	}
	if !f.snapshots[*in.SnapshotId] {
		return nil, apiErr("InvalidSnapshot.NotFound")
	}
	delete(f.snapshots, *in.SnapshotId)
	return &ec2.DeleteSnapshotOutput{}, nil
}

// addImage adds an AMI with one snapshot, tagged with the family.
func (f *fakeEC2) addImage(id, created, family string) {
	snap := "snap-" + strings.TrimPrefix(id, "ami-")
	f.snapshots[snap] = true
	img := types.Image{
		ImageId:      aws.String(id),
		Name:         aws.String("app-" + id),
		CreationDate: aws.String(created),
		BlockDeviceMappings: []types.BlockDeviceMapping{{
			DeviceName: aws.String("/dev/xvda"),
			Ebs:        &types.EbsBlockDevice{SnapshotId: aws.String(snap)},
		}},
	}
	if family != "" {
		img.Tags = []types.Tag{{Key: aws.String("wsgi:ami-family"), Value: aws.String(family)}}
	}
	f.images = append(f.images, img)
}

func (f *fakeEC2) imageIDs() []string {
	var out []string
	for _, img := range f.images {
		out = append(out, *img.ImageId)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fakeAutoScaling answers for one group and plays a list of refresh states.
type fakeAutoScaling struct {
	calls  []call
	groups map[string]astypes.AutoScalingGroup
	// states are returned by DescribeInstanceRefreshes in turn; the last
	// one repeats.
	states []astypes.InstanceRefresh
	polls  int
	fail   map[string]error
}

func (f *fakeAutoScaling) record(op string, in any) error {
	f.calls = append(f.calls, call{op, in})
	return f.fail[op]
}

func (f *fakeAutoScaling) DescribeAutoScalingGroups(_ context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	if err := f.record("DescribeAutoScalingGroups", in); err != nil {
		return nil, err
	}
	out := &autoscaling.DescribeAutoScalingGroupsOutput{}
	for _, n := range in.AutoScalingGroupNames {
		if g, ok := f.groups[n]; ok {
			out.AutoScalingGroups = append(out.AutoScalingGroups, g)
		}
	}
	return out, nil
}

func (f *fakeAutoScaling) StartInstanceRefresh(_ context.Context, in *autoscaling.StartInstanceRefreshInput, _ ...func(*autoscaling.Options)) (*autoscaling.StartInstanceRefreshOutput, error) {
	if err := f.record("StartInstanceRefresh", in); err != nil {
		return nil, err
	}
	return &autoscaling.StartInstanceRefreshOutput{InstanceRefreshId: aws.String("refresh-1")}, nil
}

func (f *fakeAutoScaling) DescribeInstanceRefreshes(_ context.Context, in *autoscaling.DescribeInstanceRefreshesInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeInstanceRefreshesOutput, error) {
	if err := f.record("DescribeInstanceRefreshes", in); err != nil {
		return nil, err
	}
	i := f.polls
	if i >= len(f.states) {
		i = len(f.states) - 1
	}
	f.polls++
	r := f.states[i]
	r.InstanceRefreshId = aws.String("refresh-1")
	return &autoscaling.DescribeInstanceRefreshesOutput{InstanceRefreshes: []astypes.InstanceRefresh{r}}, nil
}

func (f *fakeAutoScaling) started(t *testing.T) *autoscaling.StartInstanceRefreshInput {
	t.Helper()
	for _, c := range f.calls {
		if c.Op == "StartInstanceRefresh" {
			return c.In.(*autoscaling.StartInstanceRefreshInput)
		}
	}
	t.Fatal("no StartInstanceRefresh call")
	return nil
}

// said joins what the post-processor told the user.
func said(ui *packersdk.MockUi) string {
	var b strings.Builder
	for _, m := range ui.SayMessages {
		b.WriteString(m.Message)
		b.WriteString("\n")
	}
	return b.String()
}
