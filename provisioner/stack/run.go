package stack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// remote is the part of the communicator the provisioner uses.
type remote interface {
	Start(context.Context, *packersdk.RemoteCmd) error
	Upload(string, io.Reader, *os.FileInfo) error
}

// phasePrefix starts the progress lines the install and hygiene scripts print.
const phasePrefix = "==> wsgi-stack: "

// tailLines is how much output a failure carries.
const tailLines = 25

// result is what a finished command left behind.
type result struct {
	Command string
	Status  int
	Stdout  string
	Phase   string   // the last phase line seen, if any
	Tail    []string // the last lines of stdout and stderr together
}

// err is nil for exit status 0 and a CommandError otherwise.
func (r *result) err() error {
	if r.Status == 0 {
		return nil
	}
	return &CommandError{Command: r.Command, Status: r.Status, Phase: r.Phase, Tail: r.Tail}
}

// runner runs commands over the communicator and reports their output.
type runner struct {
	comm remote
	ui   packersdk.Ui
}

// output collects a command's lines: all of stdout for parsing, a tail of both streams for
// errors, and, when streaming, each line to the UI as it arrives. Phase lines become progress
// lines numbered against the phases the script declares.
type output struct {
	mu      sync.Mutex
	ui      packersdk.Ui
	stream  bool
	phases  int
	seen    int
	phase   string
	stdout  bytes.Buffer
	tail    []string
	partial [2][]byte
}

func (o *output) writer(stderr bool) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		i := 0
		if stderr {
			i = 1
		} else {
			o.stdout.Write(p)
		}
		buf := append(o.partial[i], p...)
		for {
			n := bytes.IndexByte(buf, '\n')
			if n < 0 {
				break
			}
			o.line(string(buf[:n]), stderr)
			buf = buf[n+1:]
		}
		o.partial[i] = append([]byte(nil), buf...)
		return len(p), nil
	})
}

// flush reports a last line that had no newline.
func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, b := range o.partial {
		if len(b) > 0 {
			o.line(string(b), i == 1)
		}
		o.partial[i] = nil
	}
}

func (o *output) line(s string, stderr bool) {
	s = strings.TrimRight(s, "\r\n\t ")
	// Progress output that rewrites the line with \r: only the last part is visible anyway.
	if i := strings.LastIndexByte(s, '\r'); i >= 0 {
		s = s[i+1:]
	}
	o.tail = append(o.tail, s)
	if len(o.tail) > tailLines {
		o.tail = o.tail[len(o.tail)-tailLines:]
	}
	if phase, ok := strings.CutPrefix(s, phasePrefix); ok && !stderr {
		o.phase = phase
		o.seen++
		if o.stream {
			if o.phases >= o.seen {
				o.ui.Say(fmt.Sprintf("[%d/%d] %s", o.seen, o.phases, phase))
			} else {
				o.ui.Say(phase)
			}
		}
		return
	}
	if !o.stream || s == "" {
		return
	}
	if stderr {
		o.ui.Error("  " + s)
	} else {
		o.ui.Say("  " + s)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// countPhases counts the phase lines a script can print, for the [n/total] of progress lines.
func countPhases(script []byte) int {
	n := 0
	for _, l := range strings.Split(string(script), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, `phase "`) || strings.HasPrefix(l, `phase '`) || strings.HasPrefix(l, `echo "`+phasePrefix) {
			n++
		}
	}
	return n
}

// runOpts says how one command is run.
type runOpts struct {
	stdin  []byte
	stream bool // show the output in the UI
	phases int  // phase lines the script declares (0: unknown)
}

// run runs cmd to completion. The error is only for a command that could not be run to its
// end (not started, cancelled, disconnected); callers decide what each exit status means.
func (r *runner) run(ctx context.Context, cmd string, o runOpts) (*result, error) {
	out := &output{ui: r.ui, stream: o.stream, phases: o.phases}
	rc := &packersdk.RemoteCmd{
		Command: cmd,
		Stdout:  out.writer(false),
		Stderr:  out.writer(true),
	}
	if o.stdin != nil {
		rc.Stdin = bytes.NewReader(o.stdin)
	}
	if err := r.comm.Start(ctx, rc); err != nil {
		return nil, fmt.Errorf("start %q: %w", cmd, err)
	}
	done := make(chan int, 1)
	go func() { done <- rc.Wait() }()
	var status int
	select {
	case status = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%q: %w", cmd, ctx.Err())
	}
	out.flush()
	out.mu.Lock()
	defer out.mu.Unlock()
	res := &result{Command: cmd, Status: status, Stdout: out.stdout.String(), Phase: out.phase, Tail: out.tail}
	if status == packersdk.CmdDisconnect {
		return res, &CommandError{Command: cmd, Status: status, Phase: out.phase, Tail: out.tail, Disconnected: true}
	}
	return res, nil
}

// mustRun runs cmd and fails on any exit status but 0.
func (r *runner) mustRun(ctx context.Context, cmd string, o runOpts) (*result, error) {
	res, err := r.run(ctx, cmd, o)
	if err != nil {
		return res, err
	}
	return res, res.err()
}
