package builder

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeConnect stands in for communicator.StepConnect: it hands the build a
// recording communicator instead of dialling the fake instance.
type fakeConnect struct{ comm packersdk.Communicator }

func (f *fakeConnect) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	put(state, keyComm, f.comm)
	return multistep.ActionContinue
}

func (f *fakeConnect) Cleanup(multistep.StateBag) {}

// fullConfig uses every feature that makes something in AWS.
func fullConfig(t *testing.T) *Builder {
	t.Helper()
	b := &Builder{}
	raw := minimal()
	raw["source_ami"] = "resolve:ssm:/aws/service/debian/release/12/latest/amd64"
	raw["ssh_cidrs"] = []string{"198.51.100.7/32"}
	raw["ami_regions"] = []string{"us-east-1", "ap-southeast-2"}
	raw["ami_users"] = []string{"123456789012"}
	raw["snapshot_users"] = []string{"123456789012"}
	// Shared, so encrypted with keys the other account may use.
	raw["root_volume"] = map[string]interface{}{"kms_key_id": "alias/shared-ami"}
	raw["region_kms_key_ids"] = map[string]string{"us-east-1": "alias/shared-ami", "ap-southeast-2": "alias/shared-ami"}
	raw["deprecate_at"] = "720h"
	raw["ami_name"] = "wsgi-app-1"
	raw["aws_polling"] = map[string]interface{}{"delay": "1ms", "timeout": "10s"}
	if _, _, err := b.Prepare(raw); err != nil {
		t.Fatal(err)
	}
	return b
}

type buildResult struct {
	artifact packersdk.Artifact
	err      error
	ui       *recUI
	comm     *scriptComm
}

func runBuild(ctx context.Context, t *testing.T, b *Builder, cloud *fakeCloud) buildResult {
	t.Helper()
	return runBuildWith(ctx, t, b, cloud, newScriptComm())
}

// runBuildWith runs the build with comm as the instance's communicator.
func runBuildWith(ctx context.Context, t *testing.T, b *Builder, cloud *fakeCloud, comm *scriptComm) buildResult {
	t.Helper()
	u := &recUI{Ui: packersdk.TestUi(t)}
	state := b.newState(u, &packersdk.MockHook{}, cloud.regional())
	steps := b.steps("eu-west-1", cloud.client("eu-west-1"), cloud.regional(), &fakeSSM{cloud})
	for i, s := range steps {
		if _, ok := s.(*communicator.StepConnect); ok {
			steps[i] = &fakeConnect{comm: comm}
		}
	}
	(&multistep.BasicRunner{Steps: steps}).Run(ctx, state)
	art, err := b.artifact(ctx, state, "eu-west-1", cloud.regional())
	return buildResult{artifact: art, err: err, ui: u, comm: comm}
}

// perRegion splits the recorded calls by region; within a region the order
// is deterministic even though region copies run in parallel.
func perRegion(calls []string) string {
	by := map[string][]string{}
	for _, c := range calls {
		region, action, _ := strings.Cut(c, " ")
		by[region] = append(by[region], action)
	}
	var b strings.Builder
	for _, r := range slices.Sorted(maps.Keys(by)) {
		fmt.Fprintf(&b, "%s:\n  %s\n", r, strings.Join(by[r], "\n  "))
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Fatalf("%s differs (run with -update if intended):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestBuildSuccess(t *testing.T) {
	cloud := newFakeCloud()
	b := fullConfig(t)
	res := runBuild(context.Background(), t, b, cloud)
	if res.err != nil {
		t.Fatalf("build failed: %v\n%s", res.err, res.ui.text())
	}
	art := res.artifact.(*Artifact)
	if len(art.Amis) != 3 || art.SourceAMI != fakeSourceAMI || art.BuilderId() != BuilderID {
		t.Fatalf("artifact %+v", art)
	}
	if parts := strings.Split(art.Id(), ","); len(parts) != 3 || !strings.HasPrefix(parts[0], "ap-southeast-2:ami-") ||
		!strings.HasPrefix(parts[1], "eu-west-1:ami-") || !strings.HasPrefix(parts[2], "us-east-1:ami-") {
		t.Fatalf("artifact id %q", art.Id())
	}
	hcp := art.State(registryimage.ArtifactStateURI).([]*registryimage.Image)
	if len(hcp) != 3 || hcp[1].ProviderName != "aws" || hcp[1].ProviderRegion != "eu-west-1" || hcp[1].SourceImageID != fakeSourceAMI {
		t.Fatalf("registry images %+v", hcp[1])
	}
	if gd, _ := art.State("generated_data").(map[string]interface{}); gd["SourceAMIName"] != "debian-12-amd64-20250101" || gd["InstanceType"] != "t3.small" {
		t.Fatalf("generated data %v", gd)
	}
	if got := res.comm.commands(); len(got) != 2 || got[0] != cloudInitWaitCommand || got[1] != stackReadCommand {
		t.Fatalf("commands on the instance: %q; want the cloud-init wait, then the stack read", got)
	}
	if gd, _ := art.State("generated_data").(map[string]interface{}); gd[GeneratedCloudInitDone] != "true" {
		t.Fatalf("generated %s = %v after the wait", GeneratedCloudInitDone, gd[GeneratedCloudInitDone])
	}
	// The AMI and every copy carry the stack tags; so do the registry labels.
	wantStack, err := contract.Tags([]byte(testStackFile))
	if err != nil {
		t.Fatal(err)
	}
	for region, id := range art.Amis {
		img := cloud.region(region).images[id]
		for _, sn := range snapshotIDs(*img) {
			if p := cloud.region(region).snapPerms[sn]; len(p) != 1 || aws.ToString(p[0].UserId) != "123456789012" {
				t.Errorf("%s snapshot %s create-volume permissions %+v (snapshot_users)", region, sn, p)
			}
		}
		for k, v := range wantStack {
			if !hasTag(img.Tags, k, v) {
				t.Errorf("%s %s: no tag %s=%s in %v", region, id, k, v, img.Tags)
			}
		}
	}
	if l := hcp[0].Labels; l["stack_digest"] != wantStack[contract.TagDigest] || l["stack_schema"] != "1" || l["stack_provides"] != "aws-requests git schema-1" {
		t.Errorf("registry labels %v", l)
	}
	// Only the AMIs and their snapshots stay.
	left := cloud.leftovers()
	if len(left) != 6 {
		t.Fatalf("leftovers %v", left)
	}
	for _, l := range left {
		if !strings.Contains(l, " image ") && !strings.Contains(l, " snapshot ") {
			t.Errorf("left behind: %s", l)
		}
	}
	golden(t, "build_calls.golden", perRegion(cloud.Calls()))

	// Destroy removes the artifact everywhere.
	if err := art.Destroy(); err != nil {
		t.Fatal(err)
	}
	if left := cloud.leftovers(); len(left) != 0 {
		t.Fatalf("after Destroy: %v", left)
	}
}

// faultPoint is the n-th call of an action in a region.
type faultPoint struct {
	region, action string
	n              int
}

func (f faultPoint) String() string { return fmt.Sprintf("%s %s #%d", f.region, f.action, f.n) }

// cleanupActions are the calls Cleanup makes; a failure there cannot be
// undone by the build, so it must be reported for removal by hand.
var cleanupActions = map[string]bool{"TerminateInstances": true, "DeleteSecurityGroup": true, "DeleteKeyPair": true}

func faultPoints(t *testing.T) []faultPoint {
	cloud := newFakeCloud()
	if res := runBuild(context.Background(), t, fullConfig(t), cloud); res.err != nil {
		t.Fatal(res.err)
	}
	counts := map[string]int{}
	var points []faultPoint
	for _, c := range cloud.Calls() {
		counts[c]++
		region, action, _ := strings.Cut(c, " ")
		points = append(points, faultPoint{region, action, counts[c]})
	}
	sort.SliceStable(points, func(i, j int) bool { return points[i].String() < points[j].String() })
	return points
}

// TestBuildFaultAtEveryCall fails each call of a successful build in turn
// and checks that the build fails and leaves nothing behind.
func TestBuildFaultAtEveryCall(t *testing.T) {
	for _, fp := range faultPoints(t) {
		t.Run(fp.String(), func(t *testing.T) {
			cloud := newFakeCloud()
			cloud.fail = func(region, action string, n int) error {
				if region == fp.region && action == fp.action && n == fp.n {
					return apiError("InternalError")
				}
				return nil
			}
			res := runBuild(context.Background(), t, fullConfig(t), cloud)
			left := cloud.leftovers()
			if cleanupActions[fp.action] {
				// The build made its AMIs; the resource whose delete failed is
				// named for removal by hand, and nothing else is left.
				if !strings.Contains(res.ui.text(), "by hand") {
					t.Fatalf("failed cleanup not reported:\n%s", res.ui.text())
				}
				for _, l := range left {
					if strings.Contains(l, " image ") || strings.Contains(l, " snapshot ") {
						continue
					}
					// A running instance also holds its security group.
					if fp.action == "TerminateInstances" && (strings.Contains(l, " instance ") || strings.Contains(l, " security group ")) ||
						fp.action == "DeleteKeyPair" && strings.Contains(l, " key pair ") ||
						fp.action == "DeleteSecurityGroup" && strings.Contains(l, " security group ") {
						continue
					}
					t.Errorf("left behind: %s", l)
				}
				return
			}
			if fp.region != "eu-west-1" && fp.action == "DescribeImages" && fp.n > 1 && res.err == nil {
				t.Fatalf("build succeeded despite a failed call")
			}
			if res.err == nil {
				// A failed call that the build does not need (e.g. a
				// waiter's describe in a cleanup) may leave it successful.
				if len(left) != 6 {
					t.Fatalf("successful build left %v", left)
				}
				return
			}
			if !strings.Contains(res.err.Error(), "InternalError") {
				t.Errorf("error does not carry the cause: %v", res.err)
			}
			if len(left) != 0 {
				t.Fatalf("build failed (%v) and left:\n  %s", res.err, strings.Join(left, "\n  "))
			}
		})
	}
}

// TestBuildCancelAtEveryCall cancels the build (Ctrl-C) right after each
// call of a successful build in turn.
func TestBuildCancelAtEveryCall(t *testing.T) {
	for _, fp := range faultPoints(t) {
		t.Run(fp.String(), func(t *testing.T) {
			cloud := newFakeCloud()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cloud.after = func(region, action string, n int) {
				if region == fp.region && action == fp.action && n == fp.n {
					cancel()
				}
			}
			res := runBuild(ctx, t, fullConfig(t), cloud)
			left := cloud.leftovers()
			if res.err == nil {
				t.Fatalf("cancelled build succeeded; left %v", left)
			}
			if len(left) != 0 {
				t.Fatalf("cancelled build (%v) left:\n  %s", res.err, strings.Join(left, "\n  "))
			}
		})
	}
}

// TestCleanupOrder fails the last step and checks that the cleanups run in
// reverse: region copies, the AMI, the instance (waited until terminated),
// then the security group and the key pair.
func TestCleanupOrder(t *testing.T) {
	cloud := newFakeCloud()
	cloud.fail = func(region, action string, _ int) error {
		if action == "EnableImageDeprecation" {
			return apiError("UnauthorizedOperation")
		}
		return nil
	}
	res := runBuild(context.Background(), t, fullConfig(t), cloud)
	if res.err == nil || !strings.Contains(res.err.Error(), "deprecate_at:") {
		t.Fatalf("want a deprecate_at error, got %v", res.err)
	}
	all := cloud.Calls()
	first := map[string]int{}
	for i, c := range all {
		if _, ok := first[c]; !ok {
			first[c] = i
		}
	}
	order := []string{
		"us-east-1 DeregisterImage", "eu-west-1 DeregisterImage", "eu-west-1 DeleteSnapshot",
		"eu-west-1 TerminateInstances", "eu-west-1 DeleteSecurityGroup", "eu-west-1 DeleteKeyPair",
	}
	for i := 1; i < len(order); i++ {
		a, okA := first[order[i-1]]
		b, okB := first[order[i]]
		if !okA || !okB || a > b {
			t.Fatalf("%q (at %d, %v) must come before %q (at %d, %v)\ncalls:\n%s", order[i-1], a, okA, order[i], b, okB, strings.Join(all, "\n"))
		}
	}
	// The instance is gone before its security group is deleted.
	term := first["eu-west-1 TerminateInstances"]
	sg := first["eu-west-1 DeleteSecurityGroup"]
	if !slices.Contains(all[term:sg], "eu-west-1 DescribeInstances") {
		t.Fatal("no wait for termination before deleting the security group")
	}
	if left := cloud.leftovers(); len(left) != 0 {
		t.Fatalf("leftovers %v", left)
	}
}

func TestWaitForReportsProgress(t *testing.T) {
	old := progressEvery
	progressEvery = 5 * time.Millisecond
	defer func() { progressEvery = old }()
	u := &recUI{}
	err := waitFor(context.Background(), u, "something", func(context.Context) error {
		time.Sleep(30 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	text := u.text()
	if !strings.HasPrefix(text, "Waiting for something...") || !strings.Contains(text, "Still waiting for something (") ||
		!strings.Contains(text, "Something after ") {
		t.Fatalf("progress lines:\n%s", text)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = waitFor(ctx, u, "nothing", func(ctx context.Context) error { return ctx.Err() })
	if err == nil || !strings.Contains(err.Error(), "waiting for nothing after") || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("cancelled wait: %v", err)
	}
}

// TestNoTerminationWaitWithoutGroup: with no temporary security group to
// delete after it (communicator "none") and no Spot request, the build does
// not poll for the instance's termination; nothing is left.
func TestNoTerminationWaitWithoutGroup(t *testing.T) {
	b := &Builder{}
	raw := minimal()
	raw["communicator"] = "none"
	raw["ami_name"] = "wsgi-app-1"
	raw["aws_polling"] = map[string]interface{}{"delay": "1ms", "timeout": "10s"}
	if _, _, err := b.Prepare(raw); err != nil {
		t.Fatal(err)
	}
	cloud := newFakeCloud()
	res := runBuild(context.Background(), t, b, cloud)
	if res.err != nil {
		t.Fatal(res.err)
	}
	calls := cloud.Calls()
	if calls[len(calls)-1] != "eu-west-1 TerminateInstances" {
		t.Fatalf("last call %q, want TerminateInstances: %v", calls[len(calls)-1], calls)
	}
	for _, l := range cloud.leftovers() {
		if !strings.Contains(l, " image ") && !strings.Contains(l, " snapshot ") {
			t.Errorf("left behind: %s", l)
		}
	}
}
