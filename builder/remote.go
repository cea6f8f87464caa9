package builder

import (
	"bytes"
	"context"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// remoteResult is what a command on the build instance printed and how it exited.
type remoteResult struct {
	stdout, stderr string
	status         int
}

// runRemote runs one command on the build instance and waits for it, or
// for ctx: the SDK's RemoteCmd.Wait does not watch a context.
func runRemote(ctx context.Context, comm packersdk.Communicator, command string) (remoteResult, error) {
	var stdout, stderr bytes.Buffer
	cmd := &packersdk.RemoteCmd{Command: command, Stdout: &stdout, Stderr: &stderr}
	if err := comm.Start(ctx, cmd); err != nil {
		return remoteResult{}, err
	}
	done := make(chan int, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case status := <-done:
		return remoteResult{stdout: stdout.String(), stderr: stderr.String(), status: status}, nil
	case <-ctx.Done():
		return remoteResult{}, ctx.Err()
	}
}

// lastLine is the last non-empty line of a command's output, for messages.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
