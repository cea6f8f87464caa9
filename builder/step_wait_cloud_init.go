package builder

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// cloudInitWaitCommand blocks until cloud-init has finished all stages.
const cloudInitWaitCommand = "cloud-init status --wait"

// GeneratedCloudInitDone is the generated-data variable (`build.CloudInitDone`)
// that says "true" once this step has waited for cloud-init, so that a
// provisioner (wsgi-stack) need not wait a second time. It is "false" until
// then, and stays "false" with skip_cloud_init_wait or the none communicator.
const GeneratedCloudInitDone = "CloudInitDone"

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
	var res remoteResult
	err := waitFor(ctx, u, "cloud-init to finish", func(ctx context.Context) error {
		var err error
		res, err = runRemote(ctx, comm, cloudInitWaitCommand)
		return err
	})
	if err != nil {
		return halt(state, err)
	}
	last := lastLine(res.stdout + "\n" + res.stderr)
	switch res.status {
	case 0:
	case 2:
		say(u, fmt.Sprintf("Warning: cloud-init finished with recoverable errors: %s", last))
	case 127:
		say(u, "cloud-init is not installed on the build instance; not waiting for it")
	default:
		return halt(state, fmt.Errorf("cloud-init on the build instance failed (exit %d): %s; see /var/log/cloud-init-output.log on the instance, or set skip_cloud_init_wait", res.status, last))
	}
	// Exit 127 counts as done too: there is no cloud-init to wait for.
	putGenerated(state, map[string]string{GeneratedCloudInitDone: "true"})
	return multistep.ActionContinue
}

func (s *stepWaitCloudInit) Cleanup(multistep.StateBag) {}
