package contract

import (
	"strings"
	"testing"
)

func TestFits(t *testing.T) {
	full := map[string]string{TagProvides: "schema-1 aws-requests git"}
	cases := []struct {
		name   string
		needs  []string
		tags   map[string]string
		errHas []string
	}{
		{"all met", []string{"schema-1", "git"}, full, nil},
		{"nothing needed", nil, full, nil},
		{"git missing", []string{"schema-1", "git"}, map[string]string{TagProvides: "schema-1 aws-requests"},
			[]string{"needs git", "ami-1 in eu-west-1", `"schema-1 aws-requests"`, "first_boot"}},
		{"schema differs", []string{"schema-2"}, full, []string{"needs schema-2", "rendered for stack schema-2"}},
		{"no tag", []string{"schema-1"}, map[string]string{}, []string{"has no wsgi:stack-provides tag", "needs schema-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Fits(tc.needs, "ami-1 in eu-west-1", tc.tags)
			if tc.errHas == nil {
				if err != nil {
					t.Fatalf("Fits: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Fits: no error")
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestProvidesRoundTrip(t *testing.T) {
	got := FormatProvides([]string{"git", "schema-1", "git", "aws-requests"})
	if got != "aws-requests git schema-1" {
		t.Fatalf("FormatProvides = %q", got)
	}
	back := ParseProvides("  git  schema-1 git ")
	if strings.Join(back, ",") != "git,schema-1" {
		t.Fatalf("ParseProvides = %q", back)
	}
	if !IsKnown("schema-1") || IsKnown("schema-2") || IsKnown("svn") {
		t.Fatal("IsKnown is wrong")
	}
}

func TestTags(t *testing.T) {
	file := []byte(`{"schema":1,"provides":["schema-1","git","aws-requests"],"app_name":"shop"}`)
	tags, err := Tags(file)
	if err != nil {
		t.Fatal(err)
	}
	if tags[TagSchema] != "1" || tags[TagProvides] != "aws-requests git schema-1" || !strings.HasPrefix(tags[TagDigest], "sha256:") || len(tags[TagDigest]) != 71 {
		t.Fatalf("Tags = %v", tags)
	}
	if _, err := Tags([]byte(`{"provides":[]}`)); err == nil || !strings.Contains(err.Error(), "no schema version") {
		t.Fatalf("Tags without schema: %v", err)
	}
	if _, err := Tags([]byte(`not json`)); err == nil {
		t.Fatal("Tags of non-JSON: no error")
	}
}
