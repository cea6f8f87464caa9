package builder

import (
	"context"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// stackAbsentStatus is the exit status of stackReadCommand when the image
// has no stack description; any other failure of cat exits 1.
const stackAbsentStatus = 3

// stackReadCommand prints contract.StackFile, or exits stackAbsentStatus
// when there is none. The path is a constant without shell metacharacters.
var stackReadCommand = "if [ -e " + contract.StackFile + " ]; then cat " + contract.StackFile +
	"; else exit " + strconv.Itoa(stackAbsentStatus) + "; fi"

// maxTagValue is EC2's limit on a tag value, in characters.
const maxTagValue = 256

// stepStackTags reads the stack description that wsgi-stack baked
// (contract.StackFile) once the provisioners are done, and turns it into the
// wsgi:stack-* tags that stepCreateImage and stepCopyImage write on the AMI
// and every copy. The post-processor checks a payload against those tags.
// An image without the file gets no stack tags; a file that does not parse
// fails the build, since an AMI must not carry a description nobody can read.
// It makes nothing.
type stepStackTags struct {
	// NoCommunicator: communicator = "none", whose commands do nothing.
	NoCommunicator bool
}

func (s *stepStackTags) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	u := ui(state)
	comm := get[packersdk.Communicator](state, keyComm)
	if comm == nil || s.NoCommunicator {
		say(u, fmt.Sprintf("communicator = \"none\", so no %s to read: the AMI gets no wsgi:stack-* tags and the post-processor cannot check a payload against it", contract.StackFile))
		return multistep.ActionContinue
	}
	res, err := runRemote(ctx, comm, stackReadCommand)
	if err != nil {
		return halt(state, fmt.Errorf("reading %s on the build instance: %w", contract.StackFile, err))
	}
	switch res.status {
	case 0:
	case stackAbsentStatus:
		say(u, fmt.Sprintf("No %s on the build instance (the image was not baked by wsgi-stack): the AMI gets no wsgi:stack-* tags and the post-processor cannot check a payload against it", contract.StackFile))
		return multistep.ActionContinue
	default:
		return halt(state, fmt.Errorf("reading %s on the build instance failed (exit %d): %s", contract.StackFile, res.status, lastLine(res.stderr+"\n"+res.stdout)))
	}
	tags, err := contract.Tags([]byte(res.stdout))
	if err != nil {
		return halt(state, fmt.Errorf("the stack description on the build instance does not parse: %w; wsgi-stack writes it as JSON with \"schema\" and \"provides\": bake with the wsgi-stack of this plugin's version, or remove the file if something else wrote it", err))
	}
	for _, k := range []string{contract.TagSchema, contract.TagDigest, contract.TagProvides} {
		if n := utf8.RuneCountInString(tags[k]); n > maxTagValue {
			return halt(state, fmt.Errorf("the stack description on the build instance gives a %s tag of %d characters; EC2 allows %d: shorten its \"provides\" list", k, n, maxTagValue))
		}
	}
	say(u, fmt.Sprintf("Stack schema %s, provides %q, %s: tagging the AMI and every copy", tags[contract.TagSchema], tags[contract.TagProvides], tags[contract.TagDigest]))
	put(state, keyStackTags, tags)
	return multistep.ActionContinue
}

func (s *stepStackTags) Cleanup(multistep.StateBag) {}
