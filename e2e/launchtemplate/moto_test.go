//go:build e2e

// Package launchtemplatee2e runs the wsgi-launch-template post-processor
// against moto, with a proxy in front that answers the instance-refresh
// calls moto lacks, and asserts moto's state afterwards.
package launchtemplatee2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/wsgi-ami/packer-plugin-wsgi/cloudinit"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
	"github.com/wsgi-ami/packer-plugin-wsgi/launchtemplate"
)

var (
	moto  *awsproxy.Moto
	proxy *awsproxy.Proxy
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lt-moto-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	moto, err = awsproxy.StartMoto(ctx, filepath.Join(dir, "moto.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer moto.Close()
	proxy, err = awsproxy.Start(moto.URL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer proxy.Close()
	return m.Run()
}

// fresh resets moto and the proxy, and registers refreshes that walk
// through statuses.
func fresh(t testing.TB, statuses []string, reason string) *awsproxy.InstanceRefreshes {
	t.Helper()
	if err := moto.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	proxy.Reset()
	r := &awsproxy.InstanceRefreshes{Statuses: statuses, StatusReason: reason}
	r.Register(proxy)
	return r
}

// access is the block the post-processor and the test's own clients use:
// every service through the proxy.
func access() map[string]interface{} {
	return map[string]interface{}{
		"region":                      "us-east-1",
		"access_key":                  "testing",
		"secret_key":                  "testing",
		"custom_endpoint_ec2":         proxy.URL,
		"custom_endpoint_autoscaling": proxy.URL,
		"aws_polling":                 map[string]interface{}{"delay": "100ms", "timeout": "2m"},
	}
}

type clients struct {
	ec2 *ec2.Client
	as  *autoscaling.Client
}

func newClients(t testing.TB, region string) clients {
	t.Helper()
	a := awscfg.AccessConfig{Region: region, AccessKey: "testing", SecretKey: "testing",
		CustomEndpointEC2: proxy.URL, CustomEndpointAutoScaling: proxy.URL}
	if errs := a.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	cfg, err := a.Config(context.Background(), region)
	if err != nil {
		t.Fatal(err)
	}
	return clients{ec2: a.NewEC2(cfg), as: a.NewAutoScaling(cfg)}
}

// release is one AMI the test made the way the builder does: from an
// instance, tagged with its family.
type release struct {
	AMI, Snapshot string
}

func makeReleases(t testing.TB, c clients, family string, n int) []release {
	t.Helper()
	ctx := context.Background()
	imgs, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, MaxResults: aws.Int32(5)})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("moto's Amazon images: %v", err)
	}
	base := aws.ToString(imgs.Images[0].ImageId)
	var out []release
	for i := 0; i < n; i++ {
		if i > 0 {
			// moto stamps CreationDate to the second; releases need an order.
			time.Sleep(1100 * time.Millisecond)
		}
		ri, err := c.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(base), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), InstanceType: types.InstanceTypeT3Micro})
		if err != nil {
			t.Fatal(err)
		}
		ci, err := c.ec2.CreateImage(ctx, &ec2.CreateImageInput{
			InstanceId: ri.Instances[0].InstanceId,
			Name:       aws.String(fmt.Sprintf("%s-%d", family, i)),
			TagSpecifications: []types.TagSpecification{{
				ResourceType: types.ResourceTypeImage,
				Tags:         []types.Tag{{Key: aws.String(awscfg.TagAMIFamily), Value: aws.String(family)}},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		img := describeImage(t, c, aws.ToString(ci.ImageId))
		if img == nil {
			t.Fatalf("image %s not found after CreateImage", aws.ToString(ci.ImageId))
		}
		r := release{AMI: aws.ToString(ci.ImageId)}
		for _, b := range img.BlockDeviceMappings {
			if b.Ebs != nil && b.Ebs.SnapshotId != nil {
				r.Snapshot = *b.Ebs.SnapshotId
			}
		}
		if r.Snapshot == "" {
			t.Fatalf("image %s has no snapshot", r.AMI)
		}
		out = append(out, r)
	}
	return out
}

func describeImage(t testing.TB, c clients, id string) *types.Image {
	t.Helper()
	out, err := c.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil {
		if strings.Contains(err.Error(), "NotFound") {
			return nil
		}
		t.Fatal(err)
	}
	if len(out.Images) == 0 {
		return nil
	}
	return &out.Images[0]
}

func snapshotExists(t testing.TB, c clients, id string) bool {
	t.Helper()
	out, err := c.ec2.DescribeSnapshots(context.Background(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if err != nil {
		if strings.Contains(err.Error(), "NotFound") {
			return false
		}
		t.Fatal(err)
	}
	return len(out.Snapshots) > 0
}

func createTemplate(t testing.TB, c clients, name, ami string) string {
	t.Helper()
	out, err := c.ec2.CreateLaunchTemplate(context.Background(), &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(name),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro},
	})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.LaunchTemplate.LaunchTemplateId)
}

func template(t testing.TB, c clients, id string) (types.LaunchTemplate, []types.LaunchTemplateVersion) {
	t.Helper()
	ctx := context.Background()
	lt, err := c.ec2.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := c.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	return lt.LaunchTemplates[0], vs.LaunchTemplateVersions
}

func createGroup(t testing.TB, c clients, name, templateID string) {
	t.Helper()
	_, err := c.as.CreateAutoScalingGroup(context.Background(), &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(name),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateId: aws.String(templateID), Version: aws.String("$Default")},
		MinSize:              aws.Int32(1),
		MaxSize:              aws.Int32(2),
		DesiredCapacity:      aws.Int32(1),
		AvailabilityZones:    []string{"us-east-1a"},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func gzipBase64(t testing.TB, doc string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = io.WriteString(zw, doc)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

func gunzipBase64(t testing.TB, s string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("user data is not base64: %v", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("user data is not gzip: %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func postProcess(t testing.TB, raw map[string]interface{}, artifactID string) (*launchtemplate.Artifact, *packersdk.MockUi, error) {
	t.Helper()
	cfg := access()
	for k, v := range raw {
		cfg[k] = v
	}
	pp := &launchtemplate.PostProcessor{}
	if err := pp.Configure(cfg); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	ui := &packersdk.MockUi{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, keep, force, err := pp.PostProcess(ctx, ui, &packersdk.MockArtifact{BuilderIdValue: "wsgi.builder.ami", IdValue: artifactID})
	for _, m := range ui.SayMessages {
		t.Log("ui: " + m.Message)
	}
	if !keep || !force {
		t.Error("the post-processor must keep the input AMIs")
	}
	if err != nil {
		return nil, ui, err
	}
	return a.(*launchtemplate.Artifact), ui, nil
}

const doc = "#cloud-config\nruncmd:\n  - [systemctl, start, wsgi.target]\n"

// TestMotoNewVersionRefreshAndRetention is the whole success path: a new
// default version with the AMI and the exact user data, an instance refresh
// pinned to it and followed to Successful, and keep_releases pruning the
// family while keeping an AMI another template still launches.
func TestMotoNewVersionRefreshAndRetention(t *testing.T) {
	refreshes := fresh(t, nil, "")
	c := newClients(t, "us-east-1")
	rel := makeReleases(t, c, "app", 5) // rel[4] is this build's AMI
	other := makeReleases(t, c, "other", 1)[0]
	ltID := createTemplate(t, c, "web", rel[3].AMI)
	legacyID := createTemplate(t, c, "legacy", rel[0].AMI) // keeps rel[0] in use
	createGroup(t, c, "web-asg", ltID)
	ud := gzipBase64(t, doc)

	raw := map[string]interface{}{
		"launch_template_name": "web",
		"version_description":  "release 5",
		"user_data":            ud,
		"user_data_encoding":   "gzip+base64",
		"keep_releases":        2,
		"instance_refresh": map[string]interface{}{
			"auto_scaling_group_name": "web-asg",
			"min_healthy_percentage":  50,
			"instance_warmup":         "1m",
			"auto_rollback":           true,
		},
	}
	a, ui, err := postProcess(t, raw, "us-east-1:"+rel[4].AMI)
	if err != nil {
		t.Fatal(err)
	}

	lt, versions := template(t, c, ltID)
	if len(versions) != 2 {
		t.Fatalf("template has %d versions, want 2", len(versions))
	}
	v2 := versions[1]
	if aws.ToInt64(v2.VersionNumber) != 2 || aws.ToString(v2.LaunchTemplateData.ImageId) != rel[4].AMI {
		t.Errorf("version 2 = %d with %s, want the new AMI %s", aws.ToInt64(v2.VersionNumber), aws.ToString(v2.LaunchTemplateData.ImageId), rel[4].AMI)
	}
	if got := aws.ToString(v2.LaunchTemplateData.UserData); got != ud {
		t.Errorf("user data stored = %q, want exactly the gzip+base64 given (%q)", got, ud)
	} else if gunzipBase64(t, got) != doc {
		t.Errorf("user data does not decode to the document")
	}
	if aws.ToString(v2.VersionDescription) != "release 5" {
		t.Errorf("description = %q", aws.ToString(v2.VersionDescription))
	}
	if aws.ToInt64(lt.DefaultVersionNumber) != 2 {
		t.Errorf("default version = %d, want 2", aws.ToInt64(lt.DefaultVersionNumber))
	}
	t.Logf("CHECK %s version 2: %s, user data %d base64 chars identical to the input, default 1 -> 2", ltID, rel[4].AMI, len(ud))

	started := refreshes.Started()
	if len(started) != 1 {
		t.Fatalf("%d refreshes started, want 1", len(started))
	}
	p := started[0].Params
	for k, want := range map[string]string{
		"AutoScalingGroupName":                                 "web-asg",
		"DesiredConfiguration.LaunchTemplate.LaunchTemplateId": ltID,
		"DesiredConfiguration.LaunchTemplate.Version":          "2",
		"Preferences.MinHealthyPercentage":                     "50",
		"Preferences.InstanceWarmup":                           "60",
		"Preferences.AutoRollback":                             "true",
		"Strategy":                                             "Rolling",
	} {
		if got := p.Get(k); got != want {
			t.Errorf("StartInstanceRefresh %s = %q, want %q", k, got, want)
		}
	}
	if a.RefreshID != started[0].ID {
		t.Errorf("artifact refresh id %q, started %q", a.RefreshID, started[0].ID)
	}
	var progress []string
	for _, m := range ui.SayMessages {
		if strings.HasPrefix(m.Message, "instance refresh "+started[0].ID+":") {
			progress = append(progress, m.Message)
		}
	}
	if len(progress) != 4 || !strings.Contains(progress[0], "Pending") || !strings.Contains(progress[3], "Successful, 100% complete") {
		t.Errorf("progress lines = %q, want Pending, InProgress (2), Successful", progress)
	}
	t.Logf("CHECK refresh %s pinned to %s version 2, %d progress lines, ended Successful", started[0].ID, ltID, len(progress))

	// keep_releases = 2: rel[4] (this build) and rel[3] stay; rel[2] and
	// rel[1] go with their snapshots; rel[0] is the default of "legacy".
	for i, want := range []bool{true, false, false, true, true} {
		if got := describeImage(t, c, rel[i].AMI) != nil; got != want {
			t.Errorf("release %d (%s) exists = %v, want %v", i, rel[i].AMI, got, want)
		}
		if got := snapshotExists(t, c, rel[i].Snapshot); got != want {
			t.Errorf("release %d snapshot %s exists = %v, want %v", i, rel[i].Snapshot, got, want)
		}
	}
	if describeImage(t, c, other.AMI) == nil || !snapshotExists(t, c, other.Snapshot) {
		t.Error("an AMI of another family was touched")
	}
	if got := a.Deregistered["us-east-1"]; !slices.Equal(got, []string{rel[2].AMI, rel[1].AMI}) {
		t.Errorf("artifact deregistered %v, want %v", got, []string{rel[2].AMI, rel[1].AMI})
	}
	if !strings.Contains(strings.Join(sayings(ui), "\n"), "keeping "+rel[0].AMI+", used by "+legacyID) {
		t.Error("the kept in-use AMI is not reported")
	}
	t.Logf("CHECK keep_releases=2: deregistered %v with snapshots, kept %s (default of %s), other family untouched", a.Deregistered["us-east-1"], rel[0].AMI, legacyID)

	// The same build again: no second version, no second refresh start
	// needed for the assertion on the template.
	proxy.Reset()
	refreshes2 := &awsproxy.InstanceRefreshes{}
	refreshes2.Register(proxy)
	delete(raw, "instance_refresh")
	if _, _, err := postProcess(t, raw, "us-east-1:"+rel[4].AMI); err != nil {
		t.Fatal(err)
	}
	if _, versions := template(t, c, ltID); len(versions) != 2 {
		t.Errorf("a retry made version %d", len(versions))
	}
	if slices.Contains(proxy.Actions(), "ec2:CreateLaunchTemplateVersion") {
		t.Error("the retry called CreateLaunchTemplateVersion")
	}
	t.Log("CHECK retry of the same build: still 2 versions, no CreateLaunchTemplateVersion call")
}

// TestMotoRefreshFails: the refresh ends Failed; the build fails with a
// message saying what to look at, the default goes back, the new version
// stays for inspection and retention does not run.
func TestMotoRefreshFails(t *testing.T) {
	for _, final := range []string{awsproxy.RefreshFailed, awsproxy.RefreshRollbackSuccessful} {
		t.Run(final, func(t *testing.T) {
			fresh(t, []string{awsproxy.RefreshPending, awsproxy.RefreshInProgress, final}, "Instance i-0abc failed ELB health checks")
			c := newClients(t, "us-east-1")
			rel := makeReleases(t, c, "app", 3)
			ltID := createTemplate(t, c, "web", rel[1].AMI)
			createGroup(t, c, "web-asg", ltID)
			_, _, err := postProcess(t, map[string]interface{}{
				"launch_template_id": ltID,
				"user_data":          doc,
				"user_data_encoding": "raw",
				"keep_releases":      1,
				"instance_refresh":   map[string]interface{}{"auto_scaling_group_name": "web-asg"},
			}, "us-east-1:"+rel[2].AMI)
			if !errors.Is(err, launchtemplate.ErrRefreshFailed) {
				t.Fatalf("err = %v, want ErrRefreshFailed", err)
			}
			for _, want := range []string{"ended " + final, "Instance i-0abc failed ELB health checks", "aws autoscaling describe-instance-refreshes --region us-east-1 --auto-scaling-group-name web-asg", "describe-scaling-activities"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q:\n%v", want, err)
				}
			}
			lt, versions := template(t, c, ltID)
			if aws.ToInt64(lt.DefaultVersionNumber) != 1 || len(versions) != 2 {
				t.Errorf("default %d with %d versions, want default 1 and version 2 kept", aws.ToInt64(lt.DefaultVersionNumber), len(versions))
			}
			if got := aws.ToString(versions[1].LaunchTemplateData.UserData); got != base64.StdEncoding.EncodeToString([]byte(doc)) {
				t.Errorf("raw user data stored as %q, want base64 of the document", got)
			}
			for _, r := range rel {
				if describeImage(t, c, r.AMI) == nil {
					t.Errorf("%s deregistered although the refresh failed", r.AMI)
				}
			}
			t.Logf("CHECK refresh %s: build fails with %q; default back to 1, version 2 kept, no AMI removed", final, firstLine(err))
		})
	}
}

// TestMotoCreateInTwoRegionsAndDestroy: a template per region, created
// when missing, each with its own region's AMI; Destroy removes both.
func TestMotoCreateInTwoRegionsAndDestroy(t *testing.T) {
	fresh(t, nil, "")
	east, west := newClients(t, "us-east-1"), newClients(t, "eu-west-1")
	a1 := makeReleases(t, east, "app", 1)[0]
	a2 := makeReleases(t, west, "app", 1)[0]
	a, _, err := postProcess(t, map[string]interface{}{
		"launch_template_name": "web",
		"create_if_missing":    true,
		"tags":                 map[string]string{"team": "web"},
		"user_data":            doc,
		"user_data_encoding":   "raw",
	}, "eu-west-1:"+a2.AMI+",us-east-1:"+a1.AMI)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Versions) != 2 {
		t.Fatalf("artifact versions = %+v", a.Versions)
	}
	for _, tc := range []struct {
		c   clients
		ami string
		v   launchtemplate.TemplateVersion
	}{{west, a2.AMI, a.Versions[0]}, {east, a1.AMI, a.Versions[1]}} {
		lt, versions := template(t, tc.c, tc.v.TemplateID)
		if len(versions) != 1 || aws.ToString(versions[0].LaunchTemplateData.ImageId) != tc.ami {
			t.Errorf("%s: template %s versions %+v, want one with %s", tc.v.Region, tc.v.TemplateID, versions, tc.ami)
		}
		if got := aws.ToString(versions[0].LaunchTemplateData.UserData); got != base64.StdEncoding.EncodeToString([]byte(doc)) {
			t.Errorf("%s: user data %q", tc.v.Region, got)
		}
		tagged := false
		for _, tag := range lt.Tags {
			tagged = tagged || aws.ToString(tag.Key) == "team" && aws.ToString(tag.Value) == "web"
		}
		if !tagged {
			t.Errorf("%s: template tags %+v", tc.v.Region, lt.Tags)
		}
	}
	t.Logf("CHECK created %s in eu-west-1 and %s in us-east-1, each with its region's AMI", a.Versions[0].TemplateID, a.Versions[1].TemplateID)
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []clients{east, west} {
		out, err := c.ec2.DescribeLaunchTemplates(context.Background(), &ec2.DescribeLaunchTemplatesInput{})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.LaunchTemplates) != 0 {
			t.Errorf("Destroy left %d templates", len(out.LaunchTemplates))
		}
	}
	t.Log("CHECK Destroy removed both templates")
}

// TestMotoThrottlingIsRetried: EC2 throttles CreateLaunchTemplateVersion
// twice and the StartInstanceRefresh once; the SDK retries with the same
// client token and the run ends with exactly one new version.
func TestMotoThrottlingIsRetried(t *testing.T) {
	refreshes := fresh(t, nil, "")
	proxy.Intercept(awsproxy.FailNth("ec2", "CreateLaunchTemplateVersion", 1, 2, 503, "RequestLimitExceeded"))
	proxy.Intercept(awsproxy.FailNth("autoscaling", "StartInstanceRefresh", 1, 1, 400, "Throttling"))
	c := newClients(t, "us-east-1")
	rel := makeReleases(t, c, "app", 2)
	ltID := createTemplate(t, c, "web", rel[0].AMI)
	createGroup(t, c, "web-asg", ltID)
	if _, _, err := postProcess(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
	}, "us-east-1:"+rel[1].AMI); err != nil {
		t.Fatal(err)
	}
	var tokens []string
	for _, call := range proxy.Calls() {
		if call.Action == "CreateLaunchTemplateVersion" {
			tokens = append(tokens, call.Form.Get("ClientToken"))
		}
	}
	if len(tokens) != 3 || tokens[0] == "" || tokens[0] != tokens[1] || tokens[1] != tokens[2] {
		t.Errorf("CreateLaunchTemplateVersion attempts carried tokens %q, want 3 attempts with one token", tokens)
	}
	if _, versions := template(t, c, ltID); len(versions) != 2 {
		t.Errorf("%d versions, want 2", len(versions))
	}
	if len(refreshes.Started()) != 1 {
		t.Errorf("%d refreshes started, want 1", len(refreshes.Started()))
	}
	t.Logf("CHECK throttling: CreateLaunchTemplateVersion tried 3 times with one ClientToken, StartInstanceRefresh retried, one version, one refresh")
}

func sayings(ui *packersdk.MockUi) []string {
	var out []string
	for _, m := range ui.SayMessages {
		out = append(out, m.Message)
	}
	return out
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), ";")
	return s
}

// appPayload is a wsgi-cloudinit payload reduced to what the fit check reads: a #cloud-config
// writing contract.AppFile with the needs line. release names the release in the app file so
// that two payloads differ.
func appPayload(release string, needs ...string) string {
	return "#cloud-config\nwrite_files:\n  - path: " + contract.AppFile + "\n    permissions: '0644'\n    content: |\n" +
		"      WSGI_APP='app:app'\n      WSGI_RELEASE='" + release + "'\n      " + cloudinit.NeedsLine(needs) +
		"\nruncmd:\n  - [" + contract.DeployProgram + "]\n"
}

// tagStack gives an AMI the stack tags the wsgi-ami builder writes after a wsgi-stack bake.
func tagStack(t testing.TB, c clients, ami, provides string) {
	t.Helper()
	_, err := c.ec2.CreateTags(context.Background(), &ec2.CreateTagsInput{
		Resources: []string{ami},
		Tags: []types.Tag{
			{Key: aws.String(contract.TagSchema), Value: aws.String(fmt.Sprint(contract.SchemaVersion))},
			{Key: aws.String(contract.TagDigest), Value: aws.String("sha256:" + strings.Repeat("ab", 32))},
			{Key: aws.String(contract.TagProvides), Value: aws.String(provides)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// changesAWS lists the calls the proxy saw that are not reads.
func changesAWS(calls []awsproxy.Call) []string {
	var out []string
	for _, c := range calls {
		if !strings.HasPrefix(c.Action, "Describe") && !strings.HasPrefix(c.Action, "Get") {
			out = append(out, c.Service+":"+c.Action)
		}
	}
	return out
}

// TestMotoPayloadFits: the payload's needs against the AMI's wsgi:stack-provides tag in moto.
// An AMI that lacks git refuses a payload that needs it before any call that changes AWS; an
// AMI that has it takes the release.
func TestMotoPayloadFits(t *testing.T) {
	refreshes := fresh(t, nil, "")
	c := newClients(t, "us-east-1")
	rel := makeReleases(t, c, "shop", 2)
	tagStack(t, c, rel[0].AMI, "aws-requests schema-1")
	tagStack(t, c, rel[1].AMI, "aws-requests git schema-1")
	ltID := createTemplate(t, c, "web", rel[0].AMI)
	createGroup(t, c, "web-asg", ltID)
	raw := map[string]interface{}{
		"launch_template_name": "web",
		"user_data":            gzipBase64(t, appPayload("r1", contract.NeedGit, contract.SchemaNeed(1))),
		"user_data_encoding":   "gzip+base64",
		"keep_releases":        1,
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
	}

	proxy.Reset()
	refreshes.Register(proxy)
	_, _, err := postProcess(t, raw, "us-east-1:"+rel[0].AMI)
	seen := proxy.Actions()
	want := fmt.Sprintf(`check_payload_fits: the payload needs git, which image %s in us-east-1 does not provide (its wsgi:stack-provides tag: "aws-requests schema-1")`, rel[0].AMI)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want it to contain %q", err, want)
	}
	for _, op := range []string{"ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate", "autoscaling:StartInstanceRefresh"} {
		if slices.Contains(seen, op) {
			t.Errorf("the refused release called %s", op)
		}
	}
	if m := changesAWS(proxy.Calls()); len(m) > 0 {
		t.Errorf("the refused release made calls that change AWS: %v", m)
	}
	if _, versions := template(t, c, ltID); len(versions) != 1 {
		t.Errorf("web has %d versions after the refusal, want 1", len(versions))
	}
	t.Logf("CHECK misfit refused after %d calls, all reads (%v): %s", len(seen), seen, firstLine(err))

	proxy.Reset()
	refreshes.Register(proxy)
	a, _, err := postProcess(t, raw, "us-east-1:"+rel[1].AMI)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Versions) != 1 || a.Versions[0].Version != 2 || a.Versions[0].AMI != rel[1].AMI {
		t.Fatalf("versions = %+v, want version 2 with %s", a.Versions, rel[1].AMI)
	}
	if s := refreshes.Started(); len(s) != 1 || s[0].Params.Get("DesiredConfiguration.LaunchTemplate.Version") != "2" {
		t.Errorf("refreshes started: %+v, want one with version 2", s)
	}
	t.Logf("CHECK fitting AMI %s (provides git): version 2, refresh pinned to 2", rel[1].AMI)
}
