package builder

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// Builder is the wsgi-ami builder.
type Builder struct {
	config Config
	runner multistep.Runner
}

func (b *Builder) ConfigSpec() hcldec.ObjectSpec { return b.config.FlatMapstructure().HCL2Spec() }

// Prepare validates the configuration and names the generated data the
// provisioners can read with `build.SourceAMI` and so on.
func (b *Builder) Prepare(raws ...interface{}) ([]string, []string, error) {
	warnings, err := b.config.Prepare(raws...)
	if err != nil {
		return nil, warnings, err
	}
	generated := []string{"SourceAMI", "SourceAMIName", "SourceAMIOwner", "SourceAMICreationDate", "BuildRegion", "InstanceType", GeneratedCloudInitDone}
	return generated, warnings, nil
}

// Run makes the AMI. Every client, in every region, comes from the access
// block, so custom endpoints hold for the whole build.
func (b *Builder) Run(ctx context.Context, ui packersdk.Ui, hook packersdk.Hook) (packersdk.Artifact, error) {
	c := &b.config
	awsCfg, err := c.AccessConfig.Config(ctx, "")
	if err != nil {
		return nil, err
	}
	region := awsCfg.Region
	build := c.NewEC2(awsCfg)
	regional := func(ctx context.Context, r string) (ec2API, error) {
		if r == region {
			return build, nil
		}
		return c.AccessConfig.EC2(ctx, r)
	}
	state := b.newState(ui, hook, regional)
	b.runner = commonsteps.NewRunner(b.steps(region, build, regional, c.NewSSM(awsCfg)), c.PackerConfig, ui)
	b.runner.Run(ctx, state)
	return b.artifact(ctx, state, region, regional)
}

// newState is the state bag a build starts with.
func (b *Builder) newState(ui packersdk.Ui, hook packersdk.Hook, regional regionalEC2) *multistep.BasicStateBag {
	state := new(multistep.BasicStateBag)
	put(state, keyUI, ui)
	put(state, keyHook, hook)
	put(state, keyCommConfig, &b.config.Comm)
	put(state, keyLedger, newImageLedger(clientAs[deleteImageAPI](regional), b.config.AMIName, b.config.buildID))
	// Declared in Prepare, so set from the start: "true" once stepWaitCloudInit is done.
	putGenerated(state, map[string]string{GeneratedCloudInitDone: "false"})
	return state
}

// steps is the build, in order; each step's Cleanup runs in reverse order.
func (b *Builder) steps(region string, build ec2API, regional regionalEC2, ssmc ssmAPI) []multistep.Step {
	c := &b.config
	wait := waitConfig{Delay: c.WaitDelay(), Timeout: c.WaitTimeout()}
	tags := tagList(c.tempTags())
	makeAMI := !c.SkipCreateAMI
	return []multistep.Step{
		&stepSourceAMI{EC2: build, SSM: ssmc, Source: c.SourceConfig, Types: c.InstanceTypes(), BootMode: c.BootMode, Region: region},
		multistep.If(makeAMI, &stepCheckAMIName{EC2: clientAs[describeImagesAPI](regional), Name: c.AMIName, Regions: c.allRegions(region), Force: c.ForceDeregister}),
		&stepNetwork{EC2: build, Net: c.RunConfig},
		multistep.If(c.needTempKey(), &stepKeyPair{EC2: build, Comm: &c.Comm, BuildID: c.buildID, Tags: tags}),
		multistep.If(c.needTempSecurityGroup(), &stepSecurityGroup{
			EC2: build, CIDRs: c.SSHCIDRs, CheckIPURL: c.CheckIPURL, Port: c.Comm.Port(), BuildID: c.buildID, Tags: tags,
			NoIngress: c.sessionManager(),
		}),
		&stepRunInstance{EC2: build, Cfg: c, BuildID: c.buildID, Region: region, Wait: wait},
		multistep.If(c.sessionManager(), &stepSessionManager{
			SSM: ssmc, Region: region, Endpoint: c.ssmEndpoint(region), RemotePort: c.Comm.Port(),
			LocalPort: c.SessionManagerPort, Pause: c.PauseBeforeSSM, Wait: wait,
		}),
		&communicator.StepConnect{
			Config:    &c.Comm,
			Host:      sshHost(c),
			SSHConfig: c.Comm.SSHConfigFunc(),
			SSHPort:   sshPort(c),
		},
		multistep.If(c.Comm.Type != "none" && !c.SkipCloudInitWait, &stepWaitCloudInit{}),
		&commonsteps.StepProvision{},
		&stepStackTags{NoCommunicator: c.Comm.Type == "none"},
		&commonsteps.StepCleanupTempKeys{Comm: &c.Comm},
		&stepStopInstance{EC2: build, ENA: c.ENA(), Spot: c.Spot(), Wait: wait},
		multistep.If(makeAMI && c.ForceDeregister, &stepDeregister{EC2: clientAs[deregisterAPI](regional), Name: c.AMIName, Regions: c.allRegions(region)}),
		multistep.If(makeAMI, &stepCreateImage{EC2: build, Cfg: c, Region: region, Wait: wait}),
		multistep.If(makeAMI && len(c.AMIRegions) > 0, &stepCopyImage{EC2: clientAs[copyImageAPI](regional), Cfg: c, SourceRegion: region, Wait: wait}),
		multistep.If(makeAMI, &stepImageAttributes{
			EC2: clientAs[imageAttributeAPI](regional), IMDSv2: c.IMDSSupport == "v2.0",
			Users: c.AMIUsers, OrgARNs: c.AMIOrgARNs, OUARNs: c.AMIOUARNs, Groups: c.AMIGroups,
			SnapUsers: c.SnapshotUsers, SnapGroups: c.SnapshotGroups, DeprecateAt: c.DeprecationTime(),
		}),
	}
}

// artifact turns the final state into the build's result.
// A build whose context was cancelled returns no artifact even if every step
// ran: Packer drops the artifacts of an interrupted run.
func (b *Builder) artifact(ctx context.Context, state multistep.StateBag, region string, regional regionalEC2) (packersdk.Artifact, error) {
	if err := get[error](state, keyError); err != nil {
		return nil, err
	}
	images := get[map[string]string](state, keyImages)
	if _, ok := state.GetOk(multistep.StateCancelled); ok || ctx.Err() != nil {
		// Packer drops the artifact of an interrupted run, so no AMI may
		// stay, also when the interrupt came during the last cleanups,
		// after the AMI steps had kept theirs.
		ctx, cancel := cleanupContext()
		defer cancel()
		get[*imageLedger](state, keyLedger).rollback(ctx, ui(state))
		return nil, errors.New("build was cancelled")
	}
	if _, ok := state.GetOk(multistep.StateHalted); ok {
		return nil, errors.New("build was halted")
	}
	if b.config.SkipCreateAMI {
		say(ui(state), "skip_create_ami: no AMI made")
		return nil, nil
	}
	if len(images) == 0 {
		return nil, errors.New("build made no AMI")
	}
	src := get[ec2types.Image](state, keySourceImage)
	return &Artifact{
		Amis:        images,
		Snapshots:   get[map[string][]string](state, keySnapshots),
		StackTags:   get[map[string]string](state, keyStackTags),
		SourceAMI:   aws.ToString(src.ImageId),
		BuildRegion: region,
		StateData:   map[string]interface{}{string(keyGenerated): state.Get(string(keyGenerated))},
		remover:     clientAs[deleteImageAPI](regional),
	}, nil
}

// sshHost is ssh_host when set; 127.0.0.1 through a Session Manager
// tunnel; the address or DNS name ssh_interface names; else the instance's
// public address, else its private one.
func sshHost(c *Config) func(multistep.StateBag) (string, error) {
	return func(state multistep.StateBag) (string, error) {
		if h := c.Comm.Host(); h != "" {
			return h, nil
		}
		if c.sessionManager() {
			return "127.0.0.1", nil
		}
		inst := get[ec2types.Instance](state, keyInstance)
		var h string
		switch c.SSHInterface {
		case "public_ip":
			h = aws.ToString(inst.PublicIpAddress)
		case "private_ip":
			h = aws.ToString(inst.PrivateIpAddress)
		case "public_dns":
			h = aws.ToString(inst.PublicDnsName)
		case "private_dns":
			h = aws.ToString(inst.PrivateDnsName)
		default:
			if h = aws.ToString(inst.PublicIpAddress); h == "" {
				h = aws.ToString(inst.PrivateIpAddress)
			}
		}
		if h == "" {
			return "", fmt.Errorf("ssh_interface: instance %s has no %s; set ssh_interface or ssh_host",
				aws.ToString(inst.InstanceId), interfaceWhat(c.SSHInterface))
		}
		return h, nil
	}
}

func interfaceWhat(iface string) string {
	switch iface {
	case "public_ip":
		return "public address"
	case "private_ip":
		return "private address"
	case "public_dns":
		return "public DNS name (the VPC needs DNS hostnames enabled)"
	case "private_dns":
		return "private DNS name"
	}
	return "public or private address"
}

// sshPort is the tunnel's local port with Session Manager, else ssh_port.
func sshPort(c *Config) func(multistep.StateBag) (int, error) {
	return func(state multistep.StateBag) (int, error) {
		if c.sessionManager() {
			if p := get[int](state, keyTunnelPort); p != 0 {
				return p, nil
			}
			return 0, errors.New("ssh_interface: the Session Manager tunnel is not open")
		}
		return c.Comm.Port(), nil
	}
}

var _ packersdk.Builder = (*Builder)(nil)
