package stack

import (
	"fmt"
	"strings"
)

// CommandError is a command on the machine that did not succeed. It carries the command, the
// phase the scripts had reached and the last lines of output, which is what a user needs to see
// in the build log to fix the cause.
type CommandError struct {
	Command      string
	Status       int
	Phase        string
	Tail         []string
	Disconnected bool
}

func (e *CommandError) Error() string {
	var b strings.Builder
	if e.Disconnected {
		fmt.Fprintf(&b, "%q: the machine disconnected before the command finished", e.Command)
	} else {
		fmt.Fprintf(&b, "%q exited with status %d", e.Command, e.Status)
	}
	if e.Phase != "" {
		fmt.Fprintf(&b, " in phase %q", e.Phase)
	}
	if len(e.Tail) == 0 {
		b.WriteString(" (no output)")
		return b.String()
	}
	if len(e.Tail) == 1 {
		b.WriteString("; last line of output:")
	} else {
		fmt.Fprintf(&b, "; last %d lines of output:", len(e.Tail))
	}
	for _, l := range e.Tail {
		b.WriteString("\n    ")
		b.WriteString(l)
	}
	return b.String()
}
