package builder

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type sessionAPI interface {
	StartSession(context.Context, *ssm.StartSessionInput, ...func(*ssm.Options)) (*ssm.StartSessionOutput, error)
	TerminateSession(context.Context, *ssm.TerminateSessionInput, ...func(*ssm.Options)) (*ssm.TerminateSessionOutput, error)
}

// sessionPlugin is AWS's plugin that carries a Session Manager session; the
// AWS CLI runs it the same way.
const sessionPlugin = "session-manager-plugin"

// portForwardDocument forwards a local port to a port on the instance.
const portForwardDocument = "AWS-StartPortForwardingSession"

// stepSessionManager opens the SSH tunnel of ssh_interface =
// "session_manager": StartSession on the instance with the port-forwarding
// document, then session-manager-plugin listening on 127.0.0.1:LocalPort.
// Cleanup stops the plugin and terminates the session, also after Ctrl-C.
type stepSessionManager struct {
	SSM        sessionAPI
	Region     string
	Endpoint   string // the SSM endpoint the plugin is told about
	RemotePort int
	LocalPort  int // 0: a free port
	Pause      time.Duration
	Wait       waitConfig
	// Plugin is the program to run; empty means session-manager-plugin
	// on PATH.
	Plugin string
	// Ready bounds the wait for the plugin's local port; 0 means 1m.
	Ready time.Duration

	sessionID string
	cmd       *exec.Cmd
	exited    chan struct{}
	exitErr   error
}

func (s *stepSessionManager) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	u := ui(state)
	inst := get[ec2types.Instance](state, keyInstance)
	id := aws.ToString(inst.InstanceId)
	plugin := s.Plugin
	if plugin == "" {
		plugin = sessionPlugin
	}
	path, err := exec.LookPath(plugin)
	if err != nil {
		return halt(state, fmt.Errorf("ssh_interface: \"session_manager\" runs AWS's %s, which is not on PATH (%w); install it (see the Session Manager plugin page of the AWS Systems Manager guide)", plugin, err))
	}
	if s.Pause > 0 {
		say(u, fmt.Sprintf("pause_before_ssm: waiting %s before starting the session", s.Pause))
		select {
		case <-time.After(s.Pause):
		case <-ctx.Done():
			return halt(state, ctx.Err())
		}
	}
	port := s.LocalPort
	if port == 0 {
		if port, err = freePort(); err != nil {
			return halt(state, fmt.Errorf("session_manager_port: finding a free local port: %w; set session_manager_port", err))
		}
	}
	in := &ssm.StartSessionInput{
		Target:       aws.String(id),
		DocumentName: aws.String(portForwardDocument),
		Parameters: map[string][]string{
			"portNumber":      {strconv.Itoa(s.RemotePort)},
			"localPortNumber": {strconv.Itoa(port)},
		},
	}
	say(u, fmt.Sprintf("Starting a Session Manager session to %s (port %d on 127.0.0.1 to port %d)", id, port, s.RemotePort))
	out, err := s.start(ctx, in)
	if err != nil {
		return halt(state, fmt.Errorf("ssh_interface: starting a Session Manager session to %s: %w; the instance needs iam_instance_profile with AmazonSSMManagedInstanceCore and a running SSM agent, and you ssm:StartSession on it", id, err))
	}
	s.sessionID = aws.ToString(out.SessionId)
	session, err := json.Marshal(struct {
		SessionId, StreamUrl, TokenValue string
	}{s.sessionID, aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)})
	if err != nil {
		return halt(state, err)
	}
	params, err := json.Marshal(struct {
		Target       string
		DocumentName string
		Parameters   map[string][]string
	}{id, portForwardDocument, in.Parameters})
	if err != nil {
		return halt(state, err)
	}
	// The order the plugin reads: session, region, operation, profile,
	// parameters, endpoint. Credentials are in the session's token, not
	// in the arguments.
	cmd := exec.Command(path, string(session), s.Region, "StartSession", "", string(params), s.Endpoint)
	// Its own process group: Ctrl-C reaches packer, and Cleanup stops the
	// plugin after the builder's other cleanups have started, not before.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go logLines(pr, sessionPlugin+": ")
	if err := cmd.Start(); err != nil {
		pw.Close()
		return halt(state, fmt.Errorf("starting %s: %w", path, err))
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() {
		s.exitErr = cmd.Wait()
		pw.Close()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, port); err != nil {
		return halt(state, fmt.Errorf("ssh_interface: the Session Manager tunnel on 127.0.0.1:%d: %w", port, err))
	}
	put(state, keyTunnelPort, port)
	return multistep.ActionContinue
}

// start retries TargetNotConnected: the agent registers some time after
// the instance runs.
func (s *stepSessionManager) start(ctx context.Context, in *ssm.StartSessionInput) (*ssm.StartSessionOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Wait.timeout())
	defer cancel()
	delay := s.Wait.minDelay()
	for {
		out, err := s.SSM.StartSession(ctx, in)
		var ae smithy.APIError
		if err == nil || !errors.As(err, &ae) || ae.ErrorCode() != "TargetNotConnected" {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the SSM agent did not connect in %s: %w", s.Wait.timeout(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// waitReady waits until the plugin accepts connections on the local port.
func (s *stepSessionManager) waitReady(ctx context.Context, port int) error {
	ready := s.Ready
	if ready == 0 {
		ready = time.Minute
	}
	deadline := time.After(ready)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it listened: %v", sessionPlugin, s.exitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s did not listen in %s", sessionPlugin, ready)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *stepSessionManager) Cleanup(state multistep.StateBag) {
	u := ui(state)
	if s.cmd != nil {
		stopProcessGroup(s.cmd, s.exited)
		s.cmd = nil
	}
	if s.sessionID == "" {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	say(u, fmt.Sprintf("Terminating Session Manager session %s", s.sessionID))
	if _, err := s.SSM.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: aws.String(s.sessionID)}); err != nil {
		sayErr(u, fmt.Sprintf("terminating Session Manager session %s: %v; it ends by itself after 20 minutes idle, or terminate it by hand", s.sessionID, err))
	}
	s.sessionID = ""
}

// stopProcessGroup ends the plugin: SIGTERM to its group, SIGKILL after 5s.
func stopProcessGroup(cmd *exec.Cmd, exited <-chan struct{}) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logLines copies the plugin's output to packer's log (PACKER_LOG=1).
func logLines(r io.Reader, prefix string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		log.Print(prefix + sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}
