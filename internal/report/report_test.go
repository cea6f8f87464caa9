package report

import (
	"errors"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	var r Report
	if r.Err() != nil || !r.OK() {
		t.Fatal("empty report has an error")
	}
	r.Add("sockets", "must be between %d and %d, got %d", 1, 16, 0)
	r.Between("workers", 65, 1, 64)
	r.Between("threads", 4, 1, 256)
	var sub Report
	sub.Add("git_ref", "required with git_url")
	r.Merge("source", sub)
	err := r.Err()
	want := "sockets: must be between 1 and 16, got 0\nworkers: must be between 1 and 64, got 65\nsource.git_ref: required with git_url"
	if err == nil || err.Error() != want {
		t.Fatalf("Err() = %v, want %q", err, want)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatal("errors.Is(err, ErrInvalid) is false")
	}
	packer := Packer("wsgi-stack", err).Error()
	for _, line := range strings.Split(want, "\n") {
		if !strings.Contains(packer, "wsgi-stack: "+line) {
			t.Errorf("Packer() = %q lacks %q", packer, line)
		}
	}
	if got := Packer("wsgi-stack", errors.New("boom")).Error(); got != "wsgi-stack: boom" {
		t.Fatalf("Packer(plain) = %q", got)
	}
	if Packer("x", nil) != nil {
		t.Fatal("Packer(nil) is not nil")
	}
}
