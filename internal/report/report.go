// Package report is the one problem type of every component's validation: a problem at the HCL
// path that holds it. Components validate once, at their boundary, and turn a Report into
// Packer's multi-error there; everything after the boundary takes validated values.
package report

import (
	"errors"
	"fmt"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// ErrInvalid is what errors.Is finds in every *Error.
var ErrInvalid = errors.New("invalid configuration")

// Problem is one thing wrong with the input, at the HCL path that holds it (for example
// "sockets", "source.git_ref", "env.SECRET_KEY", "extra_part[1].content").
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// Report collects problems in the order they are found.
type Report struct{ Problems []Problem }

// Add records a problem at path.
func (r *Report) Add(path, format string, a ...any) {
	r.Problems = append(r.Problems, Problem{Path: path, Message: fmt.Sprintf(format, a...)})
}

// Between records a problem when v is outside lo..hi, in the project's wording.
func (r *Report) Between(path string, v, lo, hi int) {
	if v < lo || v > hi {
		r.Add(path, "must be between %d and %d, got %d", lo, hi, v)
	}
}

// Merge adds every problem of o, with prefix and a dot before each path when prefix is set.
func (r *Report) Merge(prefix string, o Report) {
	for _, p := range o.Problems {
		if prefix != "" {
			p.Path = prefix + "." + p.Path
		}
		r.Problems = append(r.Problems, p)
	}
}

// OK is true when no problem was found.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Err is nil without problems, else an *Error that lists them.
func (r Report) Err() error {
	if r.OK() {
		return nil
	}
	return &Error{Problems: append([]Problem(nil), r.Problems...)}
}

// Error lists every problem, one per line as "path: message".
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Packer turns err into the multi-error Packer prints one problem per line, each prefixed with
// the component (for example "wsgi-stack"). Other errors are wrapped as they are.
func Packer(component string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		return fmt.Errorf("%s: %w", component, err)
	}
	var m *packersdk.MultiError
	for _, p := range e.Problems {
		m = packersdk.MultiErrorAppend(m, fmt.Errorf("%s: %s", component, p))
	}
	return m
}
