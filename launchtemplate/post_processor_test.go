package launchtemplate

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

const payload = "#cloud-config\nruncmd:\n  - echo hello\n"

// harness wires a post-processor to fakes per region.
type harness struct {
	pp  *PostProcessor
	ec2 map[string]*fakeEC2
	as  *fakeAutoScaling
	ui  *packersdk.MockUi
}

func newHarness(t *testing.T, raw map[string]interface{}, regions ...string) *harness {
	t.Helper()
	base := map[string]interface{}{
		"region":                     "us-east-1",
		"skip_credential_validation": true,
	}
	for k, v := range raw {
		base[k] = v
	}
	h := &harness{
		pp:  &PostProcessor{},
		ec2: map[string]*fakeEC2{},
		as:  &fakeAutoScaling{groups: map[string]astypes.AutoScalingGroup{}, fail: map[string]error{}},
		ui:  &packersdk.MockUi{},
	}
	for _, r := range regions {
		h.ec2[r] = newFakeEC2(r)
	}
	if err := h.pp.Configure(base); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	h.pp.newEC2 = func(_ context.Context, region string) (ec2API, error) {
		f, ok := h.ec2[region]
		if !ok {
			t.Fatalf("no fake for region %s", region)
		}
		return f, nil
	}
	h.pp.newAutoScaling = func(context.Context, string) (refreshAPI, error) { return h.as, nil }
	h.pp.waiter = &refreshWaiter{MinDelay: time.Millisecond, MaxDelay: time.Millisecond, Timeout: time.Minute,
		sleep: func(context.Context, time.Duration) error { return nil }}
	return h
}

func (h *harness) run(id string) (*Artifact, error) {
	a, keep, force, err := h.pp.PostProcess(context.Background(), h.ui, &packersdk.MockArtifact{BuilderIdValue: "wsgi.builder.ami", IdValue: id})
	if !keep || !force {
		panic("the input AMIs must always be kept")
	}
	if err != nil {
		return nil, err
	}
	return a.(*Artifact), nil
}

func TestNewVersionInheritsAndBecomesDefault(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"user_data":            payload,
		"user_data_encoding":   "raw",
		"version_description":  "release 7",
	}, "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-old1", "ami-old2")
	lt.def = 1 // the default is older than the latest: inherit from the default

	a, err := h.run("us-east-1:ami-new")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.ops(), []string{"DescribeLaunchTemplates", "DescribeLaunchTemplateVersions", "CreateLaunchTemplateVersion", "ModifyLaunchTemplate"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	in := f.calls[2].In.(*ec2.CreateLaunchTemplateVersionInput)
	if aws.ToString(in.SourceVersion) != "1" {
		t.Errorf("SourceVersion = %q, want the default version 1", aws.ToString(in.SourceVersion))
	}
	if !strings.HasPrefix(aws.ToString(in.ClientToken), "wsgi-lt-") || len(aws.ToString(in.ClientToken)) > 128 {
		t.Errorf("ClientToken = %q", aws.ToString(in.ClientToken))
	}
	v := lt.versions[2]
	if aws.ToString(v.LaunchTemplateData.ImageId) != "ami-new" || v.LaunchTemplateData.InstanceType != "t3.micro" {
		t.Errorf("new version data = %+v, want ami-new and the inherited t3.micro", v.LaunchTemplateData)
	}
	decoded, err := base64.StdEncoding.DecodeString(aws.ToString(v.LaunchTemplateData.UserData))
	if err != nil || string(decoded) != payload {
		t.Errorf("user data decodes to %q (%v), want the payload", decoded, err)
	}
	if aws.ToString(v.VersionDescription) != "release 7" {
		t.Errorf("description = %q", aws.ToString(v.VersionDescription))
	}
	if lt.def != 3 {
		t.Errorf("default = %d, want 3", lt.def)
	}
	want := []TemplateVersion{{Region: "us-east-1", AMI: "ami-new", TemplateID: lt.id, TemplateName: "web", Version: 3, PreviousDefault: 1, CreatedVersion: true, DefaultChanged: true}}
	if !reflect.DeepEqual(a.Versions, want) {
		t.Errorf("artifact versions = %+v, want %+v", a.Versions, want)
	}
	if a.Id() != "us-east-1:"+lt.id+":3" {
		t.Errorf("Id() = %q", a.Id())
	}
}

func TestSetDefaultFalseAndSourceLatest(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_id": "lt-00000000000000001",
		"set_default":        false,
		"source_version":     "$Latest",
	}, "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-old1", "ami-old2")
	if _, err := h.run("us-east-1:ami-new"); err != nil {
		t.Fatal(err)
	}
	if f.count("ModifyLaunchTemplate") != 0 || lt.def != 1 {
		t.Errorf("default moved to %d with set_default = false", lt.def)
	}
	in := f.calls[2].In.(*ec2.CreateLaunchTemplateVersionInput)
	if aws.ToString(in.SourceVersion) != "2" {
		t.Errorf("SourceVersion = %q, want 2 ($Latest)", aws.ToString(in.SourceVersion))
	}
	if in.LaunchTemplateData.UserData != nil {
		t.Errorf("user data sent without user_data: %q", *in.LaunchTemplateData.UserData)
	}
}

func TestRetryDoesNotAddASecondVersion(t *testing.T) {
	gz := gzipBase64(t, payload)
	raw := map[string]interface{}{"launch_template_name": "web", "user_data": gz, "user_data_encoding": "gzip+base64"}
	h := newHarness(t, raw, "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-old")
	if _, err := h.run("us-east-1:ami-new"); err != nil {
		t.Fatal(err)
	}
	a, err := h.run("us-east-1:ami-new")
	if err != nil {
		t.Fatal(err)
	}
	if n := f.count("CreateLaunchTemplateVersion"); n != 1 {
		t.Fatalf("CreateLaunchTemplateVersion called %d times, want 1", n)
	}
	if len(lt.versions) != 2 || a.Versions[0].Version != 2 || a.Versions[0].CreatedVersion {
		t.Errorf("second run: versions=%d artifact=%+v", len(lt.versions), a.Versions[0])
	}
	if !strings.Contains(said(h.ui), "already carries ami-new") {
		t.Errorf("the retry is not reported:\n%s", said(h.ui))
	}
	if got := aws.ToString(lt.versions[1].LaunchTemplateData.UserData); got != gz {
		t.Errorf("gzip+base64 user data changed on the way: %q, want %q", got, gz)
	}
}

func TestRetryWithAnotherDescriptionReusesAndDestroyKeepsIt(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web", "version_description": "run 1"}, "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-old")
	if _, err := h.run("us-east-1:ami-new"); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, map[string]interface{}{"launch_template_name": "web", "version_description": "run 2"})
	h2.ec2["us-east-1"] = f
	a, err := h2.run("us-east-1:ami-new")
	if err != nil {
		t.Fatal(err)
	}
	if f.count("CreateLaunchTemplateVersion") != 1 || len(lt.versions) != 2 {
		t.Fatalf("a retry with another description made a version: %v", f.ops())
	}
	// The retry made nothing, so its Destroy removes nothing.
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if lt.def != 2 || lt.versions[1].VersionNumber == nil {
		t.Errorf("Destroy of a run that made nothing changed the template: default %d", lt.def)
	}
}

func TestRefreshRegionMustBeUpdated(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg", "region": "eu-west-1"},
	}, "us-east-1")
	_, err := h.run("us-east-1:ami-new")
	if err == nil || !strings.HasPrefix(err.Error(), `instance_refresh.region: "eu-west-1" is not a region this post-processor updates`) {
		t.Fatalf("err = %v", err)
	}
	if len(h.ec2["us-east-1"].calls) != 0 {
		t.Error("calls were made before the configuration was found wrong")
	}
}

func TestClientToken(t *testing.T) {
	r := versionRequest{Region: "us-east-1", AMI: "ami-1", Name: "web", Source: "$Default", UserData: "abc"}
	same := r
	other := r
	other.AMI = "ami-2"
	otherRegion := r
	otherRegion.Region = "eu-west-1"
	explicit, explicit2 := r, other
	explicit.TokenSource, explicit2.TokenSource = "build-42", "build-42"
	if r.clientToken() != same.clientToken() {
		t.Error("same request, different tokens")
	}
	if r.clientToken() == other.clientToken() || r.clientToken() == otherRegion.clientToken() {
		t.Error("different AMI or region, same token")
	}
	if explicit.clientToken() != explicit2.clientToken() {
		t.Error("client_token set: the token must depend on it, not on the AMI")
	}
	if len(r.clientToken()) > 128 {
		t.Errorf("token longer than EC2's 128 characters: %d", len(r.clientToken()))
	}
}

func TestCreateIfMissing(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"create_if_missing":    true,
		"tags":                 map[string]string{"team": "web"},
		"user_data":            payload,
		"user_data_encoding":   "raw",
	}, "us-east-1")
	f := h.ec2["us-east-1"]
	a, err := h.run("us-east-1:ami-new")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.templates) != 1 || f.templates[0].tags["team"] != "web" {
		t.Fatalf("templates = %+v", f.templates)
	}
	if !a.Versions[0].CreatedTemplate || a.Versions[0].Version != 1 {
		t.Errorf("artifact = %+v", a.Versions[0])
	}
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if len(f.templates) != 0 {
		t.Errorf("Destroy left the created template")
	}
}

func TestMissingTemplateWithoutCreate(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web"}, "us-east-1")
	_, err := h.run("us-east-1:ami-new")
	if err == nil || !strings.Contains(err.Error(), `launch template "web" not found`) || !strings.Contains(err.Error(), "create_if_missing") {
		t.Fatalf("err = %v", err)
	}
}

func TestDestroyRestoresDefaultAndDeletesVersion(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web"}, "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-old")
	a, err := h.run("us-east-1:ami-new")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if lt.def != 1 || lt.versions[1].VersionNumber != nil {
		t.Errorf("after Destroy: default %d, version 2 still there: %v", lt.def, lt.versions[1].VersionNumber != nil)
	}
	ops := f.ops()
	if got := ops[len(ops)-2:]; !reflect.DeepEqual(got, []string{"ModifyLaunchTemplate", "DeleteLaunchTemplateVersions"}) {
		t.Errorf("Destroy calls = %v: the default must move back before the version can go", got)
	}
}

func TestSeveralRegions(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web"}, "us-east-1", "eu-west-1")
	a1 := h.ec2["us-east-1"].addTemplate("web", "ami-a")
	b1 := h.ec2["eu-west-1"].addTemplate("web", "ami-b", "ami-c")
	a, err := h.run("us-east-1:ami-1,eu-west-1:ami-2")
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(a1.versions[1].LaunchTemplateData.ImageId) != "ami-1" || aws.ToString(b1.versions[2].LaunchTemplateData.ImageId) != "ami-2" {
		t.Error("each region's template must get its own region's AMI")
	}
	if a.Id() != "us-east-1:"+a1.id+":2,eu-west-1:"+b1.id+":3" {
		t.Errorf("Id() = %q", a.Id())
	}
}

func TestRegionsSelectsAndChecks(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web", "regions": []string{"eu-west-1"}}, "eu-west-1")
	h.ec2["eu-west-1"].addTemplate("web", "ami-b")
	a, err := h.run("us-east-1:ami-1,eu-west-1:ami-2")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Versions) != 1 || a.Versions[0].Region != "eu-west-1" {
		t.Errorf("versions = %+v", a.Versions)
	}
	h = newHarness(t, map[string]interface{}{"launch_template_name": "web", "regions": []string{"ap-south-1"}})
	if _, err := h.run("us-east-1:ami-1"); err == nil || !strings.Contains(err.Error(), "regions: the artifact has no AMI in ap-south-1") {
		t.Errorf("err = %v", err)
	}
}

func TestTemplateIDWithSeveralRegions(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_id": "lt-00000000000000001"})
	_, err := h.run("us-east-1:ami-1,eu-west-1:ami-2")
	if err == nil || !strings.HasPrefix(err.Error(), "launch_template_id:") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadArtifact(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web"})
	_, err := h.run("/tmp/output.tar")
	if err == nil || !strings.Contains(err.Error(), "region:ami-id") {
		t.Fatalf("err = %v", err)
	}
}

func TestFailureInSecondRegionUndoesTheFirst(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web"}, "us-east-1", "eu-west-1")
	a1 := h.ec2["us-east-1"].addTemplate("web", "ami-a")
	h.ec2["eu-west-1"].addTemplate("web", "ami-b")
	h.ec2["eu-west-1"].fail["ModifyLaunchTemplate"] = apiErr("UnauthorizedOperation")
	_, err := h.run("us-east-1:ami-1,eu-west-1:ami-2")
	if err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation") {
		t.Fatalf("err = %v", err)
	}
	if a1.def != 1 || a1.versions[1].VersionNumber != nil {
		t.Errorf("us-east-1 not undone: default %d", a1.def)
	}
	if n := h.ec2["eu-west-1"].count("DeleteLaunchTemplateVersions"); n != 1 {
		t.Errorf("eu-west-1's new version not deleted (%d calls)", n)
	}
}

func refreshStates(statuses ...astypes.InstanceRefreshStatus) []astypes.InstanceRefresh {
	var out []astypes.InstanceRefresh
	for i, s := range statuses {
		r := astypes.InstanceRefresh{Status: s, PercentageComplete: aws.Int32(int32(i * 50))}
		if s == astypes.InstanceRefreshStatusFailed {
			r.StatusReason = aws.String("instances failed health checks")
		}
		out = append(out, r)
	}
	return out
}

func TestInstanceRefreshPinsVersionAndFollowsIt(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh": map[string]interface{}{
			"auto_scaling_group_name": "web-asg",
			"min_healthy_percentage":  50,
			"instance_warmup":         "2m",
			"skip_matching":           true,
			"auto_rollback":           true,
			"checkpoint_percentages":  []int{50, 100},
			"checkpoint_delay":        "5m",
		},
	}, "us-east-1")
	lt := h.ec2["us-east-1"].addTemplate("web", "ami-old")
	h.as.groups["web-asg"] = astypes.AutoScalingGroup{LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateId: aws.String(lt.id), Version: aws.String("$Default")}}
	h.as.states = refreshStates(astypes.InstanceRefreshStatusPending, astypes.InstanceRefreshStatusInProgress,
		astypes.InstanceRefreshStatusInProgress, astypes.InstanceRefreshStatusSuccessful)
	h.as.states[2].PercentageComplete = h.as.states[1].PercentageComplete // no change: no new line

	a, err := h.run("us-east-1:ami-new")
	if err != nil {
		t.Fatal(err)
	}
	in := h.as.started(t)
	spec := in.DesiredConfiguration.LaunchTemplate
	if aws.ToString(spec.LaunchTemplateId) != lt.id || aws.ToString(spec.Version) != "2" {
		t.Errorf("desired configuration = %s version %s, want %s version 2", aws.ToString(spec.LaunchTemplateId), aws.ToString(spec.Version), lt.id)
	}
	p := in.Preferences
	if *p.MinHealthyPercentage != 50 || *p.InstanceWarmup != 120 || !*p.SkipMatching || !*p.AutoRollback ||
		!reflect.DeepEqual(p.CheckpointPercentages, []int32{50, 100}) || *p.CheckpointDelay != 300 {
		t.Errorf("preferences = %+v", p)
	}
	if a.RefreshID != "refresh-1" || a.RefreshGroup != "web-asg" {
		t.Errorf("artifact refresh = %q on %q", a.RefreshID, a.RefreshGroup)
	}
	var lines []string
	for _, m := range h.ui.SayMessages {
		if strings.HasPrefix(m.Message, "instance refresh refresh-1:") {
			lines = append(lines, m.Message)
		}
	}
	if len(lines) != 3 || !strings.Contains(lines[0], "Pending") || !strings.Contains(lines[1], "InProgress, 50% complete") || !strings.Contains(lines[2], "Successful") {
		t.Errorf("progress lines = %q, want one per change", lines)
	}
	if h.as.polls != 4 {
		t.Errorf("polled %d times, want 4", h.as.polls)
	}
}

func TestInstanceRefreshMixedInstancesPolicy(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg", "wait": false},
	}, "us-east-1")
	lt := h.ec2["us-east-1"].addTemplate("web", "ami-old")
	h.as.groups["web-asg"] = astypes.AutoScalingGroup{MixedInstancesPolicy: &astypes.MixedInstancesPolicy{
		LaunchTemplate: &astypes.LaunchTemplate{
			LaunchTemplateSpecification: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("web")},
			Overrides:                   []astypes.LaunchTemplateOverrides{{InstanceType: aws.String("t3.small")}},
		},
	}}
	if _, err := h.run("us-east-1:ami-new"); err != nil {
		t.Fatal(err)
	}
	mip := h.as.started(t).DesiredConfiguration.MixedInstancesPolicy
	if mip == nil || aws.ToString(mip.LaunchTemplate.LaunchTemplateSpecification.Version) != "2" ||
		aws.ToString(mip.LaunchTemplate.LaunchTemplateSpecification.LaunchTemplateId) != lt.id ||
		aws.ToString(mip.LaunchTemplate.Overrides[0].InstanceType) != "t3.small" {
		t.Errorf("desired mixed instances policy = %+v", mip)
	}
	if h.as.polls != 0 {
		t.Errorf("wait = false but polled %d times", h.as.polls)
	}
}

func TestInstanceRefreshFailureRestoresDefault(t *testing.T) {
	for _, final := range []astypes.InstanceRefreshStatus{astypes.InstanceRefreshStatusFailed, astypes.InstanceRefreshStatusCancelled, astypes.InstanceRefreshStatusRollbackSuccessful} {
		t.Run(string(final), func(t *testing.T) {
			h := newHarness(t, map[string]interface{}{
				"launch_template_name": "web",
				"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
			}, "us-east-1")
			lt := h.ec2["us-east-1"].addTemplate("web", "ami-old")
			h.as.groups["web-asg"] = astypes.AutoScalingGroup{LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("web")}}
			h.as.states = refreshStates(astypes.InstanceRefreshStatusPending, astypes.InstanceRefreshStatusInProgress, final)
			_, err := h.run("us-east-1:ami-new")
			if !errors.Is(err, ErrRefreshFailed) {
				t.Fatalf("err = %v, want ErrRefreshFailed", err)
			}
			for _, want := range []string{"ended " + string(final), "describe-instance-refreshes", "--auto-scaling-group-name web-asg", "describe-scaling-activities"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if lt.def != 1 {
				t.Errorf("default = %d, want it set back to 1", lt.def)
			}
			if len(lt.versions) != 2 || lt.versions[1].VersionNumber == nil {
				t.Error("the new version must stay for inspection")
			}
		})
	}
}

func TestInstanceRefreshOtherTemplate(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
	}, "us-east-1")
	lt := h.ec2["us-east-1"].addTemplate("web", "ami-old")
	h.as.groups["web-asg"] = astypes.AutoScalingGroup{LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateId: aws.String("lt-0ffffffffffffffff")}}
	_, err := h.run("us-east-1:ami-new")
	if err == nil || !strings.Contains(err.Error(), "uses launch template lt-0ffffffffffffffff") {
		t.Fatalf("err = %v", err)
	}
	if lt.def != 1 || lt.versions[1].VersionNumber != nil {
		t.Error("nothing must be left when the refresh cannot start")
	}
	if len(h.as.calls) != 1 {
		t.Errorf("auto scaling calls = %v", h.as.calls)
	}
}

func TestInstanceRefreshLaunchConfiguration(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
	}, "us-east-1")
	h.ec2["us-east-1"].addTemplate("web", "ami-old")
	h.as.groups["web-asg"] = astypes.AutoScalingGroup{LaunchConfigurationName: aws.String("old-lc")}
	_, err := h.run("us-east-1:ami-new")
	if err == nil || !strings.Contains(err.Error(), `group "web-asg" uses no launch template`) {
		t.Fatalf("err = %v", err)
	}
	h = newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
	}, "us-east-1")
	h.ec2["us-east-1"].addTemplate("web", "ami-old")
	_, err = h.run("us-east-1:ami-new")
	if err == nil || !strings.Contains(err.Error(), `instance_refresh.auto_scaling_group_name: no Auto Scaling group "web-asg" in us-east-1`) {
		t.Fatalf("err = %v", err)
	}
}

func TestRefreshWaiterTimeout(t *testing.T) {
	as := &fakeAutoScaling{states: refreshStates(astypes.InstanceRefreshStatusInProgress)}
	clock := time.Unix(0, 0)
	w := refreshWaiter{MinDelay: time.Minute, MaxDelay: time.Minute, Timeout: 10 * time.Minute,
		now:   func() time.Time { return clock },
		sleep: func(_ context.Context, d time.Duration) error { clock = clock.Add(d); return nil }}
	err := w.wait(context.Background(), &packersdk.MockUi{}, as, "us-east-1", "web-asg", "refresh-1")
	if err == nil || !strings.Contains(err.Error(), "still InProgress after 9m0s (instance_refresh.timeout)") {
		t.Fatalf("err = %v", err)
	}
	if as.polls < 5 || as.polls > 11 {
		t.Errorf("polled %d times in 10m with 1m delays", as.polls)
	}
}

func TestRefreshWaiterCancelled(t *testing.T) {
	as := &fakeAutoScaling{states: refreshStates(astypes.InstanceRefreshStatusInProgress)}
	ctx, cancel := context.WithCancel(context.Background())
	w := refreshWaiter{MinDelay: time.Second, MaxDelay: time.Second, Timeout: time.Hour,
		sleep: func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() }}
	err := w.wait(ctx, &packersdk.MockUi{}, as, "us-east-1", "web-asg", "refresh-1")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "goes on in AWS") {
		t.Fatalf("err = %v", err)
	}
}

func TestKeepReleases(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web", "keep_releases": 2}, "us-east-1")
	f := h.ec2["us-east-1"]
	f.addImage("ami-r1", "2026-01-01T00:00:00.000Z", "app")
	f.addImage("ami-r2", "2026-02-01T00:00:00.000Z", "app")
	f.addImage("ami-r3", "2026-03-01T00:00:00.000Z", "app")
	f.addImage("ami-r4", "2026-04-01T00:00:00.000Z", "app")
	f.addImage("ami-new", "2026-05-01T00:00:00.000Z", "app")
	f.addImage("ami-other", "2025-01-01T00:00:00.000Z", "other")
	f.addImage("ami-untagged", "2025-01-01T00:00:00.000Z", "")
	f.addTemplate("web", "ami-r4")
	// ami-r1 is the default of another template: in use, kept.
	f.addTemplate("legacy", "ami-r1")

	a, err := h.run("us-east-1:ami-new")
	if err != nil {
		t.Fatal(err)
	}
	// ami-new and ami-r4 are the newest two; r3 and r2 go; r1 is in use.
	if got, want := f.imageIDs(), []string{"ami-r1", "ami-r4", "ami-new", "ami-other", "ami-untagged"}; !reflect.DeepEqual(got, want) {
		t.Errorf("images left = %v, want %v", got, want)
	}
	if f.snapshots["snap-r2"] || f.snapshots["snap-r3"] || !f.snapshots["snap-r1"] {
		t.Errorf("snapshots left = %v", f.snapshots)
	}
	if got := a.Deregistered["us-east-1"]; !reflect.DeepEqual(got, []string{"ami-r3", "ami-r2"}) {
		t.Errorf("artifact deregistered = %v", got)
	}
	if !strings.Contains(said(h.ui), "keeping ami-r1, used by lt-") {
		t.Errorf("kept AMI not reported:\n%s", said(h.ui))
	}
	for _, c := range f.calls {
		if in, ok := c.In.(*ec2.DescribeImagesInput); ok && len(in.ImageIds) == 0 {
			if !reflect.DeepEqual(in.Owners, []string{"self"}) || aws.ToString(in.Filters[0].Name) != "tag:wsgi:ami-family" || in.Filters[0].Values[0] != "app" {
				t.Errorf("listing must be by owner self and the family tag, got %+v", in)
			}
		}
	}
}

func TestKeepReleasesNeedsFamilyTagBeforeChangingAnything(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web", "keep_releases": 1}, "us-east-1")
	f := h.ec2["us-east-1"]
	f.addImage("ami-new", "2026-05-01T00:00:00.000Z", "")
	f.addTemplate("web", "ami-old")
	_, err := h.run("us-east-1:ami-new")
	if err == nil || !strings.Contains(err.Error(), `has no "wsgi:ami-family" tag`) {
		t.Fatalf("err = %v", err)
	}
	if f.count("CreateLaunchTemplateVersion") != 0 {
		t.Error("a version was created although retention could not work")
	}
}

func TestKeepReleasesExplicitFamily(t *testing.T) {
	h := newHarness(t, map[string]interface{}{"launch_template_name": "web", "keep_releases": 1, "retention_tag_key": "family", "retention_tag_value": "x"}, "us-east-1")
	f := h.ec2["us-east-1"]
	f.addTemplate("web", "ami-old")
	if _, err := h.run("us-east-1:ami-new"); err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, c := range f.calls {
		if in, ok := c.In.(*ec2.DescribeImagesInput); ok {
			listed = true
			if len(in.ImageIds) > 0 || aws.ToString(in.Filters[0].Name) != "tag:family" || in.Filters[0].Values[0] != "x" {
				t.Errorf("with retention_tag_value the AMI's own tag is not read; got %+v", in)
			}
		}
	}
	if !listed {
		t.Error("the family's AMIs were not listed")
	}
}

func gzipBase64(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}
