package main

import (
	"fmt"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

// profile is one Gunicorn configuration of the stack, rendered by the same templates the
// provisioner bakes, so the benchmark measures exactly what a user gets.
type profile struct {
	name  string
	stack image.Stack
	conf  []byte
}

// gunicornProfiles are the default; the documented CPU-bound profile, one sync worker per unit
// (the hand-tuned setup's layout inside the stack's sandboxed units, so against it the pair
// isolates what the sandbox costs); and sync2, two sync workers per unit (Gunicorn's usual
// "2 x cores" advice on this 2-core machine), the cpu profile before the 2026-12-02 run showed
// that the extra processes cost 10-20 % on CPU-bound work here.
func gunicornProfiles() ([]profile, error) {
	ps := []profile{
		{name: "default", stack: image.Default()},
		{name: "cpu", stack: image.Stack{WorkerClass: "sync", WorkersPerUnit: 1, Threads: 1}.WithDefaults()},
		{name: "sync2", stack: image.Stack{WorkerClass: "sync", WorkersPerUnit: 2, Threads: 1}.WithDefaults()},
	}
	for i := range ps {
		if err := ps[i].stack.Validate().Err(); err != nil {
			return nil, fmt.Errorf("profile %s: %w", ps[i].name, err)
		}
		ps[i].conf = image.Render(ps[i].stack).File(ps[i].stack.GunicornConfig()).Content
	}
	return ps, nil
}

func profileNames(ps []profile) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.name)
	}
	return out
}

func setupTitle(setup string) string {
	switch setup {
	case "eb":
		return "EB-style: 1 Gunicorn on TCP, gthread 3 workers x 2 threads, no upstream keepalive"
	case "ebka":
		return "EB-style with an upstream keepalive pool (NGINX as the stack's)"
	case "hand":
		return "hand-tuned sync: 3 plain units (no sandbox), 1 sync worker each, UNIX sockets, keepalive pool"
	}
	for _, p := range must(gunicornProfiles()) {
		if p.name == setup {
			s := p.stack
			desc := fmt.Sprintf("%d sockets x %d %s worker", s.Sockets, s.WorkersPerUnit, s.WorkerClass)
			if s.WorkerClass == "gthread" {
				desc += fmt.Sprintf(" x %d threads", s.Threads)
			}
			return "wsgi-stack " + setup + ": " + strings.TrimSpace(desc)
		}
	}
	return setup
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
