package builder

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// stateKey names a value in the state bag. Every value the steps pass to
// each other has a key here and is read through get, so a typo or a wrong
// type is a compile error or a clear message, not a nil interface panic.
type stateKey string

const (
	keyUI            stateKey = "ui"   // packersdk.Ui, put by Run
	keyHook          stateKey = "hook" // packersdk.Hook, put by Run
	keyComm          stateKey = "communicator"
	keySourceImage   stateKey = "wsgi_source_image"   // ec2types.Image
	keySubnetID      stateKey = "wsgi_subnet_id"      // string, may be empty
	keyVpcID         stateKey = "wsgi_vpc_id"         // string, may be empty
	keyKeyPairName   stateKey = "wsgi_key_pair_name"  // string
	keyPrivateKey    stateKey = "privateKey"          // string, read by the SDK's SSHConfigFunc
	keySecurityGroup stateKey = "wsgi_security_group" // []string ids for RunInstances
	keyInstance      stateKey = "wsgi_instance"       // ec2types.Instance
	keyInstanceType  stateKey = "wsgi_instance_type"  // string, the type that got capacity
	keyImages        stateKey = "wsgi_images"         // map[string]string region -> AMI id
	keySnapshots     stateKey = "wsgi_snapshots"      // map[string][]string region -> snapshot ids
	keyImageDetails  stateKey = "wsgi_image_details"  // map[string]ec2types.Image region -> AMI
	keyStackTags     stateKey = "wsgi_stack_tags"     // map[string]string, the wsgi:stack-* tags; absent without a stack
	keyGenerated     stateKey = "generated_data"      // map[string]interface{}
	keyComplete      stateKey = "wsgi_complete"       // bool, set by the last step
)

// uiSayer is what progress reporting needs from the UI.
type uiSayer interface {
	Say(string)
	Error(string)
}

func put(state multistep.StateBag, k stateKey, v interface{}) { state.Put(string(k), v) }

// get returns the value under k, or the zero value of T when it is absent.
func get[T any](state multistep.StateBag, k stateKey) T {
	v, _ := state.GetOk(string(k))
	t, _ := v.(T)
	return t
}

func ui(state multistep.StateBag) packersdk.Ui { return get[packersdk.Ui](state, keyUI) }

// halt is the one way a step fails: the error goes to the state bag for
// Run to return and to the UI.
func halt(state multistep.StateBag, err error) multistep.StepAction {
	state.Put("error", err)
	if u := ui(state); u != nil {
		u.Error(err.Error())
	}
	return multistep.ActionHalt
}

// failed reports whether the build is ending without success, so cleanups
// of artifacts (the AMI, region copies) know whether to remove them.
func failed(state multistep.StateBag) bool {
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	_, errored := state.GetOk("error")
	return cancelled || halted || errored
}

// cleanupTimeout bounds each Cleanup. Cleanups run after the build context
// may have been cancelled (Ctrl-C), so they use their own.
const cleanupTimeout = 15 * time.Minute

func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cleanupTimeout)
}

// progressEvery is how often a long wait prints that it is still waiting.
var progressEvery = 15 * time.Second

// waitFor runs an SDK waiter (fn) and prints a line when it starts, every
// progressEvery while it runs, and when it ends, each with the elapsed time.
// The polling itself is the SDK waiter's; this only reports.
func waitFor(ctx context.Context, u uiSayer, what string, fn func(context.Context) error) error {
	start := time.Now()
	say(u, fmt.Sprintf("Waiting for %s...", what))
	every := progressEvery
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				say(u, fmt.Sprintf("Still waiting for %s (%s elapsed)", what, time.Since(start).Round(time.Second)))
			}
		}
	}()
	err := fn(ctx)
	close(done)
	<-exited
	if err != nil {
		return fmt.Errorf("waiting for %s after %s: %w", what, time.Since(start).Round(time.Second), err)
	}
	say(u, fmt.Sprintf("%s after %s", capitalize(what), time.Since(start).Round(100*time.Millisecond)))
	return nil
}

func say(u uiSayer, msg string) {
	if u != nil {
		u.Say(msg)
	}
}

func sayErr(u uiSayer, msg string) {
	if u != nil {
		u.Error(msg)
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	if s[0] >= 'a' && s[0] <= 'z' {
		return string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
