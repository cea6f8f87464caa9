package builder

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/crypto/ssh"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// recUI records what the build says.
type recUI struct {
	packersdk.Ui
	mu    sync.Mutex
	lines []string
}

func (u *recUI) Say(s string)   { u.mu.Lock(); u.lines = append(u.lines, s); u.mu.Unlock() }
func (u *recUI) Error(s string) { u.mu.Lock(); u.lines = append(u.lines, "ERROR "+s); u.mu.Unlock() }
func (u *recUI) text() string   { u.mu.Lock(); defer u.mu.Unlock(); return strings.Join(u.lines, "\n") }

func testState(t *testing.T) (*multistep.BasicStateBag, *recUI) {
	t.Helper()
	state := new(multistep.BasicStateBag)
	u := &recUI{Ui: packersdk.TestUi(t)}
	put(state, keyUI, u)
	put(state, keyHook, &packersdk.MockHook{})
	return state, u
}

// testConfig is a prepared configuration with overrides applied.
func testConfig(t *testing.T, set map[string]interface{}) *Config {
	t.Helper()
	raw := minimal()
	raw["communicator"] = "none"
	raw["ami_name"] = "wsgi-app-1"
	for k, v := range set {
		raw[k] = v
	}
	var c Config
	if _, err := c.Prepare(raw); err != nil {
		t.Fatal(err)
	}
	return &c
}

func stateError(state multistep.StateBag) string {
	if err := get[error](state, keyError); err != nil {
		return err.Error()
	}
	return ""
}

// generated is the generated-data value name (build.NAME), "" when unset.
func generated(state multistep.StateBag, name string) string {
	v, _ := get[map[string]interface{}](state, keyGenerated)[name].(string)
	return v
}

func calls(cloud *fakeCloud, prefix string) []string {
	var out []string
	for _, c := range cloud.Calls() {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func TestStepSourceAMI(t *testing.T) {
	tests := []struct {
		name     string
		source   SourceConfig
		types    []string
		bootMode string
		prepare  func(c *fakeCloud)
		wantID   string
		wantErr  string
	}{
		{name: "by id", source: SourceConfig{SourceAMI: fakeSourceAMI}, types: []string{"t3.small"}, wantID: fakeSourceAMI},
		{name: "by ssm alias", source: SourceConfig{SourceAMI: "resolve:ssm:/aws/service/debian/release/12/latest/amd64"}, types: []string{"t3.small"}, wantID: fakeSourceAMI},
		{name: "ssm parameter missing", source: SourceConfig{SourceAMI: "resolve:ssm:/nope"}, types: []string{"t3.small"}, wantErr: "source_ami: reading SSM parameter /nope"},
		{name: "ssm holds garbage", source: SourceConfig{SourceAMI: "resolve:ssm:/bad"}, types: []string{"t3.small"},
			prepare: func(c *fakeCloud) { c.params["/bad"] = "debian" }, wantErr: `source_ami: SSM parameter /bad holds "debian", not an AMI id`},
		{name: "filter most recent", types: []string{"t3.small"},
			source:  SourceConfig{SourceAMIFilter: &AMIFilter{Filters: map[string]string{"name": "debian-12-*"}, Owners: []string{"136693071363"}, MostRecent: true}},
			prepare: addNewerSource, wantID: "ami-00000000000000new"},
		{name: "filter ambiguous", types: []string{"t3.small"},
			source:  SourceConfig{SourceAMIFilter: &AMIFilter{Filters: map[string]string{"name": "debian-12-*"}, Owners: []string{"136693071363"}}},
			prepare: addNewerSource, wantErr: "source_ami_filter: 2 AMIs match"},
		{name: "filter no match", types: []string{"t3.small"},
			source:  SourceConfig{SourceAMIFilter: &AMIFilter{Filters: map[string]string{"name": "ubuntu-*"}, Owners: []string{"amazon"}}},
			wantErr: "source_ami: no AMI matches filter"},
		{name: "arch mismatch in fallback", source: SourceConfig{SourceAMI: fakeSourceAMI}, types: []string{"t3.small", "t4g.small"},
			wantErr: "instance_type: t4g.small runs arm64, but the source AMI ami-0123456789abcdef0 is x86_64"},
		{name: "type not offered", source: SourceConfig{SourceAMI: fakeSourceAMI}, types: []string{"nope.large"},
			wantErr: "instance_type: nope.large is not offered in this region"},
		{name: "boot mode mismatch", source: SourceConfig{SourceAMI: fakeSourceAMI}, types: []string{"t3.small"}, bootMode: "legacy-bios",
			wantErr: "boot_mode: the source AMI ami-0123456789abcdef0 boots with uefi-preferred, not legacy-bios"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cloud := newFakeCloud()
			if tt.prepare != nil {
				tt.prepare(cloud)
			}
			state, _ := testState(t)
			step := &stepSourceAMI{EC2: cloud.client("eu-west-1"), SSM: &fakeSSM{cloud}, Source: tt.source, Types: tt.types, BootMode: tt.bootMode, Region: "eu-west-1"}
			action := step.Run(context.Background(), state)
			if tt.wantErr != "" {
				if action != multistep.ActionHalt || !strings.Contains(stateError(state), tt.wantErr) {
					t.Fatalf("want halt with %q, got %v %q", tt.wantErr, action, stateError(state))
				}
				return
			}
			if action != multistep.ActionContinue {
				t.Fatalf("halted: %s", stateError(state))
			}
			img := get[ec2types.Image](state, keySourceImage)
			if aws.ToString(img.ImageId) != tt.wantID {
				t.Fatalf("source: got %s, want %s", aws.ToString(img.ImageId), tt.wantID)
			}
			gd := state.Get("generated_data").(map[string]interface{})
			if gd["SourceAMI"] != tt.wantID || gd["BuildRegion"] != "eu-west-1" {
				t.Fatalf("generated data: %v", gd)
			}
		})
	}
}

func addNewerSource(c *fakeCloud) {
	img := *c.region("eu-west-1").images[fakeSourceAMI]
	img.ImageId = aws.String("ami-00000000000000new")
	img.Name = aws.String("debian-12-amd64-20250601")
	img.CreationDate = aws.String("2025-06-01T00:00:00.000Z")
	c.region("eu-west-1").images["ami-00000000000000new"] = &img
}

func TestStepNetwork(t *testing.T) {
	tests := []struct {
		name               string
		run                RunConfig
		wantSubnet, wantVP string
		wantErr            string
	}{
		{name: "nothing asked, no group", wantSubnet: "", wantVP: ""},
		{name: "default vpc left to AWS", wantVP: ""},
		{name: "subnet id", run: RunConfig{SubnetID: "subnet-cccccccc"}, wantSubnet: "subnet-cccccccc", wantVP: "vpc-22222222"},
		{name: "subnet id unknown", run: RunConfig{SubnetID: "subnet-dddddddd"}, wantErr: "subnet_id: subnet-dddddddd not found"},
		{name: "filter ambiguous", run: RunConfig{SubnetFilter: &SubnetFilter{Filters: map[string]string{"tag:Tier": "build"}}}, wantErr: "subnet_filter: 2 subnets match"},
		{name: "filter most free", run: RunConfig{SubnetFilter: &SubnetFilter{Filters: map[string]string{"tag:Tier": "build"}, MostFree: true}},
			wantSubnet: "subnet-bbbbbbbb", wantVP: "vpc-11111111"},
		{name: "filter random", run: RunConfig{SubnetFilter: &SubnetFilter{Filters: map[string]string{"tag:Tier": "build"}, Random: true}},
			wantSubnet: "random", wantVP: "vpc-11111111"},
		{name: "vpc mismatch", run: RunConfig{SubnetID: "subnet-cccccccc", VpcID: "vpc-11111111"}, wantErr: "vpc_id: subnet subnet-cccccccc is in vpc-22222222, not vpc-11111111"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cloud := newFakeCloud()
			state, _ := testState(t)
			step := &stepNetwork{EC2: cloud.client("eu-west-1"), Net: tt.run}
			action := step.Run(context.Background(), state)
			if tt.wantErr != "" {
				if action != multistep.ActionHalt || !strings.Contains(stateError(state), tt.wantErr) {
					t.Fatalf("want %q, got %q", tt.wantErr, stateError(state))
				}
				return
			}
			if action != multistep.ActionContinue {
				t.Fatal(stateError(state))
			}
			s, v := get[string](state, keySubnetID), get[string](state, keyVpcID)
			if tt.wantSubnet == "random" && (s == "subnet-aaaaaaaa" || s == "subnet-bbbbbbbb") {
				tt.wantSubnet = s
			}
			if s != tt.wantSubnet || v != tt.wantVP {
				t.Fatalf("got subnet %q vpc %q, want %q %q", s, v, tt.wantSubnet, tt.wantVP)
			}
		})
	}
}

func TestStepKeyPair(t *testing.T) {
	cloud := newFakeCloud()
	state, _ := testState(t)
	c := testConfig(t, nil)
	step := &stepKeyPair{EC2: cloud.client("eu-west-1"), Comm: &c.Comm, BuildID: "b1", Tags: tagList(c.tempTags())}
	if action := step.Run(context.Background(), state); action != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	if _, ok := cloud.region("eu-west-1").keyPairs["packer_wsgi_b1"]; !ok {
		t.Fatal("key pair not imported")
	}
	if !hasTag(cloud.region("eu-west-1").keyPairs["packer_wsgi_b1"], awscfg.TagBuildID, c.buildID) {
		t.Error("key pair not tagged with the build id")
	}
	// The private key given to the communicator is the pair's other half.
	signer, err := ssh.ParsePrivateKey(c.Comm.SSHPrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("key type %s", signer.PublicKey().Type())
	}
	if get[string](state, keyPrivateKey) != string(c.Comm.SSHPrivateKey) || c.Comm.SSHKeyPairName != "packer_wsgi_b1" {
		t.Fatal("communicator not given the key")
	}
	step.Cleanup(state)
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("leftovers: %v", cloud.leftovers())
	}
}

func TestStepKeyPairFailedImportStillCleansUp(t *testing.T) {
	cloud := newFakeCloud()
	cloud.fail = func(_, action string, _ int) error {
		if action == "ImportKeyPair" {
			return apiError("InternalError")
		}
		return nil
	}
	state, _ := testState(t)
	c := testConfig(t, nil)
	step := &stepKeyPair{EC2: cloud.client("eu-west-1"), Comm: &c.Comm, BuildID: "b2"}
	if step.Run(context.Background(), state) != multistep.ActionHalt || !strings.Contains(stateError(state), "importing key pair packer_wsgi_b2") {
		t.Fatalf("want halt, got %q", stateError(state))
	}
	step.Cleanup(state)
	want := []string{"eu-west-1 ImportKeyPair", "eu-west-1 DeleteKeyPair"}
	if got := cloud.Calls(); strings.Join(got, ";") != strings.Join(want, ";") {
		t.Fatalf("calls %v, want %v", got, want)
	}
}

func TestStepSecurityGroup(t *testing.T) {
	checkip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("198.51.100.7\n"))
	}))
	defer checkip.Close()
	tests := []struct {
		name      string
		cidrs     []string
		url       string
		wantCIDRs []string
		wantErr   string
	}{
		{name: "caller address by default", url: checkip.URL, wantCIDRs: []string{"198.51.100.7/32"}},
		{name: "explicit cidrs", cidrs: []string{"10.1.0.0/16", "2001:db8::/64"}, url: "http://127.0.0.1:1", wantCIDRs: []string{"10.1.0.0/16", "2001:db8::/64"}},
		{name: "checkip unreachable", url: "http://127.0.0.1:1", wantErr: "ssh_cidrs: finding this machine's public address at http://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cloud := newFakeCloud()
			state, _ := testState(t)
			put(state, keyVpcID, "vpc-default0")
			step := &stepSecurityGroup{EC2: cloud.client("eu-west-1"), CIDRs: tt.cidrs, CheckIPURL: tt.url, Port: 2222, BuildID: "b1"}
			action := step.Run(context.Background(), state)
			if tt.wantErr != "" {
				if action != multistep.ActionHalt || !strings.Contains(stateError(state), tt.wantErr) {
					t.Fatalf("want %q, got %q", tt.wantErr, stateError(state))
				}
				step.Cleanup(state)
				if len(cloud.Calls()) != 0 {
					t.Fatalf("no group should have been asked for: %v", cloud.Calls())
				}
				return
			}
			if action != multistep.ActionContinue {
				t.Fatal(stateError(state))
			}
			ids := get[[]string](state, keySecurityGroup)
			g := cloud.region("eu-west-1").groups[ids[0]]
			if aws.ToString(g.VpcId) != "vpc-default0" || aws.ToString(g.GroupName) != "packer_wsgi_b1" {
				t.Fatalf("group %+v", g)
			}
			var got []string
			for _, p := range g.IpPermissions {
				if aws.ToInt32(p.FromPort) != 2222 || aws.ToInt32(p.ToPort) != 2222 {
					t.Errorf("ports %d-%d", aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort))
				}
				for _, r := range p.IpRanges {
					got = append(got, aws.ToString(r.CidrIp))
				}
				for _, r := range p.Ipv6Ranges {
					got = append(got, aws.ToString(r.CidrIpv6))
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.wantCIDRs, ",") {
				t.Fatalf("opened to %v, want %v", got, tt.wantCIDRs)
			}
			step.Cleanup(state)
			if len(cloud.leftovers()) != 0 {
				t.Fatalf("leftovers: %v", cloud.leftovers())
			}
		})
	}
}

// lostAnswer makes the named call succeed in the cloud but return an
// error to the caller, as when a build is interrupted mid-call.
type lostAnswer struct {
	*fakeEC2
	action string
}

var errLost = errors.New("request canceled: context canceled")

func (l *lostAnswer) CreateSecurityGroup(ctx context.Context, in *ec2.CreateSecurityGroupInput, o ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error) {
	out, err := l.fakeEC2.CreateSecurityGroup(ctx, in, o...)
	if l.action == "CreateSecurityGroup" && err == nil {
		return nil, errLost
	}
	return out, err
}

func (l *lostAnswer) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, o ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	out, err := l.fakeEC2.RunInstances(ctx, in, o...)
	if l.action == "RunInstances" && err == nil {
		return nil, errLost
	}
	return out, err
}

func (l *lostAnswer) CreateImage(ctx context.Context, in *ec2.CreateImageInput, o ...func(*ec2.Options)) (*ec2.CreateImageOutput, error) {
	out, err := l.fakeEC2.CreateImage(ctx, in, o...)
	if l.action == "CreateImage" && err == nil {
		return nil, errLost
	}
	return out, err
}

func (l *lostAnswer) CopyImage(ctx context.Context, in *ec2.CopyImageInput, o ...func(*ec2.Options)) (*ec2.CopyImageOutput, error) {
	out, err := l.fakeEC2.CopyImage(ctx, in, o...)
	if l.action == "CopyImage" && err == nil {
		return nil, errLost
	}
	return out, err
}

func TestStepSecurityGroupLostCreateAnswer(t *testing.T) {
	cloud := newFakeCloud()
	state, _ := testState(t)
	step := &stepSecurityGroup{EC2: &lostAnswer{cloud.client("eu-west-1"), "CreateSecurityGroup"}, CIDRs: []string{"10.0.0.0/8"}, Port: 22, BuildID: "b1"}
	if step.Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("want halt")
	}
	if len(cloud.leftovers()) != 1 {
		t.Fatalf("the group should exist before cleanup: %v", cloud.leftovers())
	}
	step.Cleanup(state)
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("leftovers: %v", cloud.leftovers())
	}
}

func runInstanceState(t *testing.T, cloud *fakeCloud) (*multistep.BasicStateBag, *recUI) {
	state, u := testState(t)
	put(state, keySourceImage, *cloud.region("eu-west-1").images[fakeSourceAMI])
	put(state, keySubnetID, "subnet-aaaaaaaa")
	put(state, keySecurityGroup, []string{"sg-1"})
	put(state, keyKeyPairName, "packer_wsgi_b1")
	return state, u
}

func TestStepRunInstance(t *testing.T) {
	cloud := newFakeCloud()
	var got *ec2.RunInstancesInput
	client := &inputRecorder{fakeEC2: cloud.client("eu-west-1"), run: &got}
	state, u := runInstanceState(t, cloud)
	c := testConfig(t, map[string]interface{}{
		"user_data": "#cloud-config\n", "iam_instance_profile": "builder", "run_tags": map[string]string{"Team": "{{ .SourceAMIName }}"},
	})
	step := &stepRunInstance{EC2: client, Cfg: c, BuildID: c.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	if got.MetadataOptions.HttpTokens != ec2types.HttpTokensStateRequired {
		t.Error("IMDSv2 not required")
	}
	ebs := got.BlockDeviceMappings[0].Ebs
	if aws.ToString(got.BlockDeviceMappings[0].DeviceName) != "/dev/xvda" || ebs.VolumeType != "gp3" || !aws.ToBool(ebs.Encrypted) || aws.ToInt32(ebs.VolumeSize) != 8 {
		t.Errorf("root volume %+v", ebs)
	}
	if ud, _ := base64.StdEncoding.DecodeString(aws.ToString(got.UserData)); string(ud) != "#cloud-config\n" {
		t.Errorf("user data %q", ud)
	}
	if aws.ToString(got.SubnetId) != "subnet-aaaaaaaa" || got.SecurityGroupIds[0] != "sg-1" || aws.ToString(got.KeyName) != "packer_wsgi_b1" ||
		aws.ToString(got.IamInstanceProfile.Name) != "builder" {
		t.Errorf("placement %+v", got)
	}
	tags := got.TagSpecifications[0].Tags
	if !hasTag(tags, awscfg.TagBuildID, c.buildID) || !hasTag(tags, "Team", "debian-12-amd64-20250101") {
		t.Errorf("instance tags %v", tags)
	}
	if !strings.Contains(u.text(), "to run after") {
		t.Errorf("no progress line: %s", u.text())
	}
	if get[string](state, keyInstanceID) == "" || generated(state, "InstanceType") != "t3.small" {
		t.Error("instance id or type not in state")
	}
	step.Cleanup(state)
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("leftovers: %v", cloud.leftovers())
	}
	if c := calls(cloud, "eu-west-1 TerminateInstances"); len(c) != 1 {
		t.Fatalf("terminate calls %v", c)
	}
}

type inputRecorder struct {
	*fakeEC2
	run **ec2.RunInstancesInput
}

func (r *inputRecorder) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, o ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	cp := *in
	*r.run = &cp
	return r.fakeEC2.RunInstances(ctx, in, o...)
}

func TestStepRunInstanceCapacityFallback(t *testing.T) {
	tests := []struct {
		name      string
		noCap     map[string]bool
		other     string // error code for every RunInstances
		wantType  string
		wantErr   string
		wantCalls int
	}{
		{name: "first has capacity", wantType: "t3.small", wantCalls: 1},
		{name: "falls back once", noCap: map[string]bool{"t3.small": true}, wantType: "t3a.small", wantCalls: 2},
		{name: "falls back twice", noCap: map[string]bool{"t3.small": true, "t3a.small": true}, wantType: "m5.large", wantCalls: 3},
		{name: "no capacity anywhere", noCap: map[string]bool{"t3.small": true, "t3a.small": true, "m5.large": true},
			wantErr: "launching the build instance: api error InsufficientInstanceCapacity", wantCalls: 3},
		{name: "other errors do not fall back", other: "UnauthorizedOperation", wantErr: "UnauthorizedOperation", wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cloud := newFakeCloud()
			var last *ec2.RunInstancesInput
			client := &inputRecorder{fakeEC2: cloud.client("eu-west-1"), run: &last}
			cloud.fail = func(_, action string, _ int) error {
				if action != "RunInstances" {
					return nil
				}
				if tt.other != "" {
					return apiError(tt.other)
				}
				if tt.noCap[string(last.InstanceType)] {
					return apiError("InsufficientInstanceCapacity")
				}
				return nil
			}
			state, _ := runInstanceState(t, cloud)
			c := testConfig(t, map[string]interface{}{"fallback_instance_types": []string{"t3a.small", "m5.large"}})
			step := &stepRunInstance{EC2: client, Cfg: c, BuildID: c.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
			action := step.Run(context.Background(), state)
			if n := len(calls(cloud, "eu-west-1 RunInstances")); n != tt.wantCalls {
				t.Errorf("RunInstances calls %d, want %d", n, tt.wantCalls)
			}
			if tt.wantErr != "" {
				if action != multistep.ActionHalt || !strings.Contains(stateError(state), tt.wantErr) {
					t.Fatalf("want %q, got %q", tt.wantErr, stateError(state))
				}
			} else if generated(state, "InstanceType") != tt.wantType {
				t.Fatalf("type %q, want %q (%s)", generated(state, "InstanceType"), tt.wantType, stateError(state))
			}
			step.Cleanup(state)
			if len(cloud.leftovers()) != 0 {
				t.Fatalf("leftovers: %v", cloud.leftovers())
			}
		})
	}
}

func TestStepRunInstanceLostAnswer(t *testing.T) {
	cloud := newFakeCloud()
	state, _ := runInstanceState(t, cloud)
	c := testConfig(t, nil)
	step := &stepRunInstance{EC2: &lostAnswer{cloud.client("eu-west-1"), "RunInstances"}, Cfg: c, BuildID: c.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("want halt")
	}
	if len(cloud.leftovers()) != 1 {
		t.Fatalf("the instance should run before cleanup: %v", cloud.leftovers())
	}
	step.Cleanup(state)
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("cleanup did not find the instance by its tag: %v", cloud.leftovers())
	}
}

func TestStepWaitCloudInit(t *testing.T) {
	tests := []struct {
		status  int
		wantErr string
		wantSay string
	}{
		{status: 0},
		{status: 2, wantSay: "Warning: cloud-init finished with recoverable errors: status: degraded done"},
		{status: 127, wantSay: "cloud-init is not installed"},
		{status: 1, wantErr: "cloud-init on the build instance failed (exit 1): status: degraded done"},
	}
	for _, tt := range tests {
		state, u := testState(t)
		comm := &packersdk.MockCommunicator{StartExitStatus: tt.status, StartStdout: "\nstatus: degraded done\n"}
		put(state, keyComm, comm)
		action := (&stepWaitCloudInit{}).Run(context.Background(), state)
		if comm.StartCmd == nil || comm.StartCmd.Command != "cloud-init status --wait" {
			t.Fatalf("status %d: command %+v", tt.status, comm.StartCmd)
		}
		if tt.wantErr != "" {
			if action != multistep.ActionHalt || !strings.Contains(stateError(state), tt.wantErr) {
				t.Errorf("status %d: want %q, got %q", tt.status, tt.wantErr, stateError(state))
			}
			continue
		}
		if action != multistep.ActionContinue {
			t.Errorf("status %d: halted: %s", tt.status, stateError(state))
		}
		if tt.wantSay != "" && !strings.Contains(u.text(), tt.wantSay) {
			t.Errorf("status %d: want %q in %s", tt.status, tt.wantSay, u.text())
		}
	}
}

func TestStepStopInstance(t *testing.T) {
	for _, srcENA := range []bool{false, true} {
		t.Run(fmt.Sprint("source ENA ", srcENA), func(t *testing.T) { testStepStopInstance(t, srcENA) })
	}
}

func testStepStopInstance(t *testing.T, srcENA bool) {
	cloud := newFakeCloud()
	cloud.region("eu-west-1").images[fakeSourceAMI].EnaSupport = aws.Bool(srcENA)
	state, _ := runInstanceState(t, cloud)
	c := testConfig(t, nil)
	run := &stepRunInstance{EC2: cloud.client("eu-west-1"), Cfg: c, BuildID: c.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if run.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	stop := &stepStopInstance{EC2: cloud.client("eu-west-1"), ENA: true, Wait: waitConfig{Delay: time.Millisecond}}
	if stop.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	inst := cloud.region("eu-west-1").instances[get[string](state, keyInstanceID)]
	if inst.State.Name != ec2types.InstanceStateNameStopped || !aws.ToBool(inst.EnaSupport) {
		t.Fatalf("instance %s ena %v", inst.State.Name, inst.EnaSupport)
	}
	// An instance of an ENA source has ENA: no call to set it again.
	if modified := slices.Contains(cloud.Calls(), "eu-west-1 ModifyInstanceAttribute"); modified == srcENA {
		t.Fatalf("source ENA %v, ModifyInstanceAttribute called %v: %v", srcENA, modified, cloud.Calls())
	}
}

func TestStepCheckAMIName(t *testing.T) {
	for _, force := range []bool{false, true} {
		cloud := newFakeCloud()
		cloud.region("us-east-1").images["ami-existing"] = &ec2types.Image{ImageId: aws.String("ami-existing"), Name: aws.String("wsgi-app-1"), OwnerId: aws.String("self")}
		state, _ := testState(t)
		step := &stepCheckAMIName{EC2: clientAs[describeImagesAPI](cloud.regional()), Name: "wsgi-app-1", Regions: []string{"eu-west-1", "us-east-1"}, Force: force}
		action := step.Run(context.Background(), state)
		if force && action != multistep.ActionContinue {
			t.Fatalf("force: %s", stateError(state))
		}
		if !force && !strings.Contains(stateError(state), `ami_name: us-east-1 already has an AMI named "wsgi-app-1" (ami-existing)`) {
			t.Fatalf("want name clash, got %q", stateError(state))
		}
	}
}

func TestStepDeregister(t *testing.T) {
	cloud := newFakeCloud()
	r := cloud.region("us-east-1")
	r.images["ami-old"] = &ec2types.Image{ImageId: aws.String("ami-old"), Name: aws.String("wsgi-app-1"), OwnerId: aws.String("self"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{Ebs: &ec2types.EbsBlockDevice{SnapshotId: aws.String("snap-old")}}}}
	r.snapshots["snap-old"] = &ec2types.Snapshot{SnapshotId: aws.String("snap-old")}
	r.images["ami-other"] = &ec2types.Image{ImageId: aws.String("ami-other"), Name: aws.String("wsgi-app-2"), OwnerId: aws.String("self")}
	state, _ := testState(t)
	step := &stepDeregister{EC2: clientAs[deregisterAPI](cloud.regional()), Name: "wsgi-app-1", Regions: []string{"eu-west-1", "us-east-1"}}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	if got := cloud.leftovers(); strings.Join(got, ",") != "us-east-1 image ami-other" {
		t.Fatalf("left: %v", got)
	}
}

// imageState is the state after a successful stop of a real (fake) instance.
func imageState(t *testing.T, cloud *fakeCloud, c *Config) (*multistep.BasicStateBag, *stepRunInstance) {
	state, _ := runInstanceState(t, cloud)
	put(state, keyLedger, newImageLedger(clientAs[deleteImageAPI](cloud.regional()), c.AMIName, c.buildID))
	run := &stepRunInstance{EC2: cloud.client("eu-west-1"), Cfg: c, BuildID: c.buildID, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if run.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	return state, run
}

func TestStepCreateImage(t *testing.T) {
	cloud := newFakeCloud()
	c := testConfig(t, map[string]interface{}{
		"ami_description": "from {{ .SourceAMI }}",
		"tags":            map[string]string{"App": "demo"},
		"snapshot_tags":   map[string]string{"Backup": "no"},
	})
	state, run := imageState(t, cloud, c)
	step := &stepCreateImage{EC2: cloud.client("eu-west-1"), Cfg: c, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	id := get[map[string]string](state, keyImages)["eu-west-1"]
	img := cloud.region("eu-west-1").images[id]
	if aws.ToString(img.Description) != "from "+fakeSourceAMI {
		t.Errorf("description %q", aws.ToString(img.Description))
	}
	for k, v := range map[string]string{"App": "demo", awscfg.TagAMIFamily: "web", awscfg.TagBuildID: c.buildID, awscfg.TagSourceAMI: fakeSourceAMI, awscfg.TagBuilder: "wsgi-ami"} {
		if !hasTag(img.Tags, k, v) {
			t.Errorf("image tag %s=%s missing in %v", k, v, img.Tags)
		}
	}
	snap := cloud.region("eu-west-1").snapshots[get[map[string][]string](state, keySnapshots)["eu-west-1"][0]]
	if !hasTag(snap.Tags, "Backup", "no") || !hasTag(snap.Tags, awscfg.TagAMIFamily, "web") {
		t.Errorf("snapshot tags %v", snap.Tags)
	}
	// Success: the AMI stays.
	step.Cleanup(state)
	if len(calls(cloud, "eu-west-1 DeregisterImage")) != 0 {
		t.Fatal("cleanup after success deregistered the AMI")
	}
	// Failure later in the build: the AMI and its snapshot go.
	state.Put(multistep.StateHalted, true)
	step.Cleanup(state)
	run.Cleanup(state)
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("leftovers: %v", cloud.leftovers())
	}
}

func TestStepCreateImageLostAnswer(t *testing.T) {
	cloud := newFakeCloud()
	c := testConfig(t, nil)
	state, run := imageState(t, cloud, c)
	step := &stepCreateImage{EC2: &lostAnswer{cloud.client("eu-west-1"), "CreateImage"}, Cfg: c, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("want halt")
	}
	state.Put(multistep.StateHalted, true)
	step.Cleanup(state)
	run.Cleanup(state)
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("leftovers: %v", cloud.leftovers())
	}
}

func copyState(t *testing.T, cloud *fakeCloud, c *Config) (*multistep.BasicStateBag, []multistep.Step) {
	state, run := imageState(t, cloud, c)
	create := &stepCreateImage{EC2: cloud.client("eu-west-1"), Cfg: c, Region: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if create.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	return state, []multistep.Step{run, create}
}

func TestStepCopyImage(t *testing.T) {
	cloud := newFakeCloud()
	c := testConfig(t, map[string]interface{}{
		"ami_regions":        []string{"us-east-1", "ap-southeast-2"},
		"region_kms_key_ids": map[string]string{"us-east-1": "alias/ami"},
		"tags":               map[string]string{"App": "demo"},
	})
	state, _ := copyState(t, cloud, c)
	step := &stepCopyImage{EC2: clientAs[copyImageAPI](cloud.regional()), Cfg: c, SourceRegion: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	images := get[map[string]string](state, keyImages)
	if len(images) != 3 {
		t.Fatalf("images %v", images)
	}
	for _, region := range []string{"us-east-1", "ap-southeast-2"} {
		img := cloud.region(region).images[images[region]]
		if img == nil || !hasTag(img.Tags, "App", "demo") || !hasTag(img.Tags, awscfg.TagAMIFamily, "web") {
			t.Fatalf("%s copy %+v", region, img)
		}
		snap := cloud.region(region).snapshots[snapshotIDs(*img)[0]]
		if !hasTag(snap.Tags, awscfg.TagBuildID, c.buildID) || !aws.ToBool(snap.Encrypted) {
			t.Errorf("%s snapshot %+v", region, snap)
		}
	}
	if kms := aws.ToString(cloud.region("us-east-1").snapshots[get[map[string][]string](state, keySnapshots)["us-east-1"][0]].KmsKeyId); kms != "alias/ami" {
		t.Errorf("us-east-1 copy key %q", kms)
	}
	if kms := cloud.region("ap-southeast-2").snapshots[get[map[string][]string](state, keySnapshots)["ap-southeast-2"][0]].KmsKeyId; kms != nil {
		t.Errorf("ap-southeast-2 copy key %q", aws.ToString(kms))
	}
}

func TestStepCopyImageFailureRemovesFinishedCopies(t *testing.T) {
	cloud := newFakeCloud()
	c := testConfig(t, map[string]interface{}{"ami_regions": []string{"us-east-1", "ap-southeast-2"}})
	state, earlier := copyState(t, cloud, c)
	cloud.fail = func(region, action string, _ int) error {
		// The wait for the copy fails: after CopyImage made it.
		if region == "ap-southeast-2" && action == "DescribeImages" {
			return apiError("UnauthorizedOperation")
		}
		return nil
	}
	step := &stepCopyImage{EC2: clientAs[copyImageAPI](cloud.regional()), Cfg: c, SourceRegion: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionHalt || !strings.Contains(stateError(state), "ami_regions: ") {
		t.Fatalf("want halt, got %q", stateError(state))
	}
	cloud.fail = nil
	step.Cleanup(state)
	for i := len(earlier) - 1; i >= 0; i-- {
		earlier[i].Cleanup(state)
	}
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("leftovers: %v", cloud.leftovers())
	}
	if len(calls(cloud, "us-east-1 DeregisterImage")) != 1 || len(calls(cloud, "ap-southeast-2 DeregisterImage")) != 1 {
		t.Fatalf("copies not deregistered: %v", cloud.Calls())
	}
}

func TestStepCopyImageLostAnswer(t *testing.T) {
	cloud := newFakeCloud()
	c := testConfig(t, map[string]interface{}{"ami_regions": []string{"us-east-1"}})
	state, earlier := copyState(t, cloud, c)
	lost := func(_ context.Context, region string) (ec2API, error) {
		return &lostAnswer{cloud.client(region), "CopyImage"}, nil
	}
	step := &stepCopyImage{EC2: clientAs[copyImageAPI](lost), Cfg: c, SourceRegion: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if step.Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("want halt")
	}
	step.Cleanup(state)
	for i := len(earlier) - 1; i >= 0; i-- {
		earlier[i].Cleanup(state)
	}
	if len(cloud.leftovers()) != 0 {
		t.Fatalf("copy with a lost answer left: %v", cloud.leftovers())
	}
}

func TestStepImageAttributes(t *testing.T) {
	cloud := newFakeCloud()
	c := testConfig(t, map[string]interface{}{"ami_regions": []string{"us-east-1"}})
	state, _ := copyState(t, cloud, c)
	cp := &stepCopyImage{EC2: clientAs[copyImageAPI](cloud.regional()), Cfg: c, SourceRegion: "eu-west-1", Wait: waitConfig{Delay: time.Millisecond}}
	if cp.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	images := get[map[string]string](state, keyImages)
	// A copy that already requires IMDSv2 must not be set again (AWS refuses).
	cloud.region("us-east-1").images[images["us-east-1"]].ImdsSupport = ec2types.ImdsSupportValuesV20
	get[map[string]ec2types.Image](state, keyImageDetails)["us-east-1"] = *cloud.region("us-east-1").images[images["us-east-1"]]
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	step := &stepImageAttributes{
		EC2: clientAs[imageAttributeAPI](cloud.regional()), IMDSv2: true,
		Users: []string{"123456789012"}, OrgARNs: []string{"arn:aws:organizations::123456789012:organization/o-abc"}, DeprecateAt: at,
	}
	if step.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateError(state))
	}
	for region, id := range images {
		img := cloud.region(region).images[id]
		if img.ImdsSupport != ec2types.ImdsSupportValuesV20 {
			t.Errorf("%s imds %q", region, img.ImdsSupport)
		}
		perms := cloud.region(region).launch[id]
		if len(perms) != 2 || aws.ToString(perms[0].UserId) != "123456789012" || aws.ToString(perms[1].OrganizationArn) == "" {
			t.Errorf("%s launch permissions %+v", region, perms)
		}
		if cloud.region(region).deprecate[id] != "2030-01-02T03:04:00Z" {
			t.Errorf("%s deprecation %q", region, cloud.region(region).deprecate[id])
		}
	}
}

// TestStepSecurityGroupNoDefaultVPC: with no subnet or VPC the group goes to
// the default VPC; a region without one is named with the keys that fix it.
func TestStepSecurityGroupNoDefaultVPC(t *testing.T) {
	cloud := newFakeCloud()
	cloud.fail = func(region, action string, n int) error {
		if action == "CreateSecurityGroup" {
			return apiError("VPCIdNotSpecified")
		}
		return nil
	}
	state, _ := testState(t)
	step := &stepSecurityGroup{EC2: cloud.client("eu-west-1"), CIDRs: []string{"10.0.0.0/8"}, Port: 22, BuildID: "b1"}
	if step.Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("no default VPC: the step went on")
	}
	want := "vpc_id: this region has no default VPC; set subnet_id or vpc_id (creating security group packer_wsgi_b1: "
	if got := stateError(state); !strings.HasPrefix(got, want) || !strings.Contains(got, "VPCIdNotSpecified") {
		t.Fatalf("want %q..., got %q", want, got)
	}
}
