package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// The test binary doubles as session-manager-plugin: with
// WSGI_FAKE_SSM_PLUGIN set to a folder it records its pid and arguments
// there and listens on the parameters' localPortNumber until it is
// stopped, as the real plugin does (without any AWS behind it).
const fakePluginEnv = "WSGI_FAKE_SSM_PLUGIN"

func TestMain(m *testing.M) {
	if dir := os.Getenv(fakePluginEnv); dir != "" {
		os.Exit(fakePlugin(dir))
	}
	os.Exit(m.Run())
}

func fakePlugin(dir string) int {
	args, _ := json.Marshal(os.Args[1:])
	_ = os.WriteFile(filepath.Join(dir, "args.json"), args, 0o644)
	_ = os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	if os.Getenv(fakePluginEnv+"_FAIL") != "" {
		fmt.Fprintln(os.Stderr, "fake plugin: told to fail")
		return 3
	}
	var params struct{ Parameters map[string][]string }
	if len(os.Args) < 7 || json.Unmarshal([]byte(os.Args[5]), &params) != nil || len(params.Parameters["localPortNumber"]) != 1 {
		fmt.Fprintln(os.Stderr, "fake plugin: bad arguments")
		return 2
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+params.Parameters["localPortNumber"][0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		c.Close()
	}
}

// ssmBuilder is fullConfig through Session Manager.
func ssmBuilder(t *testing.T, set map[string]interface{}) *Builder {
	t.Helper()
	b := &Builder{}
	raw := minimal()
	raw["ssh_interface"] = "session_manager"
	raw["iam_instance_profile"] = "ssm-core"
	raw["ami_name"] = "wsgi-app-1"
	raw["aws_polling"] = map[string]interface{}{"delay": "1ms", "timeout": "10s"}
	for k, v := range set {
		raw[k] = v
	}
	if _, _, err := b.Prepare(raw); err != nil {
		t.Fatal(err)
	}
	return b
}

// runSSMBuild runs b with the test binary as the plugin; dir is where the
// plugin records what it got.
func runSSMBuild(ctx context.Context, t *testing.T, b *Builder, cloud *fakeCloud, fail bool) (buildResult, string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(fakePluginEnv, dir)
	if fail {
		t.Setenv(fakePluginEnv+"_FAIL", "1")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	steps := b.steps("eu-west-1", cloud.client("eu-west-1"), cloud.regional(), &fakeSSM{cloud})
	found := false
	for _, s := range steps {
		if sm, ok := s.(*stepSessionManager); ok {
			sm.Plugin, sm.Ready = exe, 10*time.Second
			found = true
		}
	}
	if !found {
		t.Fatal("no session manager step in the build")
	}
	u := &recUI{Ui: packersdk.TestUi(t)}
	state := b.newState(u, &packersdk.MockHook{}, cloud.regional())
	// The connect step only checks that the tunnel listens where the
	// communicator is sent.
	for i, s := range steps {
		if _, ok := s.(*stepSessionManager); ok {
			steps[i+1] = &tunnelConnect{host: sshHost(&b.config), port: sshPort(&b.config), comm: newScriptComm()}
		}
	}
	(&multistep.BasicRunner{Steps: steps}).Run(ctx, state)
	art, err := b.artifact(ctx, state, "eu-west-1", cloud.regional())
	return buildResult{artifact: art, err: err, ui: u}, dir
}

// tunnelConnect dials the host and port the SSH communicator would use.
type tunnelConnect struct {
	host func(multistep.StateBag) (string, error)
	port func(multistep.StateBag) (int, error)
	comm *scriptComm
}

func (c *tunnelConnect) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	h, err := c.host(state)
	if err != nil {
		return halt(state, err)
	}
	p, err := c.port(state)
	if err != nil {
		return halt(state, err)
	}
	conn, err := net.Dial("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
	if err != nil {
		return halt(state, fmt.Errorf("dialling the tunnel: %w", err))
	}
	conn.Close()
	put(state, keyComm, c.comm)
	return multistep.ActionContinue
}

func (c *tunnelConnect) Cleanup(multistep.StateBag) {}

// pluginGone reports whether the plugin the build ran has exited (or never
// started).
func pluginGone(t *testing.T, dir string) (started, gone bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if errors.Is(err, os.ErrNotExist) {
		return false, true
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return true, syscall.Kill(pid, 0) != nil
}

func TestSessionManagerBuild(t *testing.T) {
	cloud := newFakeCloud()
	res, dir := runSSMBuild(context.Background(), t, ssmBuilder(t, map[string]interface{}{"session_manager_port": 0}), cloud, false)
	if res.err != nil {
		t.Fatalf("%v\n%s", res.err, res.ui.text())
	}
	all := strings.Join(cloud.Calls(), "\n")
	for _, not := range []string{"AuthorizeSecurityGroupIngress", "DescribeSessions"} {
		if strings.Contains(all, not) {
			t.Errorf("Session Manager build called %s:\n%s", not, all)
		}
	}
	for _, want := range []string{"eu-west-1 CreateSecurityGroup", "ssm StartSession", "ssm TerminateSession"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %s in:\n%s", want, all)
		}
	}
	if i, j := strings.Index(all, "ssm TerminateSession"), strings.Index(all, "eu-west-1 CreateImage"); i < j {
		t.Errorf("session terminated before the image was made (the tunnel is needed until the provisioners end):\n%s", all)
	}
	var args []string
	raw, err := os.ReadFile(filepath.Join(dir, "args.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &args); err != nil || len(args) != 6 {
		t.Fatalf("plugin arguments %s: %v", raw, err)
	}
	var session struct{ SessionId, StreamUrl, TokenValue string }
	var params struct {
		Target, DocumentName string
		Parameters           map[string][]string
	}
	if err := json.Unmarshal([]byte(args[0]), &session); err != nil || !strings.HasPrefix(session.SessionId, "session-") || session.TokenValue != "token" {
		t.Errorf("session argument %q: %v", args[0], err)
	}
	if args[1] != "eu-west-1" || args[2] != "StartSession" || args[3] != "" || args[5] != "https://ssm.eu-west-1.amazonaws.com" {
		t.Errorf("plugin arguments: %q", args)
	}
	if err := json.Unmarshal([]byte(args[4]), &params); err != nil || params.DocumentName != "AWS-StartPortForwardingSession" ||
		!strings.HasPrefix(params.Target, "i-") || params.Parameters["portNumber"][0] != "22" || params.Parameters["localPortNumber"][0] == "0" {
		t.Errorf("parameters argument %q: %v", args[4], err)
	}
	if started, gone := pluginGone(t, dir); !started || !gone {
		t.Errorf("plugin started %v, exited %v", started, gone)
	}
	for _, l := range cloud.leftovers() {
		if !strings.Contains(l, " image ") && !strings.Contains(l, " snapshot ") {
			t.Errorf("left behind: %s", l)
		}
	}
	if !strings.Contains(res.ui.text(), "no inbound rule: SSH goes through Session Manager") {
		t.Errorf("no line about the group without ingress:\n%s", res.ui.text())
	}
}

func TestSessionManagerLocalPort(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cloud := newFakeCloud()
	res, _ := runSSMBuild(context.Background(), t, ssmBuilder(t, map[string]interface{}{"session_manager_port": port}), cloud, false)
	if res.err != nil {
		t.Fatalf("%v\n%s", res.err, res.ui.text())
	}
	if !strings.Contains(res.ui.text(), fmt.Sprintf("port %d on 127.0.0.1 to port 22", port)) {
		t.Errorf("session_manager_port %d not used:\n%s", port, res.ui.text())
	}
}

// TestSessionManagerFaults: every way the tunnel can fail leaves no
// instance, group, key, session or plugin process behind.
func TestSessionManagerFaults(t *testing.T) {
	tests := []struct {
		name       string
		fail       func(region, action string, n int) error
		cancelAt   string // cancel the build right after this call
		pluginFail bool
		wantErr    string // empty: the build succeeds
		started    bool   // the plugin ran
		maybe      bool   // it may have been stopped before it recorded that it ran
		lost       func(n int) bool
		calls      []string // made in this order (others between)
		reported   string   // a session may be left if the build says this
	}{
		{name: "StartSession denied", fail: failAt("ssm", "StartSession", 1, 1, "AccessDeniedException"),
			wantErr: "ssh_interface: starting a Session Manager session to i-"},
		{name: "agent not yet connected", fail: failAt("ssm", "StartSession", 1, 3, "TargetNotConnected"), started: true},
		{name: "plugin exits", pluginFail: true, started: true,
			wantErr: "session-manager-plugin exited before it listened: exit status 3"},
		{name: "Ctrl-C after StartSession", cancelAt: "ssm StartSession", maybe: true, wantErr: "context canceled"},
		{name: "Ctrl-C during the session", cancelAt: "eu-west-1 StopInstances", started: true, wantErr: "build was cancelled"},
		{name: "TerminateSession fails", fail: failAt("ssm", "TerminateSession", 1, 1, "InternalError"), started: true},
		// StartSession made a session but its answer was lost: the retry's
		// session is used, and Cleanup finds the first by its target.
		{name: "StartSession answer lost", lost: func(n int) bool { return n == 1 }, started: true,
			calls: []string{"ssm TerminateSession", "ssm DescribeSessions", "ssm TerminateSession"}},
		{name: "StartSession answers lost three times", lost: func(int) bool { return true },
			wantErr: "connection reset by peer", calls: []string{"ssm StartSession", "ssm StartSession", "ssm StartSession", "ssm DescribeSessions"}},
		{name: "StartSession 5xx", fail: failWith("ssm", "StartSession", 1, serverError("InternalServerError")), started: true,
			calls: []string{"ssm DescribeSessions"}},
		{name: "StartSession answer lost, DescribeSessions denied", lost: func(n int) bool { return n == 1 },
			fail: failAt("ssm", "DescribeSessions", 1, 1, "AccessDeniedException"), started: true, reported: "terminate any session to i-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cloud := newFakeCloud()
			cloud.fail = tt.fail
			cloud.lostStart = tt.lost
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelAt != "" {
				region, action, _ := strings.Cut(tt.cancelAt, " ")
				cloud.after = func(r, a string, n int) {
					if r == region && a == action && n == 1 {
						cancel()
					}
				}
			}
			res, dir := runSSMBuild(ctx, t, ssmBuilder(t, nil), cloud, tt.pluginFail)
			switch {
			case tt.wantErr == "" && res.err != nil:
				t.Fatalf("build failed: %v\n%s", res.err, res.ui.text())
			case tt.wantErr != "" && (res.err == nil || !strings.Contains(res.ui.text()+res.err.Error(), tt.wantErr)):
				t.Fatalf("want error %q, got %v\n%s", tt.wantErr, res.err, res.ui.text())
			}
			if !inOrder(cloud.Calls(), tt.calls) {
				t.Errorf("want the calls %q in this order in:\n%s", tt.calls, strings.Join(cloud.Calls(), "\n"))
			}
			if tt.lost == nil && tt.calls == nil && slices.Contains(cloud.Calls(), "ssm DescribeSessions") {
				t.Errorf("DescribeSessions though every StartSession was answered:\n%s", strings.Join(cloud.Calls(), "\n"))
			}
			started, gone := pluginGone(t, dir)
			if (started != tt.started && !tt.maybe) || !gone {
				t.Errorf("plugin started %v (want %v), exited %v", started, tt.started, gone)
			}
			for _, l := range cloud.leftovers() {
				if res.err == nil && (strings.Contains(l, " image ") || strings.Contains(l, " snapshot ")) {
					continue
				}
				if tt.reported != "" && strings.HasPrefix(l, "ssm session ") {
					if !strings.Contains(res.ui.text(), tt.reported) {
						t.Errorf("session left and not reported (%q):\n%s", tt.reported, res.ui.text())
					}
					continue
				}
				if strings.HasPrefix(tt.name, "TerminateSession") && strings.HasPrefix(l, "ssm session ") {
					if !strings.Contains(res.ui.text(), "terminate it by hand") {
						t.Errorf("failed TerminateSession not reported:\n%s", res.ui.text())
					}
					continue
				}
				t.Errorf("left behind: %s", l)
			}
		})
	}
}

// inOrder reports whether want occur in calls in that order.
func inOrder(calls, want []string) bool {
	for _, c := range calls {
		if len(want) > 0 && c == want[0] {
			want = want[1:]
		}
	}
	return len(want) == 0
}

// serverError is an API error with HTTP status 500, as the SDK returns it.
func serverError(code string) error {
	return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 500}},
		Err:      apiError(code),
	}}
}

// failWith fails the n-th call of region's action with err.
func failWith(region, action string, n int, err error) func(string, string, int) error {
	return func(r, a string, k int) error {
		if r == region && a == action && k == n {
			return err
		}
		return nil
	}
}

// failAt fails calls n..n+times-1 of region's action with code.
func failAt(region, action string, n, times int, code string) func(string, string, int) error {
	return func(r, a string, k int) error {
		if r == region && a == action && k >= n && k < n+times {
			return apiError(code)
		}
		return nil
	}
}

func TestSSHHostInterfaces(t *testing.T) {
	inst := map[string]*string{
		"public_ip": aws.String("203.0.113.9"), "private_ip": aws.String("10.0.0.9"),
		"public_dns": aws.String("ec2-203-0-113-9.eu-west-1.compute.amazonaws.com"), "private_dns": aws.String("ip-10-0-0-9.eu-west-1.compute.internal"),
	}
	for _, tt := range []struct {
		iface   string
		blank   string // the instance lacks this
		want    string
		wantErr string
	}{
		{iface: "", want: "203.0.113.9"},
		{iface: "", blank: "public_ip", want: "10.0.0.9"},
		{iface: "public_ip", want: "203.0.113.9"},
		{iface: "private_ip", want: "10.0.0.9"},
		{iface: "public_dns", want: "ec2-203-0-113-9.eu-west-1.compute.amazonaws.com"},
		{iface: "private_dns", want: "ip-10-0-0-9.eu-west-1.compute.internal"},
		{iface: "public_dns", blank: "public_dns", wantErr: "ssh_interface: instance i-1 has no public DNS name (the VPC needs DNS hostnames enabled); set ssh_interface or ssh_host"},
		{iface: "public_ip", blank: "public_ip", wantErr: "ssh_interface: instance i-1 has no public address; set ssh_interface or ssh_host"},
	} {
		t.Run(tt.iface+"/"+tt.blank, func(t *testing.T) {
			set := map[string]interface{}{"communicator": "ssh"}
			if tt.iface != "" {
				set["ssh_interface"] = tt.iface
			}
			c := testConfig(t, set)
			v := func(k string) *string {
				if k == tt.blank {
					return nil
				}
				return inst[k]
			}
			state, _ := testState(t)
			put(state, keyInstance, instanceWith("i-1", v("public_ip"), v("private_ip"), v("public_dns"), v("private_dns")))
			got, err := sshHost(c)(state)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("want error %q, got %q, %v", tt.wantErr, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if p, err := sshPort(c)(state); err != nil || p != 22 {
				t.Fatalf("port %d, %v", p, err)
			}
		})
	}
}

func instanceWith(id string, pub, priv, pubDNS, privDNS *string) ec2types.Instance {
	return ec2types.Instance{InstanceId: aws.String(id), PublicIpAddress: pub, PrivateIpAddress: priv, PublicDnsName: pubDNS, PrivateDnsName: privDNS}
}
