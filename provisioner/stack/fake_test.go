package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// reply is what the fake machine answers to one command.
type reply struct {
	stdout, stderr string
	status         int
}

// event is one thing the provisioner did on the machine, in order.
type event struct {
	kind string // "run" or "upload"
	what string // the command, or the upload's path
	data string // stdin of a command, or the uploaded content
}

func (e event) String() string { return e.kind + ": " + e.what }

// fakeComm records every command and upload and answers commands from a table keyed by the
// command's beginning, so tests can assert the exact sequence.
type fakeComm struct {
	mu      sync.Mutex
	events  []event
	replies map[string]reply // longest matching prefix wins
	failOn  string           // upload path that fails
}

func (f *fakeComm) Start(_ context.Context, rc *packersdk.RemoteCmd) error {
	var stdin []byte
	if rc.Stdin != nil {
		stdin, _ = io.ReadAll(rc.Stdin)
	}
	f.mu.Lock()
	f.events = append(f.events, event{kind: "run", what: rc.Command, data: string(stdin)})
	r := f.reply(rc.Command)
	f.mu.Unlock()
	go func() {
		if rc.Stdout != nil {
			io.WriteString(rc.Stdout, r.stdout)
		}
		if rc.Stderr != nil {
			io.WriteString(rc.Stderr, r.stderr)
		}
		rc.SetExited(r.status)
	}()
	return nil
}

func (f *fakeComm) reply(cmd string) reply {
	best, found := "", false
	for prefix := range f.replies {
		if strings.HasPrefix(cmd, prefix) && len(prefix) >= len(best) {
			best, found = prefix, true
		}
	}
	if found {
		return f.replies[best]
	}
	return reply{}
}

func (f *fakeComm) Upload(path string, r io.Reader, _ *os.FileInfo) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if path == f.failOn {
		return errors.New("scp: connection reset")
	}
	f.events = append(f.events, event{kind: "upload", what: path, data: string(b)})
	return nil
}

func (f *fakeComm) sequence() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.events))
	for i, e := range f.events {
		out[i] = e.String()
	}
	return out
}

func (f *fakeComm) find(kind, what string) (event, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.events {
		if e.kind == kind && e.what == what {
			return e, true
		}
	}
	return event{}, false
}

// fakeUI records what the provisioner tells the user.
type fakeUI struct {
	mu    sync.Mutex
	lines []string // "say: ..." or "error: ..."
}

func (u *fakeUI) add(kind, s string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.lines = append(u.lines, kind+": "+s)
}

func (u *fakeUI) Ask(string) (string, error)                                        { return "", errors.New("no input in tests") }
func (u *fakeUI) Askf(string, ...any) (string, error)                               { return "", errors.New("no input in tests") }
func (u *fakeUI) Say(s string)                                                      { u.add("say", s) }
func (u *fakeUI) Sayf(f string, a ...any)                                           { u.add("say", fmt.Sprintf(f, a...)) }
func (u *fakeUI) Message(s string)                                                  { u.add("say", s) }
func (u *fakeUI) Error(s string)                                                    { u.add("error", s) }
func (u *fakeUI) Errorf(f string, a ...any)                                         { u.add("error", fmt.Sprintf(f, a...)) }
func (u *fakeUI) Machine(string, ...string)                                         {}
func (u *fakeUI) TrackProgress(_ string, _, _ int64, s io.ReadCloser) io.ReadCloser { return s }

func (u *fakeUI) text() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var b bytes.Buffer
	for _, l := range u.lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

var (
	_ remote       = (*fakeComm)(nil)
	_ packersdk.Ui = (*fakeUI)(nil)
)
