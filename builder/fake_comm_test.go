package builder

import (
	"context"
	"io"
	"strings"
	"sync"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// testStackFile is what wsgi-stack bakes into the image, as the tests' instance has it.
const testStackFile = `{"schema":1,"provides":["schema-1","aws-requests","git"],"app_name":"shop"}` + "\n"

// remoteAnswer is what one command prints and how it exits.
type remoteAnswer struct {
	stdout, stderr string
	status         int
}

// scriptComm is a communicator that answers each command from a table and
// records the commands in order. A command not in the table exits 127, as
// a shell does for an unknown command.
type scriptComm struct {
	packersdk.MockCommunicator // Upload and Download, which the builder does not use

	mu      sync.Mutex
	answers map[string]remoteAnswer
	ran     []string
}

// newScriptComm answers as an instance baked by wsgi-stack: cloud-init done,
// the stack file present.
func newScriptComm() *scriptComm {
	return &scriptComm{answers: map[string]remoteAnswer{
		cloudInitWaitCommand: {stdout: "status: done\n"},
		stackReadCommand:     {stdout: testStackFile},
	}}
}

func (c *scriptComm) Start(_ context.Context, rc *packersdk.RemoteCmd) error {
	c.mu.Lock()
	c.ran = append(c.ran, rc.Command)
	a, ok := c.answers[rc.Command]
	c.mu.Unlock()
	if !ok {
		a = remoteAnswer{stderr: "sh: command not found\n", status: 127}
	}
	go func() {
		if rc.Stdout != nil {
			_, _ = io.Copy(rc.Stdout, strings.NewReader(a.stdout))
		}
		if rc.Stderr != nil {
			_, _ = io.Copy(rc.Stderr, strings.NewReader(a.stderr))
		}
		rc.SetExited(a.status)
	}()
	return nil
}

func (c *scriptComm) commands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ran...)
}
