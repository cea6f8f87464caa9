package launchtemplate

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
)

func prepare(t *testing.T, raw map[string]interface{}) (*PostProcessor, error) {
	t.Helper()
	base := map[string]interface{}{"region": "us-east-1", "skip_credential_validation": true}
	for k, v := range raw {
		base[k] = v
	}
	p := &PostProcessor{}
	return p, p.Configure(base)
}

func TestConfigDefaults(t *testing.T) {
	p, err := prepare(t, map[string]interface{}{
		"launch_template_name": "web",
		"instance_refresh":     map[string]interface{}{"auto_scaling_group_name": "web-asg"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := p.config
	if !*c.CheckPayloadFits {
		t.Error("check_payload_fits defaults to false, want true")
	}
	if c.SourceVersion != "$Default" || !*c.SetDefault || c.RetentionTagKey != "wsgi:ami-family" || c.KeepReleases != 0 {
		t.Errorf("defaults: source_version=%q set_default=%v retention_tag_key=%q keep_releases=%d", c.SourceVersion, *c.SetDefault, c.RetentionTagKey, c.KeepReleases)
	}
	r := c.InstanceRefresh
	if *r.MinHealthyPercentage != 90 || !*r.Wait || r.Region != "us-east-1" || r.Timeout != 60*time.Minute {
		t.Errorf("instance_refresh defaults: %+v", r)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	with := func(kv ...interface{}) map[string]interface{} {
		m := map[string]interface{}{"launch_template_name": "web"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	refresh := func(kv ...interface{}) map[string]interface{} {
		r := map[string]interface{}{"auto_scaling_group_name": "web-asg"}
		for i := 0; i < len(kv); i += 2 {
			r[kv[i].(string)] = kv[i+1]
		}
		return with("instance_refresh", r)
	}
	cases := []struct {
		name string
		raw  map[string]interface{}
		want string
	}{
		{"no template", map[string]interface{}{}, "launch_template_id, launch_template_name: set one of them"},
		{"both", with("launch_template_id", "lt-0123456789abcdef0"), "launch_template_id, launch_template_name: set only one of them"},
		{"bad id", map[string]interface{}{"launch_template_id": "web"}, `launch_template_id: must look like lt-0abc123def4567890, got "web"`},
		{"bad name", map[string]interface{}{"launch_template_name": "a b"}, `launch_template_name: must be 3 to 128 letters`},
		{"create by id", map[string]interface{}{"launch_template_id": "lt-0123456789abcdef0", "create_if_missing": true}, "create_if_missing: needs launch_template_name"},
		{"source version", with("source_version", "latest"), `source_version: must be a version number, $Default or $Latest, got "latest"`},
		{"source version zero", with("source_version", "0"), `source_version: must be a version number`},
		{"aws tag", with("tags", map[string]string{"aws:x": "y"}), `tags: key "aws:x" must be 1 to 128 characters and not start with aws:`},
		{"bad region", with("regions", []string{"useast1"}), `regions: "useast1" is not a region name like eu-west-1`},
		{"region twice", with("regions", []string{"us-east-1", "us-east-1"}), `regions: "us-east-1" is listed twice`},
		{"id with regions", map[string]interface{}{"launch_template_id": "lt-0123456789abcdef0", "regions": []string{"us-east-1", "eu-west-1"}}, "regions: launch_template_id names a template in one region, got 2 regions"},
		{"user data twice", with("user_data", "x", "user_data_file", empty, "user_data_encoding", "raw"), "user_data, user_data_file: set only one of them"},
		{"encoding missing", with("user_data", "#cloud-config\n"), `user_data_encoding: required with user_data: "raw" for a plain document, "gzip+base64"`},
		{"encoding unknown", with("user_data", "x", "user_data_encoding", "base64"), `user_data_encoding: must be "raw" or "gzip+base64", got "base64"`},
		{"encoding alone", with("user_data_encoding", "raw"), "user_data_encoding: only used with user_data or user_data_file"},
		{"file missing", with("user_data_file", filepath.Join(dir, "nope"), "user_data_encoding", "raw"), "user_data_file: open " + filepath.Join(dir, "nope")},
		{"file empty", with("user_data_file", empty, "user_data_encoding", "raw"), "user_data_file: " + empty + " is empty"},
		{"raw looks gzipped", with("user_data", "H4sIAAAAAAAA/w==", "user_data_encoding", "raw"), `user_data: starts with "H4sI" like base64 of gzip, but user_data_encoding is "raw"; set user_data_encoding = "gzip+base64"`},
		{"gzip not base64", with("user_data", "#cloud-config", "user_data_encoding", "gzip+base64"), `user_data: user_data_encoding is "gzip+base64" but the value is not base64`},
		{"base64 not gzip", with("user_data", base64.StdEncoding.EncodeToString([]byte("#cloud-config\n")), "user_data_encoding", "gzip+base64"), `user_data: user_data_encoding is "gzip+base64" but the value decodes to data that is not gzip; for a plain document set user_data_encoding = "raw"`},
		{"gzip corrupt", with("user_data", base64.StdEncoding.EncodeToString([]byte{0x1f, 0x8b, 8, 0, 0, 0}), "user_data_encoding", "gzip+base64"), "user_data: gzip stream is corrupt"},
		{"too big", with("user_data", strings.Repeat("a", 16385), "user_data_encoding", "raw"), "user_data: 16385 bytes, EC2 allows 16384"},
		{"keep negative", with("keep_releases", -1), "keep_releases: must be 0 (keep all) or more, got -1"},
		{"tag value alone", with("retention_tag_value", "x"), "retention_tag_value: only used with keep_releases"},
		{"refresh no group", with("instance_refresh", map[string]interface{}{"skip_matching": true}), "instance_refresh.auto_scaling_group_name: required"},
		{"refresh healthy", refresh("min_healthy_percentage", 101), "instance_refresh.min_healthy_percentage: must be between 0 and 100, got 101"},
		{"refresh warmup", refresh("instance_warmup", "25h"), "instance_refresh.instance_warmup: must be between 0s and 24h, got 25h0m0s"},
		{"refresh checkpoint order", refresh("checkpoint_percentages", []int{50, 20}), "instance_refresh.checkpoint_percentages[1]: must be greater than the one before (50), got 20"},
		{"refresh checkpoint range", refresh("checkpoint_percentages", []int{0}), "instance_refresh.checkpoint_percentages[0]: must be between 1 and 100, got 0"},
		{"refresh delay alone", refresh("checkpoint_delay", "5m"), "instance_refresh.checkpoint_delay: needs checkpoint_percentages"},
		{"refresh delay long", refresh("checkpoint_percentages", []int{100}, "checkpoint_delay", "49h"), "instance_refresh.checkpoint_delay: must be between 0s and 48h, got 49h0m0s"},
		{"refresh region", refresh("region", "nowhere"), `instance_refresh.region: "nowhere" is not a region name like eu-west-1`},
		{"access block", with("max_retries", 1000), "max_retries: must be between 1 and 100, got 1000"},
		{"ami_ids region", with("ami_ids", map[string]string{"ireland": "ami-0123"}), `ami_ids: key "ireland" is not a region name like eu-west-1`},
		{"ami_ids value", with("ami_ids", map[string]string{"eu-west-1": "shop-1"}), `ami_ids["eu-west-1"]: must be an AMI id like ami-0123456789abcdef0, got "shop-1"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := prepare(t, tc.raw)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%s\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}

func TestUserDataEncoding(t *testing.T) {
	doc := "#cloud-config\npackages: [curl]\n"
	gz := gzipBase64(t, doc)
	// A file from base64(1) wraps at 76 columns; the line breaks go.
	var wrapped strings.Builder
	for i := 0; i < len(gz); i += 20 {
		end := min(i+20, len(gz))
		wrapped.WriteString(gz[i:end] + "\n")
	}
	dir := t.TempDir()
	rawFile := filepath.Join(dir, "user-data")
	gzFile := filepath.Join(dir, "user-data.gz.b64")
	binFile := filepath.Join(dir, "user-data.gz")
	gzBytes, _ := base64.StdEncoding.DecodeString(gz)
	for f, b := range map[string][]byte{rawFile: []byte(doc), gzFile: []byte(wrapped.String()), binFile: gzBytes} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		raw  map[string]interface{}
		// want is what EC2 must receive: base64 of the exact bytes the
		// instance is to get.
		want string
	}{
		{"raw", map[string]interface{}{"user_data": doc, "user_data_encoding": "raw"}, base64.StdEncoding.EncodeToString([]byte(doc))},
		{"gzip+base64 passes unchanged", map[string]interface{}{"user_data": gz, "user_data_encoding": "gzip+base64"}, gz},
		{"raw file", map[string]interface{}{"user_data_file": rawFile, "user_data_encoding": "raw"}, base64.StdEncoding.EncodeToString([]byte(doc))},
		{"wrapped gzip+base64 file", map[string]interface{}{"user_data_file": gzFile, "user_data_encoding": "gzip+base64"}, gz},
		{"binary gzip file is raw bytes", map[string]interface{}{"user_data_file": binFile, "user_data_encoding": "raw"}, gz},
		{"jinja is not packer's", map[string]interface{}{"user_data": "## template: jinja\n#cloud-config\nhostname: {{ v1.instance_id }}\n", "user_data_encoding": "raw"},
			base64.StdEncoding.EncodeToString([]byte("## template: jinja\n#cloud-config\nhostname: {{ v1.instance_id }}\n"))},
		{"none", map[string]interface{}{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := map[string]interface{}{"launch_template_name": "web"}
			for k, v := range tc.raw {
				raw[k] = v
			}
			p, err := prepare(t, raw)
			if err != nil {
				t.Fatal(err)
			}
			if p.config.userData != tc.want {
				t.Errorf("user data for EC2 = %q, want %q", p.config.userData, tc.want)
			}
		})
	}
}

func TestParseAMIs(t *testing.T) {
	cases := []struct {
		id   string
		want []regionAMI
		err  string
	}{
		{"us-east-1:ami-123", []regionAMI{{"us-east-1", "ami-123"}}, ""},
		{"eu-west-1:ami-1,us-east-1:ami-2", []regionAMI{{"eu-west-1", "ami-1"}, {"us-east-1", "ami-2"}}, ""},
		{"us-gov-west-1:ami-9", []regionAMI{{"us-gov-west-1", "ami-9"}}, ""},
		{"", nil, "no region:ami-id pairs"},
		{"ami-123", nil, `"ami-123" is not a region:ami-id pair`},
		{"us-east-1:snap-1", nil, `"us-east-1:snap-1" is not a region:ami-id pair`},
		{"us-east-1:ami-1,us-east-1:ami-2", nil, "region us-east-1 appears twice"},
	}
	for _, tc := range cases {
		got, err := parseAMIs(tc.id)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("parseAMIs(%q) error = %v, want %q", tc.id, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseAMIs(%q) = %v, %v; want %v", tc.id, got, err, tc.want)
		}
	}
}

// TestPrepareBeforeDataSources is `packer validate`: a data source's output is still the SDK's
// unknown sentinel, which must pass here and be checked when the build prepares again.
func TestPrepareBeforeDataSources(t *testing.T) {
	for _, unknown := range []string{"<unknown>", hcl2helper.UnknownVariableValue} {
		raw := map[string]interface{}{"launch_template_name": "web", "user_data": unknown, "user_data_encoding": "gzip+base64"}
		if _, err := prepare(t, raw); err != nil {
			t.Fatalf("an unknown user_data (%q) failed validation: %v", unknown, err)
		}
	}
	raw := map[string]interface{}{"launch_template_name": "web", "user_data": "not base64 at all", "user_data_encoding": "gzip+base64"}
	if _, err := prepare(t, raw); err == nil {
		t.Fatal("a known, wrong user_data passed")
	}
}
