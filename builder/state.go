package builder

import (
	"context"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"
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
	keyTunnelPort    stateKey = "wsgi_tunnel_port"    // int, the local port of the Session Manager tunnel
	keyImages        stateKey = "wsgi_images"         // map[string]string region -> AMI id
	keySnapshots     stateKey = "wsgi_snapshots"      // map[string][]string region -> snapshot ids
	keyImageDetails  stateKey = "wsgi_image_details"  // map[string]ec2types.Image region -> AMI
	keyLedger        stateKey = "wsgi_image_ledger"   // *imageLedger, put by newState
	keyStackTags     stateKey = "wsgi_stack_tags"     // map[string]string, the wsgi:stack-* tags; absent without a stack
	keyGenerated     stateKey = "generated_data"      // map[string]interface{}

	// Keys the SDK's steps and conventions read.
	keyError      stateKey = "error"               // error, put by halt; Run returns it
	keyInstanceID stateKey = "instance_id"         // string, read by the SDK's provisioner hooks
	keyCommConfig stateKey = "communicator_config" // *communicator.Config, read by the SDK's steps
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
	put(state, keyError, err)
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
	_, errored := state.GetOk(string(keyError))
	return cancelled || halted || errored
}

// putGenerated publishes generated data (build.NAME) for provisioners and
// post-processors; every name must be declared in Builder.Prepare.
func putGenerated(state multistep.StateBag, kv map[string]string) {
	gd := &packerbuilderdata.GeneratedData{State: state}
	for k, v := range kv {
		gd.Put(k, v)
	}
}

// cleanupTimeout bounds each Cleanup. Cleanups run after the build context
// may have been cancelled (Ctrl-C), so they use their own.
const cleanupTimeout = 15 * time.Minute

func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cleanupTimeout)
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
