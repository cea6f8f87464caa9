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
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

type sessionAPI interface {
	StartSession(context.Context, *ssm.StartSessionInput, ...func(*ssm.Options)) (*ssm.StartSessionOutput, error)
	TerminateSession(context.Context, *ssm.TerminateSessionInput, ...func(*ssm.Options)) (*ssm.TerminateSessionOutput, error)
	DescribeSessions(context.Context, *ssm.DescribeSessionsInput, ...func(*ssm.Options)) (*ssm.DescribeSessionsOutput, error)
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

	target    string
	sessionID string
	// unsure: a StartSession got no answer (a transport error, a timeout,
	// a 5xx), so AWS may have made a session whose id we never saw.
	unsure  bool
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
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
	s.target = id
	out, err := s.start(ctx, in)
	if out != nil {
		// Kept before anything else: Cleanup terminates it even when the
		// build was cancelled while the answer was on its way.
		s.sessionID = aws.ToString(out.SessionId)
	}
	if ctx.Err() != nil {
		return halt(state, ctx.Err())
	}
	if err != nil {
		return halt(state, fmt.Errorf("ssh_interface: starting a Session Manager session to %s: %w; the instance needs iam_instance_profile with AmazonSSMManagedInstanceCore and a running SSM agent, and you ssm:StartSession on it", id, err))
	}
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

// startAttempt bounds one StartSession call, which runs on after Ctrl-C.
const startAttempt = 30 * time.Second

// start calls StartSession until it answers, retrying what made no session:
// TargetNotConnected (the agent registers some time after the instance
// runs) and throttling.
//
// StartSession is not idempotent: an attempt whose answer is lost may have
// made a session all the same. Two rules keep such a session from being
// left open (the fault table found one after a Ctrl-C right after
// StartSession, when the cancelled call dropped an answer AWS had sent):
//   - Each attempt runs detached from ctx, bounded by startAttempt, so a
//     Ctrl-C never drops an answer on its way; Run checks ctx after it.
//     Detaching costs at most startAttempt of delay on Ctrl-C and no call;
//     only looking the sessions up afterwards would cost a call in every
//     cancelled build and ssm:DescribeSessions in the policy.
//   - The SDK does not retry this call (its retries of a 5xx or a broken
//     connection would each make a session, and only the last id would
//     reach us). An attempt that got no answer sets s.unsure, and Cleanup
//     then looks up the sessions to the instance (DescribeSessions) and
//     terminates them.
func (s *stepSessionManager) start(ctx context.Context, in *ssm.StartSessionInput) (*ssm.StartSessionOutput, error) {
	deadline := time.Now().Add(s.Wait.timeout())
	delay := s.Wait.minDelay()
	unanswered := 0
	for {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startAttempt)
		out, err := s.SSM.StartSession(actx, in, func(o *ssm.Options) { o.RetryMaxAttempts = 1 })
		cancel()
		if err == nil {
			return out, nil
		}
		code, answered := startErrorKind(err)
		if !answered {
			s.unsure = true
			unanswered++
		}
		switch {
		case ctx.Err() != nil:
			return nil, err
		case !answered && unanswered == 3:
			return nil, err
		case answered && code != "TargetNotConnected" && code != "ThrottlingException":
			return nil, err
		}
		if time.Now().Add(delay).After(deadline) {
			if code == "TargetNotConnected" {
				return nil, fmt.Errorf("the SSM agent did not connect in %s: %w", s.Wait.timeout(), err)
			}
			return nil, fmt.Errorf("no session in %s: %w", s.Wait.timeout(), err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// startErrorKind: the error code, and whether Systems Manager answered with
// a refusal that made no session (an API error below HTTP 500). A broken
// connection, a timeout or a 5xx leaves it unknown whether a session was
// made.
func startErrorKind(err error) (code string, answered bool) {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return "", false
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return ae.ErrorCode(), false
	}
	return ae.ErrorCode(), true
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
	if s.sessionID == "" && !s.unsure {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	if s.sessionID != "" {
		s.terminate(ctx, u, s.sessionID)
	}
	if s.unsure {
		s.terminateUnknown(ctx, u)
	}
	s.sessionID, s.unsure = "", false
}

func (s *stepSessionManager) terminate(ctx context.Context, u uiSayer, id string) {
	say(u, fmt.Sprintf("Terminating Session Manager session %s", id))
	if _, err := s.SSM.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: aws.String(id)}); err != nil {
		sayErr(u, fmt.Sprintf("terminating Session Manager session %s: %v; it ends by itself after 20 minutes idle, or terminate it by hand", id, err))
	}
}

// terminateUnknown terminates the active sessions to the instance other
// than the one already terminated: those a StartSession without an answer
// may have made. The instance is the build's own, so every session to it
// is the build's.
func (s *stepSessionManager) terminateUnknown(ctx context.Context, u uiSayer) {
	in := &ssm.DescribeSessionsInput{
		State:   ssmtypes.SessionStateActive,
		Filters: []ssmtypes.SessionFilter{{Key: ssmtypes.SessionFilterKeyTargetId, Value: aws.String(s.target)}},
	}
	for {
		out, err := s.SSM.DescribeSessions(ctx, in)
		if err != nil {
			sayErr(u, fmt.Sprintf("a StartSession to %s got no answer, and listing its sessions failed: %v; terminate any session to %s by hand (Session Manager console or `aws ssm terminate-session`; listing needs ssm:DescribeSessions)", s.target, err, s.target))
			return
		}
		for _, sess := range out.Sessions {
			if id := aws.ToString(sess.SessionId); id != s.sessionID && aws.ToString(sess.Target) == s.target {
				s.terminate(ctx, u, id)
			}
		}
		if aws.ToString(out.NextToken) == "" {
			return
		}
		in.NextToken = out.NextToken
	}
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
