package builder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/crypto/ssh"
)

type keyPairAPI interface {
	ImportKeyPair(context.Context, *ec2.ImportKeyPairInput, ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error)
	DeleteKeyPair(context.Context, *ec2.DeleteKeyPairInput, ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error)
}

// stepKeyPair generates an ed25519 key here and imports its public half,
// so the private key never passes through AWS. Cleanup deletes the key
// pair by its name, which is derived from the build id: that also removes a
// key pair whose import was interrupted after AWS made it.
type stepKeyPair struct {
	EC2     keyPairAPI
	Comm    *communicator.Config
	BuildID string
	Tags    []ec2types.Tag

	attempted bool
	name      string
}

func (s *stepKeyPair) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return halt(state, fmt.Errorf("generating the temporary key: %w", err))
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return halt(state, fmt.Errorf("encoding the temporary key: %w", err))
	}
	block, err := ssh.MarshalPrivateKey(priv, "packer wsgi-ami "+s.BuildID)
	if err != nil {
		return halt(state, fmt.Errorf("encoding the temporary key: %w", err))
	}
	s.name = "packer_wsgi_" + s.BuildID
	say(ui(state), fmt.Sprintf("Importing temporary ed25519 key pair %s", s.name))
	s.attempted = true
	_, err = s.EC2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
		KeyName:           aws.String(s.name),
		PublicKeyMaterial: ssh.MarshalAuthorizedKey(sshPub),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeKeyPair, Tags: s.Tags}},
	})
	if err != nil {
		return halt(state, fmt.Errorf("importing key pair %s: %w", s.name, err))
	}
	privPEM := pem.EncodeToMemory(block)
	s.Comm.SSHKeyPairName = s.name
	s.Comm.SSHPrivateKey = privPEM
	put(state, keyKeyPairName, s.name)
	put(state, keyPrivateKey, string(privPEM))
	return multistep.ActionContinue
}

func (s *stepKeyPair) Cleanup(state multistep.StateBag) {
	if !s.attempted {
		return
	}
	ctx, cancel := cleanupContext()
	defer cancel()
	say(ui(state), fmt.Sprintf("Deleting temporary key pair %s", s.name))
	// DeleteKeyPair succeeds for a missing name, so an import that never
	// reached AWS costs one harmless call.
	if _, err := s.EC2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(s.name)}); err != nil {
		sayErr(ui(state), fmt.Sprintf("deleting key pair %s: %v; delete it by hand", s.name, err))
	}
}
