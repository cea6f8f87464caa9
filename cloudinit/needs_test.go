package cloudinit

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
)

func TestNeedsOf(t *testing.T) {
	cfg := "#cloud-config\nwrite_files:\n  - path: /etc/wsgi-app.conf\n    content: |\n      WSGI_SCHEMA=1\n      " +
		NeedsLine([]string{"schema-1", "git"}) + "\n      SOURCE_KIND='git'\nruncmd:\n  - [/usr/local/sbin/wsgi-deploy]\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(cfg))
	zw.Close()
	multi, err := multipartDoc([]byte(cfg), []Part{{ContentType: "text/x-shellscript", Content: "#!/bin/sh\necho hi\n"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		in        []byte
		want      string
		found     bool
		errSubstr string
	}{
		{"cloud-config", []byte(cfg), "git schema-1", true, ""},
		{"gzip", gz.Bytes(), "git schema-1", true, ""},
		{"multipart", multi, "git schema-1", true, ""},
		{"foreign cloud-config", []byte("#cloud-config\nruncmd:\n  - [echo, hi]\n"), "", false, ""},
		{"shell script", []byte("#!/bin/sh\necho hi\n"), "", false, ""},
		{"app file without needs", []byte("#cloud-config\nwrite_files:\n  - path: /etc/wsgi-app.conf\n    content: \"WSGI_SCHEMA=1\\n\"\n"), "", false, "no WSGI_NEEDS line"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			needs, found, err := NeedsOf(tc.in)
			if tc.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("err = %v, want %q", err, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if found != tc.found || strings.Join(needs, " ") != tc.want {
				t.Fatalf("NeedsOf = %q, %v; want %q, %v", needs, found, tc.want, tc.found)
			}
		})
	}
}

// TestAppNeeds: what each app asks of the image.
func TestAppNeeds(t *testing.T) {
	tarball := Source{TarballURL: "https://example.com/a.tgz", SHA256: strings.Repeat("0", 64)}
	cases := []struct {
		name string
		app  App
		want string
	}{
		{"tarball", App{Source: tarball}, "schema-1"},
		{"git", App{Source: Source{GitURL: "https://g.example.com/x.git", GitRef: "main"}}, "git schema-1"},
		{"s3", App{Source: Source{S3URI: "s3://bucket/key"}}, "aws-requests schema-1"},
		{"secrets", App{Source: tarball, Secrets: map[string]string{"K": "ssm:/k"}}, "aws-requests schema-1"},
		{"lifecycle hook", App{Source: tarball, LifecycleHook: "wsgi-launch"}, "aws-requests schema-1"},
	}
	for _, c := range cases {
		if got := strings.Join(c.app.Needs(), " "); got != c.want {
			t.Errorf("%s: needs %q, want %q", c.name, got, c.want)
		}
	}
}
