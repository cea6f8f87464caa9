package stack

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Output arrives in arbitrary chunks; lines, phases and the tail must not depend on where the
// chunks break.
func TestOutputLines(t *testing.T) {
	stream := "==> wsgi-stack: packages\nGet:1 http://deb.debian.org nginx\r\nProgress 10%\rProgress 100%\n==> wsgi-stack: files\nno newline at the end"
	for _, size := range []int{1, 3, 7, len(stream)} {
		t.Run(fmt.Sprintf("chunks of %d", size), func(t *testing.T) {
			ui := &fakeUI{}
			o := &output{ui: ui, stream: true, phases: 2}
			w := o.writer(false)
			for i := 0; i < len(stream); i += size {
				w.Write([]byte(stream[i:min(i+size, len(stream))]))
			}
			o.writer(true).Write([]byte("warning on stderr\n"))
			o.flush()
			want := []string{
				"say: [1/2] packages",
				"say:   Get:1 http://deb.debian.org nginx",
				"say:   Progress 100%",
				"say: [2/2] files",
				"error:   warning on stderr",
				"say:   no newline at the end",
			}
			if !slices.Equal(ui.lines, want) {
				t.Errorf("UI lines:\n got %q\nwant %q", ui.lines, want)
			}
			if o.phase != "files" {
				t.Errorf("phase %q, want files", o.phase)
			}
			if !strings.HasPrefix(o.stdout.String(), "==> wsgi-stack: packages\n") || len(o.tail) != 6 {
				t.Errorf("stdout %q, tail %q", o.stdout.String(), o.tail)
			}
		})
	}
}

// The tail keeps the last lines only, so a failure message stays readable after a long apt run.
func TestOutputTail(t *testing.T) {
	o := &output{ui: &fakeUI{}}
	w := o.writer(false)
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if len(o.tail) != tailLines || o.tail[0] != "line 76" || o.tail[tailLines-1] != "line 100" {
		t.Errorf("tail: %d lines from %q to %q", len(o.tail), o.tail[0], o.tail[len(o.tail)-1])
	}
}

func TestCommandErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  CommandError
		want string
	}{
		{CommandError{Command: "id -u", Status: 1}, `"id -u" exited with status 1 (no output)`},
		{CommandError{Command: "sh x", Status: 2, Phase: "files", Tail: []string{"a", "b"}},
			"\"sh x\" exited with status 2 in phase \"files\"; last 2 lines of output:\n    a\n    b"},
		{CommandError{Command: "sh x", Disconnected: true, Tail: []string{"a"}},
			"\"sh x\": the machine disconnected before the command finished; last line of output:\n    a"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}
