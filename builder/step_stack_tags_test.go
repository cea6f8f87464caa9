package builder

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

func TestStepStackTags(t *testing.T) {
	long := `{"schema":1,"provides":["` + strings.Repeat("x", 300) + `"]}`
	tests := []struct {
		name     string
		answer   *remoteAnswer // nil: no communicator
		wantTags map[string]string
		wantSay  string
		wantErr  []string
	}{
		{name: "baked by wsgi-stack", answer: &remoteAnswer{stdout: testStackFile},
			wantTags: map[string]string{contract.TagSchema: "1", contract.TagProvides: "aws-requests git schema-1", contract.TagDigest: contract.Digest([]byte(testStackFile))},
			wantSay:  `Stack schema 1, provides "aws-requests git schema-1", sha256:`},
		{name: "no stack file", answer: &remoteAnswer{status: stackAbsentStatus},
			wantSay: "No /etc/wsgi-stack.json on the build instance (the image was not baked by wsgi-stack): the AMI gets no wsgi:stack-* tags and the post-processor cannot check a payload against it"},
		{name: "no communicator", wantSay: `communicator = "none", so no /etc/wsgi-stack.json to read`},
		{name: "not json", answer: &remoteAnswer{stdout: "schema=1\n"},
			wantErr: []string{"the stack description on the build instance does not parse: /etc/wsgi-stack.json: invalid character", `JSON with "schema" and "provides"`}},
		{name: "no schema", answer: &remoteAnswer{stdout: `{"provides":["git"]}`},
			wantErr: []string{"/etc/wsgi-stack.json: no schema version"}},
		{name: "unreadable", answer: &remoteAnswer{stderr: "cat: /etc/wsgi-stack.json: Permission denied\n", status: 1},
			wantErr: []string{"reading /etc/wsgi-stack.json on the build instance failed (exit 1): cat: /etc/wsgi-stack.json: Permission denied"}},
		{name: "provides too long for a tag", answer: &remoteAnswer{stdout: long},
			wantErr: []string{"gives a wsgi:stack-provides tag of 300 characters; EC2 allows 256"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, u := testState(t)
			var comm *scriptComm
			if tt.answer != nil {
				comm = &scriptComm{answers: map[string]remoteAnswer{stackReadCommand: *tt.answer}}
				put(state, keyComm, comm)
			}
			action := (&stepStackTags{}).Run(context.Background(), state)
			if comm != nil {
				if got := comm.commands(); len(got) != 1 || got[0] != stackReadCommand {
					t.Fatalf("commands %q", got)
				}
			}
			if tt.wantErr != nil {
				if action != multistep.ActionHalt {
					t.Fatalf("want halt, got %v", action)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(stateError(state), w) {
						t.Errorf("error %q does not contain %q", stateError(state), w)
					}
				}
				return
			}
			if action != multistep.ActionContinue {
				t.Fatalf("halted: %s", stateError(state))
			}
			if !strings.Contains(u.text(), tt.wantSay) {
				t.Errorf("UI %q does not contain %q", u.text(), tt.wantSay)
			}
			got := get[map[string]string](state, keyStackTags)
			if len(got) != len(tt.wantTags) {
				t.Fatalf("stack tags %v, want %v", got, tt.wantTags)
			}
			for k, v := range tt.wantTags {
				if got[k] != v {
					t.Errorf("tag %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// The command tells "absent" from "present" under a real sh.
func TestStackReadCommandUnderSh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wsgi-stack.json")
	cmd := strings.ReplaceAll(stackReadCommand, contract.StackFile, path)
	sh := func() (string, int) {
		out, err := exec.Command("sh", "-c", cmd).Output()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, status := sh(); status != stackAbsentStatus || out != "" {
		t.Fatalf("absent file: exit %d, output %q", status, out)
	}
	if err := os.WriteFile(path, []byte(testStackFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, status := sh(); status != 0 || out != testStackFile {
		t.Fatalf("present file: exit %d, output %q", status, out)
	}
}

// An image without the stack file still builds; its AMIs carry no stack tags.
func TestBuildWithoutStackFile(t *testing.T) {
	cloud := newFakeCloud()
	comm := newScriptComm()
	comm.answers[stackReadCommand] = remoteAnswer{status: stackAbsentStatus}
	res := runBuildWith(context.Background(), t, fullConfig(t), cloud, comm)
	if res.err != nil {
		t.Fatalf("build failed: %v", res.err)
	}
	if !strings.Contains(res.ui.text(), "the post-processor cannot check a payload against it") {
		t.Errorf("no line about the missing stack:\n%s", res.ui.text())
	}
	art := res.artifact.(*Artifact)
	for region, id := range art.Amis {
		for _, tg := range cloud.region(region).images[id].Tags {
			if strings.HasPrefix(*tg.Key, "wsgi:stack-") {
				t.Errorf("%s %s has %s without a stack file", region, id, *tg.Key)
			}
		}
	}
}

// A stack file that does not parse fails the build, and nothing is left.
func TestBuildWithBadStackFile(t *testing.T) {
	cloud := newFakeCloud()
	comm := newScriptComm()
	comm.answers[stackReadCommand] = remoteAnswer{stdout: "{"}
	res := runBuildWith(context.Background(), t, fullConfig(t), cloud, comm)
	if res.err == nil || !strings.Contains(res.err.Error(), "does not parse") {
		t.Fatalf("want a parse error, got %v", res.err)
	}
	if left := cloud.leftovers(); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
}

// A tag key that a template turns into a reserved one is refused at build time.
func TestRenderedReservedTagKey(t *testing.T) {
	c := testConfig(t, map[string]interface{}{"tags": map[string]string{`{{ "wsgi:stack-provides" }}`: "git"}})
	_, err := c.imageTags(buildInfo{}, nil)
	if err == nil || !strings.Contains(err.Error(), `tags: "{{ \"wsgi:stack-provides\" }}" renders to "wsgi:stack-provides": the wsgi: prefix is reserved`) {
		t.Fatalf("got %v", err)
	}
}
