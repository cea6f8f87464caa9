package launchtemplate

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// appPayload is a wsgi-cloudinit payload reduced to what the fit check reads: a #cloud-config
// writing contract.AppFile with the needs line (not cloudinit.Build's output, which changes).
func appPayload(needs ...string) string {
	return "#cloud-config\nwrite_files:\n  - path: " + contract.AppFile + "\n    permissions: '0644'\n    content: |\n      WSGI_APP='app:app'\n      " +
		cloudinit.NeedsLine(needs) + "\nruncmd:\n  - [" + contract.DeployProgram + "]\n"
}

// tagStack sets the stack tags the builder writes on an AMI of the fake.
func (f *fakeEC2) tagStack(id, provides string) {
	for i := range f.images {
		if aws.ToString(f.images[i].ImageId) == id {
			f.images[i].Tags = append(f.images[i].Tags,
				types.Tag{Key: aws.String(contract.TagSchema), Value: aws.String("1")},
				types.Tag{Key: aws.String(contract.TagProvides), Value: aws.String(provides)})
			return
		}
	}
	panic("no image " + id)
}

// mutating lists the calls of a fake that change AWS.
func mutating(ops []string) []string {
	var out []string
	for _, op := range ops {
		if !strings.HasPrefix(op, "Describe") {
			out = append(out, op)
		}
	}
	return out
}

func releaseConfig(ud, encoding string) map[string]interface{} {
	return map[string]interface{}{
		"launch_template_name": "web",
		"user_data":            ud,
		"user_data_encoding":   encoding,
		"keep_releases":        1,
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
	}
}

func TestFitRefusesAMisfitBeforeAnyChange(t *testing.T) {
	for _, enc := range []string{EncodingRaw, EncodingGzipBase64} {
		t.Run(enc, func(t *testing.T) {
			ud := appPayload(contract.NeedGit, contract.SchemaNeed(1))
			if enc == EncodingGzipBase64 {
				ud = gzipBase64(t, ud)
			}
			h := newHarness(t, releaseConfig(ud, enc), "us-east-1")
			f := h.ec2["us-east-1"]
			f.addTemplate("web", "ami-old")
			f.addImage("ami-new", "2026-01-02T00:00:00.000Z", "shop")
			f.tagStack("ami-new", "aws-requests schema-1")

			_, err := h.run("us-east-1:ami-new")
			want := `check_payload_fits: the payload needs git, which image ami-new in us-east-1 does not provide (its wsgi:stack-provides tag: "aws-requests schema-1"): bake git into the image`
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v, want it to contain %q", err, want)
			}
			if got := f.ops(); !reflect.DeepEqual(got, []string{"DescribeImages"}) {
				t.Errorf("EC2 calls = %v, want only the DescribeImages of the check", got)
			}
			if len(h.as.calls) != 0 {
				t.Errorf("Auto Scaling calls = %v, want none", h.as.calls)
			}
		})
	}
}

func TestFitPassesAndTheReleaseGoesOn(t *testing.T) {
	h := newHarness(t, releaseConfig(appPayload(contract.NeedGit, contract.SchemaNeed(1)), EncodingRaw), "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-old")
	f.addImage("ami-new", "2026-01-02T00:00:00.000Z", "shop")
	f.tagStack("ami-new", "aws-requests git schema-1")
	h.as.groups["web-asg"] = astypes.AutoScalingGroup{LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateId: aws.String(lt.id), Version: aws.String("$Default")}}
	h.as.states = refreshStates(astypes.InstanceRefreshStatusSuccessful)

	if _, err := h.run("us-east-1:ami-new"); err != nil {
		t.Fatal(err)
	}
	if f.count("CreateLaunchTemplateVersion") != 1 || lt.def != 2 {
		t.Errorf("calls %v, default %d: want one new version, now default", f.ops(), lt.def)
	}
	if !strings.Contains(said(h.ui), "us-east-1: ami-new provides what the payload needs (git, schema-1)") {
		t.Errorf("the check's result is not said:\n%s", said(h.ui))
	}
}

func TestFitEveryRegionIsCheckedAndEveryMisfitNamed(t *testing.T) {
	h := newHarness(t, map[string]interface{}{
		"launch_template_name": "web",
		"user_data":            appPayload(contract.NeedAWSRequests, contract.SchemaNeed(1)),
		"user_data_encoding":   EncodingRaw,
	}, "us-east-1", "eu-west-1", "eu-central-1")
	for r, provides := range map[string]string{"us-east-1": "aws-requests git schema-1", "eu-west-1": "git schema-1", "eu-central-1": ""} {
		f := h.ec2[r]
		f.addTemplate("web", "ami-old")
		f.addImage("ami-"+r, "2026-01-02T00:00:00.000Z", "shop")
		if provides != "" {
			f.tagStack("ami-"+r, provides)
		}
	}
	_, err := h.run("us-east-1:ami-us-east-1,eu-west-1:ami-eu-west-1,eu-central-1:ami-eu-central-1")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`the payload needs aws-requests, which image ami-eu-west-1 in eu-west-1 does not provide (its wsgi:stack-provides tag: "git schema-1")`,
		`image ami-eu-central-1 in eu-central-1 has no wsgi:stack-provides tag`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%s\nwant it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "us-east-1 does not") {
		t.Errorf("the fitting region is reported: %s", err)
	}
	for r, f := range h.ec2 {
		if m := mutating(f.ops()); len(m) > 0 {
			t.Errorf("%s: calls that change AWS: %v", r, m)
		}
	}
}

func TestFitSkipped(t *testing.T) {
	cases := []struct {
		name string
		raw  map[string]interface{}
		say  string
	}{
		{"not a wsgi-cloudinit payload", map[string]interface{}{"user_data": payload, "user_data_encoding": "raw"},
			"The user data is not a wsgi-cloudinit payload: no fit check against the images is made"},
		{"check_payload_fits = false", map[string]interface{}{"user_data": appPayload(contract.NeedGit), "user_data_encoding": "raw", "check_payload_fits": false},
			"check_payload_fits = false: the payload is not checked against the images"},
		{"no user data", map[string]interface{}{},
			"No user data given: the new versions keep the user data of source_version, and no fit check is made"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.raw["launch_template_name"] = "web"
			h := newHarness(t, tc.raw, "us-east-1")
			f := h.ec2["us-east-1"]
			f.addTemplate("web", "ami-old")
			f.addImage("ami-new", "2026-01-02T00:00:00.000Z", "shop") // no stack tags: would misfit
			if _, err := h.run("us-east-1:ami-new"); err != nil {
				t.Fatal(err)
			}
			if n := f.count("DescribeImages"); n != 0 {
				t.Errorf("%d DescribeImages calls, want none", n)
			}
			if got := strings.Count(said(h.ui), tc.say); got != 1 {
				t.Errorf("said %d times %q, want once:\n%s", got, tc.say, said(h.ui))
			}
			if f.count("CreateLaunchTemplateVersion") != 1 {
				t.Errorf("calls = %v, want a new version", f.ops())
			}
		})
	}
}

// nullArtifact is what the null builder hands on: no AMI.
func nullArtifact() packersdk.Artifact {
	return &packersdk.MockArtifact{BuilderIdValue: "packer.null", IdValue: "Null"}
}

// TestReleaseWithoutABake: the null builder's artifact carries no AMI, so ami_ids (the
// wsgi-golden-image output) names the image; everything after is as after a bake.
func TestReleaseWithoutABake(t *testing.T) {
	raw := releaseConfig(appPayload(contract.SchemaNeed(1)), EncodingRaw)
	raw["ami_ids"] = map[string]string{"us-east-1": "ami-gold", "eu-west-1": "ami-gold-eu"}
	raw["regions"] = []string{"us-east-1"}
	h := newHarness(t, raw, "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-gold")
	f.addImage("ami-gold", "2026-01-02T00:00:00.000Z", "shop")
	f.tagStack("ami-gold", "aws-requests schema-1")
	f.addImage("ami-older", "2026-01-01T00:00:00.000Z", "shop")
	h.as.groups["web-asg"] = astypes.AutoScalingGroup{LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateId: aws.String(lt.id), Version: aws.String("$Default")}}
	h.as.states = refreshStates(astypes.InstanceRefreshStatusSuccessful)

	a, keep, force, err := h.pp.PostProcess(t.Context(), h.ui, nullArtifact())
	if err != nil {
		t.Fatal(err)
	}
	if !keep || !force {
		t.Error("the input artifact must be kept")
	}
	art := a.(*Artifact)
	if len(art.Versions) != 1 || art.Versions[0].AMI != "ami-gold" || art.Versions[0].Version != 2 || lt.def != 2 {
		t.Fatalf("versions = %+v, default %d; want version 2 with ami-gold, default", art.Versions, lt.def)
	}
	in := h.as.started(t)
	if v := aws.ToString(in.DesiredConfiguration.LaunchTemplate.Version); v != "2" {
		t.Errorf("refresh started with version %q, want the exact version 2", v)
	}
	if !reflect.DeepEqual(art.Deregistered["us-east-1"], []string{"ami-older"}) {
		t.Errorf("deregistered %v, want the older AMI of the family (keep_releases = 1)", art.Deregistered)
	}
	if !strings.Contains(said(h.ui), "The artifact of packer.null carries no AMI: releasing on ami_ids (eu-west-1:ami-gold-eu, us-east-1:ami-gold)") {
		t.Errorf("the source of the AMIs is not said:\n%s", said(h.ui))
	}
	create := f.calls[indexOp(f.ops(), "CreateLaunchTemplateVersion")].In.(*ec2.CreateLaunchTemplateVersionInput)
	if aws.ToString(create.LaunchTemplateData.ImageId) != "ami-gold" {
		t.Errorf("new version launches %s", aws.ToString(create.LaunchTemplateData.ImageId))
	}
}

func TestReleaseSources(t *testing.T) {
	t.Run("no AMI and no ami_ids", func(t *testing.T) {
		h := newHarness(t, map[string]interface{}{"launch_template_name": "web"}, "us-east-1")
		_, _, _, err := h.pp.PostProcess(t.Context(), h.ui, nullArtifact())
		want := `artifact of packer.null: "Null" is not a region:ami-id pair; wsgi-launch-template needs an AMI artifact with an id like us-east-1:ami-0123456789abcdef0, or ami_ids (e.g. data.wsgi-golden-image.NAME.ami_ids) for a release without a bake`
		if err == nil || err.Error() != want {
			t.Errorf("error = %v\nwant %s", err, want)
		}
	})
	t.Run("the artifact's AMIs win", func(t *testing.T) {
		h := newHarness(t, map[string]interface{}{"launch_template_name": "web", "ami_ids": map[string]string{"us-east-1": "ami-gold"}}, "us-east-1")
		lt := h.ec2["us-east-1"].addTemplate("web", "ami-old")
		if _, err := h.run("us-east-1:ami-baked"); err != nil {
			t.Fatal(err)
		}
		if got := aws.ToString(lt.versions[1].LaunchTemplateData.ImageId); got != "ami-baked" {
			t.Errorf("new version launches %s, want the artifact's ami-baked", got)
		}
		if !strings.Contains(said(h.ui), "ami_ids is not used: the artifact of wsgi.builder.ami carries AMIs (us-east-1:ami-baked)") {
			t.Errorf("not said that ami_ids is unused:\n%s", said(h.ui))
		}
	})
	t.Run("a region ami_ids lacks", func(t *testing.T) {
		h := newHarness(t, map[string]interface{}{"launch_template_name": "web", "ami_ids": map[string]string{"us-east-1": "ami-gold"}, "regions": []string{"eu-west-1"}}, "us-east-1")
		_, _, _, err := h.pp.PostProcess(t.Context(), h.ui, nullArtifact())
		if want := "regions: ami_ids has no AMI in eu-west-1 (it has us-east-1)"; err == nil || err.Error() != want {
			t.Errorf("error = %v, want %q", err, want)
		}
	})
}

func indexOp(ops []string, op string) int {
	for i, o := range ops {
		if o == op {
			return i
		}
	}
	return -1
}

// TestReleaseRefreshFailureRestoresDefault: a release without a bake whose refresh fails goes
// back as a bake's does: the default returns to the version before, the new one stays, and
// retention does not run.
func TestReleaseRefreshFailureRestoresDefault(t *testing.T) {
	raw := releaseConfig(appPayload(contract.SchemaNeed(1)), EncodingRaw)
	raw["ami_ids"] = map[string]string{"us-east-1": "ami-gold"}
	h := newHarness(t, raw, "us-east-1")
	f := h.ec2["us-east-1"]
	lt := f.addTemplate("web", "ami-gold")
	f.addImage("ami-gold", "2026-01-02T00:00:00.000Z", "shop")
	f.tagStack("ami-gold", "aws-requests schema-1")
	f.addImage("ami-older", "2026-01-01T00:00:00.000Z", "shop")
	h.as.groups["web-asg"] = astypes.AutoScalingGroup{LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("web")}}
	h.as.states = refreshStates(astypes.InstanceRefreshStatusPending, astypes.InstanceRefreshStatusFailed)

	_, _, _, err := h.pp.PostProcess(t.Context(), h.ui, nullArtifact())
	if !errors.Is(err, ErrRefreshFailed) {
		t.Fatalf("err = %v, want ErrRefreshFailed", err)
	}
	if lt.def != 1 || len(lt.versions) != 2 || lt.versions[1].VersionNumber == nil {
		t.Errorf("default %d with %d versions: want the default back at 1 and version 2 kept", lt.def, len(lt.versions))
	}
	if aws.ToString(h.as.started(t).DesiredConfiguration.LaunchTemplate.Version) != "2" {
		t.Error("the refresh did not pin version 2")
	}
	if n := f.count("DeregisterImage"); n != 0 {
		t.Errorf("retention ran after the failed refresh: %d DeregisterImage calls", n)
	}
}
