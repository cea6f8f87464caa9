//go:build e2e

package builder_test

// End to end: the real packer binary runs the wsgi-ami builder against
// moto on loopback, through a proxy that counts EC2 calls and injects
// faults and Ctrl-C. After every run, moto is asked what is left.
//
//	go test -tags e2e -count=1 -v -run TestMoto ./builder/
//
// Needs python3 with moto (python3 -m moto.server) and a packer binary:
// $PACKER, bin/packer, /tmp/packer-bin, or one built from the module cache.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"golang.org/x/crypto/ssh"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

const (
	buildRegion = "eu-west-1"
	copyRegion  = "us-east-1"
	shareWith   = "210987654321"
	sourceParam = "/wsgi-e2e/source-ami"
)

// env is what every run shares: moto, the proxy, packer with the plugin.
type env struct {
	t       *testing.T
	repo    string
	packer  string
	workDir string
	moto    string // moto's base URL
	motoSrv *awsproxy.Moto
	// sessions answers StartSession and TerminateSession (moto has
	// neither); standin is the folder with the stand-in
	// session-manager-plugin, which records its pid in standinPids.
	sessions    *awsproxy.Sessions
	standin     string
	standinPids string
	proxy       *faultProxy
	sshd        *instanceSSH
	direct      *awscfg.AccessConfig // straight to moto, for seeding and checks
	// baseline holds "region snapshot-id" of moto's own snapshots after a
	// reset, so that any other snapshot counts as left behind.
	baseline map[string]bool
}

func TestMoto(t *testing.T) {
	e := setup(t)

	for _, variant := range []struct {
		name           string
		ssh, spot, ssm bool
	}{{"none", false, false, false}, {"ssh", true, false, false}, {"ssh/spot", true, true, false}, {"ssh/session_manager", true, false, true}} {
		t.Run("build/communicator="+variant.name, func(t *testing.T) {
			e.reset()
			start := time.Now()
			out, err := e.build(t, runOpts{ssh: variant.ssh, spot: variant.spot, ssm: variant.ssm})
			wall := time.Since(start)
			if err != nil {
				t.Fatalf("packer build failed: %v\n%s", err, out)
			}
			calls := e.proxy.ec2Calls()
			if variant.ssm {
				e.assertSession(t, calls, out)
			}
			e.assertArtifact(t, out, variant.ssh)
			e.assertInstance(t, calls, variant.spot, out)
			if left := e.leftovers(t, true); len(left) > 0 {
				t.Fatalf("left behind after a successful build:\n  %s", strings.Join(left, "\n  "))
			}
			if variant.ssh {
				if cmds := e.sshd.commands(); len(cmds) != 2 || cmds[0] != "cloud-init status --wait" || !strings.Contains(cmds[1], "cat "+contract.StackFile) {
					t.Fatalf("commands run over SSH with the imported key: %q", cmds)
				}
			} else if !strings.Contains(out, "the post-processor cannot check a payload against it") {
				t.Errorf("no line about the missing stack tags:\n%s", out)
			}
			t.Logf("one build against moto (communicator %s): %d EC2 and SSM-session API calls (%s), %s wall time (packer start to exit)",
				variant.name, len(calls), summarize(calls), wall.Round(10*time.Millisecond))
		})
	}

	t.Run("faults", func(t *testing.T) {
		e.reset()
		if _, err := e.build(t, runOpts{ssh: true}); err != nil {
			t.Fatal(err)
		}
		reference := e.proxy.ec2Calls()
		actions := distinct(reference)
		_, lastAction, _ := strings.Cut(reference[len(reference)-1], " ")
		if only := os.Getenv("E2E_FAULT_ACTIONS"); only != "" {
			// e.g. E2E_FAULT_ACTIONS=CreateImage,CopyImage to rerun a few rows
			var keep []string
			for _, a := range actions {
				if strings.Contains(","+only+",", ","+a+",") {
					keep = append(keep, a)
				}
			}
			actions = keep
		}
		var rows []row
		for _, action := range actions {
			rows = append(rows, e.faultRun(t, fault{action: action, n: 1, code: "RequestLimitExceeded", status: 503}, true))
			rows = append(rows, e.faultRun(t, fault{action: action, n: 1, code: "InternalError", status: 500}, true))
			rows = append(rows, e.faultRun(t, fault{action: action, n: 1, code: "UnauthorizedOperation", status: 403}, false))
			rows = append(rows, e.interruptRun(t, action, action == lastAction))
		}
		rows = append(rows, e.faultRun(t, fault{action: "RunInstances", n: 1, code: "InsufficientInstanceCapacity", status: 500, times: 1}, true))
		rows = append(rows, e.faultRun(t, fault{action: "RunInstances", n: 1, code: "InsufficientInstanceCapacity", status: 500, times: 2}, false))
		// A Spot build instance: no capacity for the first type, then the
		// image calls of a running instance denied or interrupted.
		rows = append(rows, e.faultRun(t, fault{action: "RunInstances", n: 1, code: "InsufficientInstanceCapacity", status: 500, times: 1, spot: true}, true))
		rows = append(rows, e.faultRun(t, fault{action: "CreateImage", n: 1, code: "UnauthorizedOperation", status: 403, spot: true}, false))
		rows = append(rows, e.interruptRunWith(t, "RunInstances", false, true))
		rows = append(rows, e.interruptRunWith(t, "CreateImage", false, true))
		// Session Manager: the session refused, and Ctrl-C while the
		// stand-in plugin is starting and while it carries SSH.
		rows = append(rows, e.faultRun(t, fault{action: "StartSession", n: 1, code: "AccessDeniedException", status: 400, ssm: true}, false))
		rows = append(rows, e.lostSessionRun(t))
		rows = append(rows, e.interruptRunOpts(t, "StartSession", runOpts{ssh: true, ssm: true}))
		rows = append(rows, e.interruptRunOpts(t, "StopInstances", runOpts{ssh: true, ssm: true}))
		printTable(t, rows)
		for _, r := range rows {
			if r.bad != "" {
				t.Errorf("%s / %s: %s", r.point, r.fault, r.bad)
			}
		}
	})
}

// --- set-up ---------------------------------------------------------------

func setup(t *testing.T) *env {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, repo: repo, workDir: t.TempDir()}
	e.packer = findPacker(t, repo)
	e.installPlugin(t)
	e.motoSrv = startMoto(t)
	e.moto = e.motoSrv.URL
	e.sshd = newInstanceSSH(t)
	e.proxy = newFaultProxy(t, e.moto, e.sshd)
	e.sessions = &awsproxy.Sessions{}
	e.sessions.Register(e.proxy.Proxy)
	e.standin, e.standinPids = buildStandinPlugin(t)
	e.direct = &awscfg.AccessConfig{
		Region: buildRegion, AccessKey: "test", SecretKey: "test",
		CustomEndpointEC2: e.moto, CustomEndpointSSM: e.moto, CustomEndpointSTS: e.moto, MaxRetries: 2,
	}
	if errs := e.direct.Prepare(); len(errs) > 0 {
		t.Fatal(errs)
	}
	return e
}

func findPacker(t *testing.T, repo string) string {
	for _, p := range []string{os.Getenv("PACKER"), filepath.Join(repo, "bin", "packer"), "/tmp/packer-bin"} {
		if p == "" {
			continue
		}
		if out, err := exec.Command(p, "version").Output(); err == nil && strings.HasPrefix(string(out), "Packer v1.12.0") {
			return p
		}
	}
	// Build the pinned Packer from the module cache.
	gomod, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(strings.TrimSpace(string(gomod)), "github.com/hashicorp/packer@v1.12.0")
	dir := filepath.Join(t.TempDir(), "packer-src")
	run(t, "", "cp", "-r", src, dir)
	run(t, "", "chmod", "-R", "u+w", dir)
	bin := filepath.Join(t.TempDir(), "packer")
	run(t, dir, "go", "build", "-o", bin, ".")
	return bin
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// installPlugin builds the repository's plugin binary and installs it with
// `packer plugins install --path`.
func (e *env) installPlugin(t *testing.T) {
	bin := filepath.Join(e.workDir, "packer-plugin-wsgi")
	run(t, e.repo, "go", "build", "-o", bin, ".")
	if desc := run(t, "", bin, "describe"); !strings.Contains(desc, `"ami"`) {
		t.Fatalf("the plugin does not register the ami builder: %s", desc)
	}
	out, err := e.packerCmd(context.Background(), "plugins", "install", "--path", bin, "github.com/wsgi-ami/wsgi").CombinedOutput()
	if err != nil {
		t.Fatalf("packer plugins install: %v\n%s", err, out)
	}
}

func (e *env) packerCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.packer, args...)
	cmd.Dir = e.workDir
	cmd.Env = append(os.Environ(),
		"PACKER_CONFIG_DIR="+filepath.Join(e.workDir, "packer"),
		"PACKER_PLUGIN_PATH="+filepath.Join(e.workDir, "packer", "plugins"),
		"PACKER_CHECKPOINT_DISABLE=1",
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	)
	return cmd
}

func startMoto(t *testing.T) *awsproxy.Moto {
	m, err := awsproxy.StartMoto(context.Background(), filepath.Join(t.TempDir(), "moto.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// sourceAMI is moto's Amazon Linux 2023 image in the build region.
func (e *env) sourceAMI(t *testing.T) string {
	ctx := context.Background()
	c, err := e.direct.EC2(ctx, buildRegion)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, Filters: []ec2types.Filter{
		{Name: aws.String("name"), Values: []string{"al2023-ami-2023*-x86_64"}},
	}})
	if err != nil || len(out.Images) == 0 {
		t.Fatalf("no Amazon Linux 2023 image in moto: %v", err)
	}
	return aws.ToString(out.Images[0].ImageId)
}

// reset clears moto and seeds the source AMI alias.
func (e *env) reset() {
	t := e.t
	resp, err := http.Post(e.moto+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ctx := context.Background()
	source := e.sourceAMI(t)
	s, err := e.direct.SSM(ctx, buildRegion)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String(sourceParam), Value: aws.String(source), Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true),
	}); err != nil {
		t.Fatal(err)
	}
	e.baseline = map[string]bool{}
	for _, region := range []string{buildRegion, copyRegion} {
		rc, err := e.direct.EC2(ctx, region)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := e.snapshots(ctx, rc)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			e.baseline[region+" "+id] = true
		}
	}
	// Session Manager builds name it; moto's RunInstances wants it to exist.
	if err := e.motoSrv.CreateInstanceProfile(ctx, ssmProfile); err != nil {
		t.Fatal(err)
	}
	e.proxy.reset()
	e.sshd.reset()
	e.sessions.Reset()
	if err := os.WriteFile(e.standinPids, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// --- one packer build -----------------------------------------------------

type runOpts struct {
	interruptAfter string // send SIGINT to packer after the first call of this action
	ssh            bool   // use the SSH communicator against the test's SSH endpoint
	spot           bool   // a Spot build instance (spot_price, spot_instance_types)
	ssm            bool   // SSH through Session Manager and the stand-in plugin
}

const template = `
source "wsgi-ami" "e2e" {
  region                  = %q
  custom_endpoint_ec2     = %q
  custom_endpoint_ssm     = %q
  custom_endpoint_sts     = %q
  source_ami              = "resolve:ssm:%s"
%s
%s
  associate_public_ip_address = true
  metadata_options {
    http_put_response_hop_limit = 2
  }
  ami_name                = "wsgi-e2e-{{timestamp}}"
  ami_description         = "wsgi e2e from {{ .SourceAMI }}"
  ami_family              = "wsgi-e2e"
  ami_regions             = [%q]
  ami_users               = [%q]
  snapshot_users          = [%q]
  # Shared, so encrypted with keys the other account may use (Prepare refuses the default key).
  region_kms_key_ids      = { %q = "alias/e2e-shared" }
  root_volume {
    kms_key_id = "alias/e2e-shared"
  }
  launch_block_device_mappings {
    device_name = "/dev/sdf"
    volume_size = 1
  }
  deprecate_at            = "4320h"
  tags                    = { App = "demo" }
  snapshot_tags           = { Backup = "none" }
  run_tags                = { Purpose = "e2e" }
  aws_polling {
    delay   = "200ms"
    timeout = "2m"
  }
}

build {
  sources = ["source.wsgi-ami.e2e"]
}
`

func (e *env) build(t *testing.T, o runOpts) (string, error) {
	t.Helper()
	comm := `  communicator            = "none"`
	if o.ssm {
		comm = fmt.Sprintf(`  communicator            = "ssh"
  ssh_username            = "admin"
  ssh_timeout             = "30s"
  ssh_interface           = "session_manager"
  iam_instance_profile    = %q`, ssmProfile)
	} else if o.ssh {
		comm = fmt.Sprintf(`  communicator            = "ssh"
  ssh_username            = "admin"
  ssh_host                = "127.0.0.1"
  ssh_port                = %d
  ssh_timeout             = "30s"
  ssh_cidrs               = ["127.0.0.1/32"]`, e.sshd.port)
	}
	instance := `  instance_type           = "t3.micro"
  fallback_instance_types = ["t3a.micro"]`
	if o.spot {
		instance = `  spot_price              = "auto"
  spot_instance_types     = ["t3.micro", "t3a.micro"]`
	}
	src := fmt.Sprintf(template, buildRegion, e.proxy.URL, e.proxy.URL, e.proxy.URL, sourceParam, instance, comm, copyRegion, shareWith, shareWith, copyRegion)
	return e.runTemplate(t, src, o)
}

// runTemplate runs packer build on src, with env added to packer's
// environment, interrupting it as o says.
func (e *env) runTemplate(t *testing.T, src string, o runOpts, env ...string) (string, error) {
	t.Helper()
	path := filepath.Join(e.workDir, "e2e.pkr.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := e.packerCmd(ctx, "build", "-color=false", path)
	cmd.Env = append(cmd.Env, "PATH="+e.standin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"WSGI_E2E_SSM_FORWARD="+net.JoinHostPort("127.0.0.1", fmt.Sprint(e.sshd.port)), "WSGI_E2E_SSM_PIDS="+e.standinPids)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so an interrupt reaches packer and its
	// plugins as Ctrl-C in a terminal does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.proxy.onCall(func(action string, n int) {
		if o.interruptAfter == action && n == 1 {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		}
	})
	err := cmd.Wait()
	e.proxy.onCall(nil)
	return out.String(), err
}

// --- assertions against moto ----------------------------------------------

var amiLine = regexp.MustCompile(`(?m)^([a-z]+-[a-z]+-\d): (ami-[0-9a-f]+)$`)

// e2eStackFile is the build instance's /etc/wsgi-stack.json.
const e2eStackFile = `{"schema":1,"provides":["schema-1","git","aws-requests"],"app_name":"e2e","sockets":2}` + "\n"

// assertArtifact checks both AMIs in moto; withStack: they carry the stack
// tags of e2eStackFile (read over SSH), else none.
func (e *env) assertArtifact(t *testing.T, out string, withStack bool) {
	t.Helper()
	found := map[string]string{}
	for _, m := range amiLine.FindAllStringSubmatch(out, -1) {
		found[m[1]] = m[2]
	}
	if len(found) != 2 || found[buildRegion] == "" || found[copyRegion] == "" {
		t.Fatalf("artifact does not list both regions:\n%s", out)
	}
	ctx := context.Background()
	for region, id := range found {
		c, err := e.direct.EC2(ctx, region)
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		if err != nil || len(imgs.Images) != 1 {
			t.Fatalf("%s: %s not in moto: %v", region, id, err)
		}
		img := imgs.Images[0]
		tags := map[string]string{}
		for _, tg := range img.Tags {
			tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		if tags["App"] != "demo" || tags[awscfg.TagAMIFamily] != "wsgi-e2e" || tags[awscfg.TagBuilder] != "wsgi-ami" || tags[awscfg.TagBuildID] == "" {
			t.Errorf("%s: %s tags %v", region, id, tags)
		}
		wantStack, err := contract.Tags([]byte(e2eStackFile))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range wantStack {
			got, ok := tags[k]
			if withStack && got != v {
				t.Errorf("%s: %s tag %s = %q, want %q", region, id, k, got, v)
			}
			if !withStack && ok {
				t.Errorf("%s: %s has %s = %q without a stack file", region, id, k, got)
			}
		}
		if !strings.HasPrefix(aws.ToString(img.Description), "wsgi e2e from ami-") {
			t.Errorf("%s: description %q", region, aws.ToString(img.Description))
		}
		perm, err := c.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(id), Attribute: ec2types.ImageAttributeNameLaunchPermission})
		if err != nil {
			t.Fatal(err)
		}
		shared := false
		for _, p := range perm.LaunchPermissions {
			shared = shared || aws.ToString(p.UserId) == shareWith
		}
		if !shared {
			t.Errorf("%s: %s not shared with %s: %+v", region, id, shareWith, perm.LaunchPermissions)
		}
		snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{
			{Name: aws.String("tag:" + awscfg.TagAMIFamily), Values: []string{"wsgi-e2e"}},
		}})
		if err != nil || len(snaps.Snapshots) == 0 {
			t.Errorf("%s: no snapshot tagged with the family: %v", region, err)
		}
		for _, sn := range snaps.Snapshots {
			attr, err := c.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: sn.SnapshotId, Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
			if err != nil {
				t.Fatal(err)
			}
			shared := false
			for _, p := range attr.CreateVolumePermissions {
				shared = shared || aws.ToString(p.UserId) == shareWith
			}
			if !shared {
				t.Errorf("%s: snapshot %s not shared with %s (snapshot_users): %+v", region, aws.ToString(sn.SnapshotId), shareWith, attr.CreateVolumePermissions)
			}
		}
	}
}

// assertInstance checks the build instance as moto keeps it after
// termination: metadata_options reached it, and a Spot one was never stopped.
func (e *env) assertInstance(t *testing.T, calls []string, spot bool, out string) {
	t.Helper()
	ctx := context.Background()
	c, err := e.direct.EC2(ctx, buildRegion)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil || len(inst.Reservations) != 1 || len(inst.Reservations[0].Instances) != 1 {
		t.Fatalf("want the one build instance in moto: %v %+v", err, inst)
	}
	i := inst.Reservations[0].Instances[0]
	if i.MetadataOptions == nil || aws.ToInt32(i.MetadataOptions.HttpPutResponseHopLimit) != 2 || i.MetadataOptions.HttpTokens != ec2types.HttpTokensStateRequired {
		t.Errorf("metadata options of %s: %+v", aws.ToString(i.InstanceId), i.MetadataOptions)
	}
	stopped := false
	for _, c := range calls {
		stopped = stopped || strings.HasSuffix(c, " StopInstances")
	}
	if spot && (stopped || !strings.Contains(out, "is not stopped (a one-time Spot instance cannot be)")) {
		t.Errorf("the Spot instance was stopped (%v), or the build did not say why not:\n%s", stopped, out)
	}
	if !spot && !stopped {
		t.Error("the on-demand instance was not stopped before imaging")
	}
}

// leftovers lists what the build made and left in either region: instances
// not terminated, key pairs, security groups other than "default", and,
// unless keepAMIs, the account's AMIs and snapshots.
func (e *env) leftovers(t *testing.T, keepAMIs bool) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	for _, region := range []string{buildRegion, copyRegion} {
		c, err := e.direct.EC2(ctx, region)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range inst.Reservations {
			for _, i := range r.Instances {
				if i.State.Name != ec2types.InstanceStateNameTerminated {
					left = append(left, fmt.Sprintf("%s instance %s (%s)", region, aws.ToString(i.InstanceId), i.State.Name))
				}
			}
		}
		vols, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vols.Volumes {
			if v.State != ec2types.VolumeStateDeleted && v.State != ec2types.VolumeStateDeleting {
				left = append(left, fmt.Sprintf("%s volume %s (%s)", region, aws.ToString(v.VolumeId), v.State))
			}
		}
		kps, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kps.KeyPairs {
			left = append(left, fmt.Sprintf("%s key pair %s", region, aws.ToString(k.KeyName)))
		}
		sgs, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range sgs.SecurityGroups {
			if aws.ToString(g.GroupName) != "default" {
				left = append(left, fmt.Sprintf("%s security group %s", region, aws.ToString(g.GroupId)))
			}
		}
		if keepAMIs {
			continue
		}
		imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range imgs.Images {
			left = append(left, fmt.Sprintf("%s AMI %s", region, aws.ToString(i.ImageId)))
		}
		snaps, err := e.snapshots(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range snaps {
			if !e.baseline[region+" "+id] {
				left = append(left, fmt.Sprintf("%s snapshot %s", region, id))
			}
		}
	}
	sort.Strings(left)
	for _, id := range e.sessions.Open() {
		left = append(left, "ssm session "+id+" not terminated")
	}
	left = append(left, e.livePlugins(t)...)
	return dedupe(left)
}

func dedupe(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// snapshots lists the account's snapshots in one region.
func (e *env) snapshots(ctx context.Context, c *ec2.Client) ([]string, error) {
	out, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range out.Snapshots {
		ids = append(ids, aws.ToString(s.SnapshotId))
	}
	return ids, nil
}

// --- fault runs ------------------------------------------------------------

type fault struct {
	action string
	n      int // the n-th call of action fails
	times  int // how many calls fail from there (default 1)
	code   string
	status int
	spot   bool // with a Spot build instance
	ssm    bool // through Session Manager
}

type row struct {
	point, fault, outcome, leftovers, bad string
}

// faultRun fails one call (or a few) and checks the outcome: wantOK says the
// build must still succeed (retried or fallen back); otherwise it must fail
// and leave nothing.
func (e *env) faultRun(t *testing.T, f fault, wantOK bool) row {
	e.reset()
	e.proxy.setFault(&f)
	out, err := e.build(t, runOpts{ssh: true, spot: f.spot, ssm: f.ssm})
	e.proxy.setFault(nil)
	r := row{point: f.action, fault: f.code}
	if f.ssm {
		r.point += " (SSM)"
	}
	if f.times > 1 {
		r.fault = fmt.Sprintf("%s x%d", f.code, f.times)
	}
	if f.spot {
		r.point += " (Spot)"
	}
	hit := e.proxy.faultsInjected()
	if hit == 0 {
		r.bad = "fault never injected"
	}
	ok := err == nil
	r.outcome = outcome(ok, out)
	left := e.leftovers(t, ok)
	r.leftovers = fmt.Sprint(len(left))
	if len(left) > 0 {
		r.leftovers += ": " + strings.Join(left, "; ")
	}
	switch {
	case cleanupAction(f.action) && !wantOK && len(left) > 0:
		// The denied call was the cleanup itself: the build must say what
		// to remove by hand, and nothing else may be left.
		if !strings.Contains(out, "by hand") {
			r.bad = "failed cleanup not reported"
		}
		r.outcome += ", cleanup denied (reported)"
	case wantOK && !ok:
		r.bad = "build failed but should have recovered:\n" + tail(out, 15)
	case !wantOK && ok && !cleanupAction(f.action):
		r.bad = "build succeeded despite a fatal error"
	case len(left) > 0:
		r.bad = "left: " + strings.Join(left, "; ")
	}
	return r
}

// cleanupAction: calls made only by cleanups (or after the AMIs are
// final), where a denied call cannot fail the build.
func cleanupAction(action string) bool {
	return action == "TerminateInstances" || action == "DeleteSecurityGroup" || action == "DeleteKeyPair"
}

// interruptRun sends SIGINT after the first call of action. When that is
// the build's last call, the builder has already returned when the
// interrupt arrives: Packer reports "context canceled" and drops the
// artifact, and the AMIs of the finished build stay (no plugin can see an
// interrupt that comes after it returned).
func (e *env) interruptRun(t *testing.T, action string, last bool) row {
	return e.interruptRunWith(t, action, last, false)
}

func (e *env) interruptRunWith(t *testing.T, action string, last, spot bool) row {
	return e.interruptRunLast(t, action, last, runOpts{ssh: true, spot: spot})
}

// interruptRunOpts sends SIGINT after the first call of action (not the
// build's last) in a build with o.
func (e *env) interruptRunOpts(t *testing.T, action string, o runOpts) row {
	return e.interruptRunLast(t, action, false, o)
}

func (e *env) interruptRunLast(t *testing.T, action string, last bool, o runOpts) row {
	e.reset()
	spot := o.spot
	o.interruptAfter = action
	out, err := e.build(t, o)
	ok := err == nil
	finished := last && !strings.Contains(out, "Deregistering AMI")
	left := e.leftovers(t, ok || finished)
	r := row{point: action, fault: "SIGINT after it", outcome: outcome(ok, out), leftovers: fmt.Sprint(len(left))}
	if spot {
		r.point += " (Spot)"
	}
	if o.ssm {
		r.point += " (SSM)"
	}
	if finished && !ok {
		r.outcome = "builder done first; AMIs kept"
	}
	if len(left) > 0 {
		r.leftovers += ": " + strings.Join(left, "; ")
		r.bad = "left: " + strings.Join(left, "; ") + "\n" + tail(out, 12)
	}
	if !ok && !strings.Contains(out, "ancel") && !strings.Contains(out, "nterrupt") {
		r.bad = "build failed without noticing the interrupt:\n" + tail(out, 10)
	}
	return r
}

// lostSessionRun: the first StartSession makes its session and the answer
// never arrives (the proxy closes the connection). The build retries and
// succeeds; its cleanup must find the first session by the instance
// (DescribeSessions) and terminate it with the second.
func (e *env) lostSessionRun(t *testing.T) row {
	e.reset()
	e.sessions.LoseAnswers(1)
	out, err := e.build(t, runOpts{ssh: true, ssm: true})
	ok := err == nil
	left := e.leftovers(t, ok)
	r := row{point: "StartSession (SSM)", fault: "session made, answer lost", outcome: outcome(ok, out), leftovers: fmt.Sprint(len(left))}
	calls := e.proxy.ec2Calls()
	switch {
	case !ok:
		r.bad = "build failed but should have retried:\n" + tail(out, 15)
	case len(e.sessions.Started()) != 2:
		r.bad = fmt.Sprintf("sessions started: %d, want 2 (the lost one and the retry)", len(e.sessions.Started()))
	case !strings.Contains(strings.Join(calls, "\n"), "DescribeSessions"):
		r.bad = "no DescribeSessions to find the session whose answer was lost"
	}
	if len(left) > 0 {
		r.leftovers += ": " + strings.Join(left, "; ")
		r.bad = "left: " + strings.Join(left, "; ") + "\n" + tail(out, 12)
	}
	return r
}

func outcome(ok bool, out string) string {
	switch {
	case ok:
		return "built"
	case strings.Contains(out, "Cancelling build") || strings.Contains(out, "cancelled"):
		return "cancelled, cleaned up"
	default:
		return "failed, cleaned up"
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func printTable(t *testing.T, rows []row) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-32s | %-30s | %-34s | %s\n", "fault point (first call of)", "fault", "outcome", "leftovers")
	fmt.Fprintf(&b, "%s\n", strings.Repeat("-", 120))
	for _, r := range rows {
		fmt.Fprintf(&b, "%-32s | %-30s | %-34s | %s\n", r.point, r.fault, r.outcome, r.leftovers)
	}
	t.Log(b.String())
}

func distinct(calls []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range calls {
		_, action, _ := strings.Cut(c, " ")
		if !seen[action] {
			seen[action] = true
			out = append(out, action)
		}
	}
	return out
}

func summarize(calls []string) string {
	n := map[string]int{}
	for _, c := range calls {
		_, action, _ := strings.Cut(c, " ")
		n[action]++
	}
	var parts []string
	for _, a := range distinct(calls) {
		parts = append(parts, fmt.Sprintf("%s %d", a, n[a]))
	}
	return strings.Join(parts, ", ")
}

// --- the proxy in front of moto -------------------------------------------

// faultProxy is awsproxy in front of moto with what the fault table needs: it
// records every EC2 call as "region Action", fails calls on request with a
// real EC2 error document, hands imported keys to the build instance's sshd,
// answers EnableImageDeprecation (which moto 5.2.1 does not implement), and
// calls a hook right after each call has been answered.
type faultProxy struct {
	*awsproxy.Proxy

	mu       sync.Mutex
	calls    []string
	counts   map[string]int // calls seen, by action
	answered map[string]int // calls answered, by action
	fault    *fault
	injected int
	hook     func(action string, n int)
}

func newFaultProxy(t *testing.T, target string, sshd *instanceSSH) *faultProxy {
	ap, err := awsproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ap.Close() })
	p := &faultProxy{Proxy: ap, counts: map[string]int{}, answered: map[string]int{}}
	ap.Intercept(func(w http.ResponseWriter, c *awsproxy.Call) bool {
		if !counted(c) {
			return false
		}
		if c.Action == "ImportKeyPair" {
			// The build instance's sshd learns the key as cloud-init on EC2
			// would from the instance metadata.
			sshd.authorize(c.Form.Get("PublicKeyMaterial"))
		}
		p.mu.Lock()
		p.calls = append(p.calls, c.Region+" "+c.Action)
		p.counts[c.Action]++
		n := p.counts[c.Action]
		f := p.fault
		fail := f != nil && f.action == c.Action && n >= f.n && n < f.n+max(f.times, 1)
		if fail {
			p.injected++
		}
		p.mu.Unlock()
		if fail {
			awsproxy.WriteError(w, c, f.status, f.code, fmt.Sprintf("injected by the e2e proxy (call %d)", n))
		}
		return fail
	})
	ap.Handle("ec2", "EnableImageDeprecation", func(w http.ResponseWriter, c *awsproxy.Call) {
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<EnableImageDeprecationResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>e2e</requestId><return>true</return></EnableImageDeprecationResponse>`)
	})
	ap.Observe(func(c *awsproxy.Call) {
		if !counted(c) {
			return
		}
		p.mu.Lock()
		p.answered[c.Action]++
		n, hook := p.answered[c.Action], p.hook
		p.mu.Unlock()
		if hook != nil {
			hook(c.Action, n)
		}
	})
	return p
}

// counted: the calls the table counts and can fail: every EC2 call and the
// Session Manager session calls (GetParameter for the source AMI is not counted).
func counted(c *awsproxy.Call) bool {
	return c.Service == "ec2" || c.Service == "ssm" && (c.Action == "StartSession" || c.Action == "TerminateSession" || c.Action == "DescribeSessions")
}

func (p *faultProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls, p.counts, p.answered, p.injected = nil, map[string]int{}, map[string]int{}, 0
}

func (p *faultProxy) setFault(f *fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
}

// onCall sets the hook called right after the nth answered call of an action.
func (p *faultProxy) onCall(h func(action string, n int)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = h
}

func (p *faultProxy) ec2Calls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

func (p *faultProxy) faultsInjected() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.injected
}

// --- the build instance's SSH endpoint -------------------------------------

// instanceSSH stands in for sshd on the build instance (moto runs no
// machines): it accepts only public keys imported through EC2's
// ImportKeyPair, as an EC2 image does through its metadata, and answers the
// builder's `cloud-init status --wait`. A command that reads the stack file
// runs under sh with the path pointing at stackFile (e2eStackFile); every
// other command is recorded, not run.
type instanceSSH struct {
	port      int
	stackFile string

	mu   sync.Mutex
	keys map[string]bool // authorized keys, wire format
	// anyKey accepts every key: for amazon-ebs in the call benchmark,
	// whose key moto makes (CreateKeyPair), so the proxy never sees it.
	anyKey bool
	cmds   []string
}

func newInstanceSSH(t *testing.T) *instanceSSH {
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	s := &instanceSSH{keys: map[string]bool{}, stackFile: filepath.Join(t.TempDir(), "wsgi-stack.json")}
	if err := os.WriteFile(s.stackFile, []byte(e2eStackFile), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.anyKey || s.keys[string(key.Marshal())] {
				return nil, nil
			}
			return nil, fmt.Errorf("key not imported through EC2")
		},
	}
	cfg.AddHostKey(hostKey)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s.port = l.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(conn, cfg)
		}
	}()
	return s
}

// authorize takes ImportKeyPair's PublicKeyMaterial (base64 of an
// authorized_keys line).
func (s *instanceSSH) authorize(material string) {
	raw, err := base64.StdEncoding.DecodeString(material)
	if err != nil {
		raw = []byte(material)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(raw)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.keys[string(key.Marshal())] = true
	s.mu.Unlock()
}

func (s *instanceSSH) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = nil
}

func (s *instanceSSH) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

func (s *instanceSSH) serve(conn net.Conn, cfg *ssh.ServerConfig) {
	defer conn.Close()
	_, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range chReqs {
				if req.Type != "exec" {
					_ = req.Reply(req.WantReply, nil)
					continue
				}
				var payload struct{ Command string }
				_ = ssh.Unmarshal(req.Payload, &payload)
				// The SDK communicator ends the command with a newline.
				payload.Command = strings.TrimSpace(payload.Command)
				s.mu.Lock()
				s.cmds = append(s.cmds, payload.Command)
				s.mu.Unlock()
				_ = req.Reply(true, nil)
				status := uint32(127)
				switch {
				case payload.Command == "cloud-init status --wait":
					_, _ = io.WriteString(ch, "status: done\n")
					status = 0
				case strings.Contains(payload.Command, contract.StackFile):
					cmd := exec.Command("sh", "-c", strings.ReplaceAll(payload.Command, contract.StackFile, s.stackFile))
					cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
					status = 0
					if err := cmd.Run(); err != nil {
						status = 1
						if exit, ok := err.(*exec.ExitError); ok {
							status = uint32(exit.ExitCode())
						}
					}
				}
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
				return
			}
		}()
	}
}

// --- Session Manager ---------------------------------------------------------

const ssmProfile = "e2e-ssm"

// standinPlugin is the stand-in for AWS's session-manager-plugin. It is
// given what the real one is given (session JSON, region, operation,
// profile, parameters JSON, endpoint), listens on the parameters'
// localPortNumber on loopback and forwards every connection to
// $WSGI_E2E_SSM_FORWARD (the test's SSH endpoint) instead of opening the
// session's data channel. It appends its pid to $WSGI_E2E_SSM_PIDS.
const standinPlugin = `package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	f, err := os.OpenFile(os.Getenv("WSGI_E2E_SSM_PIDS"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		fmt.Fprintln(f, os.Getpid())
		f.Close()
	}
	var session struct{ SessionId, TokenValue string }
	var params struct {
		Target, DocumentName string
		Parameters           map[string][]string
	}
	if len(os.Args) != 7 || json.Unmarshal([]byte(os.Args[1]), &session) != nil || session.SessionId == "" ||
		os.Args[3] != "StartSession" || json.Unmarshal([]byte(os.Args[5]), &params) != nil ||
		params.DocumentName != "AWS-StartPortForwardingSession" || len(params.Parameters["localPortNumber"]) != 1 {
		fmt.Fprintf(os.Stderr, "stand-in plugin: unexpected arguments %q\n", os.Args[1:])
		os.Exit(2)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+params.Parameters["localPortNumber"][0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("Starting session with SessionId: %s\nWaiting for connections...\n", session.SessionId)
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", os.Getenv("WSGI_E2E_SSM_FORWARD"))
			if err != nil {
				return
			}
			defer up.Close()
			go io.Copy(up, c)
			io.Copy(c, up)
		}()
	}
}
`

// buildStandinPlugin builds standinPlugin as session-manager-plugin in a
// folder of its own (put first on PATH for packer) and returns the folder
// and the file it records pids in.
func buildStandinPlugin(t *testing.T) (dir, pids string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(standinPlugin), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module standin\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "session-manager-plugin"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in plugin: %v\n%s", err, out)
	}
	return dir, filepath.Join(t.TempDir(), "pids")
}

// livePlugins names every stand-in plugin process still running.
func (e *env) livePlugins(t *testing.T) []string {
	b, err := os.ReadFile(e.standinPids)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, f := range strings.Fields(string(b)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && syscall.Kill(pid, 0) == nil {
			left = append(left, fmt.Sprintf("session-manager-plugin pid %d still running", pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return left
}

// assertSession checks a Session Manager build: one session to the build
// instance's SSH port, terminated; no ingress rule; the plugin ran.
func (e *env) assertSession(t *testing.T, calls []string, out string) {
	t.Helper()
	started := e.sessions.Started()
	if len(started) != 1 {
		t.Fatalf("sessions started: %+v", started)
	}
	s := started[0]
	if !strings.HasPrefix(s.Target, "i-") || s.DocumentName != "AWS-StartPortForwardingSession" ||
		len(s.Parameters["portNumber"]) != 1 || s.Parameters["portNumber"][0] != "22" || len(s.Parameters["localPortNumber"]) != 1 {
		t.Errorf("StartSession: %+v", s)
	}
	if open := e.sessions.Open(); len(open) > 0 {
		t.Errorf("sessions not terminated: %v", open)
	}
	for _, c := range calls {
		if strings.HasSuffix(c, " AuthorizeSecurityGroupIngress") {
			t.Errorf("a Session Manager build opened an inbound rule: %v", calls)
		}
	}
	if b, _ := os.ReadFile(e.standinPids); len(strings.Fields(string(b))) != 1 {
		t.Errorf("the stand-in plugin ran %d times, want once", len(strings.Fields(string(b))))
	}
	if !strings.Contains(out, "Terminating Session Manager session "+s.ID) {
		t.Errorf("no line about terminating the session:\n%s", tail(out, 30))
	}
}
