package builder

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// cloudInitWaitCommand blocks until cloud-init has finished all stages.
const cloudInitWaitCommand = "cloud-init status --wait"

// stepWaitCloudInit waits for cloud-init on the build instance before the
// provisioners run, so they do not race its package installs and apt locks.
// Exit 2 (done with recoverable errors, cloud-init 23.4+) is a warning; an
// image without cloud-init (exit 127) is reported and skipped.
type stepWaitCloudInit struct{}

func (s *stepWaitCloudInit) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	comm := get[packersdk.Communicator](state, keyComm)
	u := ui(state)
	if comm == nil {
		return halt(state, fmt.Errorf("waiting for cloud-init: no communicator"))
	}
	var out bytes.Buffer
	cmd := &packersdk.RemoteCmd{Command: cloudInitWaitCommand, Stdout: &out, Stderr: &out}
	var status int
	err := waitFor(ctx, u, "cloud-init to finish", func(ctx context.Context) error {
		if err := comm.Start(ctx, cmd); err != nil {
			return err
		}
		done := make(chan int, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case status = <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		return halt(state, err)
	}
	last := lastLine(out.String())
	switch status {
	case 0:
	case 2:
		say(u, fmt.Sprintf("Warning: cloud-init finished with recoverable errors: %s", last))
	case 127:
		say(u, "cloud-init is not installed on the build instance; not waiting for it")
	default:
		return halt(state, fmt.Errorf("cloud-init on the build instance failed (exit %d): %s; see /var/log/cloud-init-output.log on the instance, or set skip_cloud_init_wait", status, last))
	}
	return multistep.ActionContinue
}

func (s *stepWaitCloudInit) Cleanup(multistep.StateBag) {}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
