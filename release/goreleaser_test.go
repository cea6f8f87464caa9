// Package release checks the release packaging in .goreleaser.yml: the names Packer expects,
// the six targets, and ldflags that reach the version package. The fast checks here run in
// `go test ./...`; cross-compiling every target is in build_test.go (build tag release).
package release

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"

	"gopkg.in/yaml.v3"
)

const (
	modulePath = "github.com/wsgi-ami/packer-plugin-wsgi"
	// apiVersion is the plugin protocol version of packer-plugin-sdk v0.6.x.
	apiVersion = "x5.0"
)

// goreleaserConfig is the part of .goreleaser.yml these tests read.
type goreleaserConfig struct {
	Version     int      `yaml:"version"`
	ProjectName string   `yaml:"project_name"`
	Env         []string `yaml:"env"`
	Builds      []struct {
		ID      string   `yaml:"id"`
		Flags   []string `yaml:"flags"`
		Ldflags []string `yaml:"ldflags"`
		Goos    []string `yaml:"goos"`
		Goarch  []string `yaml:"goarch"`
		Binary  string   `yaml:"binary"`
	} `yaml:"builds"`
	Archives []struct {
		Formats      []string `yaml:"formats"`
		Files        []string `yaml:"files"`
		NameTemplate string   `yaml:"name_template"`
	} `yaml:"archives"`
	Checksum struct {
		NameTemplate string `yaml:"name_template"`
		Algorithm    string `yaml:"algorithm"`
	} `yaml:"checksum"`
}

// target is one os/arch of the release.
type target struct{ OS, Arch string }

// wantTargets is the release matrix: what `packer init` users on these platforms download.
var wantTargets = []target{
	{"darwin", "amd64"}, {"darwin", "arm64"},
	{"linux", "amd64"}, {"linux", "arm64"},
	{"windows", "amd64"}, {"windows", "arm64"},
}

func loadConfig(t *testing.T) goreleaserConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", ".goreleaser.yml"))
	if err != nil {
		t.Fatalf("read .goreleaser.yml: %v", err)
	}
	var c goreleaserConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("parse .goreleaser.yml: %v", err)
	}
	if len(c.Builds) != 1 || len(c.Archives) != 1 {
		t.Fatalf(".goreleaser.yml: want one build and one archive, got %d builds and %d archives", len(c.Builds), len(c.Archives))
	}
	return c
}

// render expands a goreleaser name or ldflags template the way goreleaser does (Go templates
// over .ProjectName, .Version, .Os, .Arch and .Env).
func render(t *testing.T, c goreleaserConfig, tmpl, version string, tg target) string {
	t.Helper()
	env := map[string]string{}
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	tp, err := template.New("").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		t.Fatalf("template %q: %v", tmpl, err)
	}
	var out strings.Builder
	data := map[string]any{"ProjectName": c.ProjectName, "Version": version, "Os": tg.OS, "Arch": tg.Arch, "Env": env}
	if err := tp.Execute(&out, data); err != nil {
		t.Fatalf("template %q: %v", tmpl, err)
	}
	return out.String()
}

// releaseTargets is the goos × goarch matrix of the build, sorted.
func releaseTargets(c goreleaserConfig) []target {
	var ts []target
	for _, o := range c.Builds[0].Goos {
		for _, a := range c.Builds[0].Goarch {
			ts = append(ts, target{o, a})
		}
	}
	slices.SortFunc(ts, func(a, b target) int { return strings.Compare(a.OS+"/"+a.Arch, b.OS+"/"+b.Arch) })
	return ts
}

func TestGoreleaserConfig(t *testing.T) {
	c := loadConfig(t)
	if c.Version != 2 {
		t.Errorf("version: want 2 (goreleaser v2 schema), got %d", c.Version)
	}
	if got := releaseTargets(c); !slices.Equal(got, wantTargets) {
		t.Errorf("targets: want %v, got %v", wantTargets, got)
	}

	const v = "1.2.3"
	for _, tg := range wantTargets {
		want := "packer-plugin-wsgi_v1.2.3_x5.0_" + tg.OS + "_" + tg.Arch
		if got := render(t, c, c.Builds[0].Binary, v, tg); got != want {
			t.Errorf("binary for %s/%s: want %q, got %q", tg.OS, tg.Arch, want, got)
		}
		if got := render(t, c, c.Archives[0].NameTemplate, v, tg); got != want {
			t.Errorf("archive for %s/%s: want %q, got %q", tg.OS, tg.Arch, want, got)
		}
	}
	if got := render(t, c, c.Checksum.NameTemplate, v, target{}); got != "packer-plugin-wsgi_v1.2.3_SHA256SUMS" {
		t.Errorf("checksum name: want packer-plugin-wsgi_v1.2.3_SHA256SUMS, got %q", got)
	}
	if c.Checksum.Algorithm != "sha256" {
		t.Errorf("checksum algorithm: want sha256, got %q", c.Checksum.Algorithm)
	}
	if !slices.Equal(c.Archives[0].Formats, []string{"zip"}) {
		t.Errorf("archive formats: want [zip], got %v", c.Archives[0].Formats)
	}
	if !slices.Contains(c.Builds[0].Flags, "-trimpath") {
		t.Errorf("build flags: want -trimpath, got %v", c.Builds[0].Flags)
	}

	ld := strings.Join(c.Builds[0].Ldflags, " ")
	for _, x := range []string{
		"-X " + modulePath + "/version.Version={{ .Version }}",
		"-X " + modulePath + "/version.VersionPrerelease= ",
	} {
		if !strings.Contains(ld+" ", x) {
			t.Errorf("ldflags %q: want %q", ld, x)
		}
	}
}

// TestLdflagsTargetVariables guards against a rename in version/ that would turn the ldflags
// into silent no-ops (the linker ignores -X for a symbol that does not exist).
func TestLdflagsTargetVariables(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "version", "version.go"))
	if err != nil {
		t.Fatalf("read version/version.go: %v", err)
	}
	for _, name := range []string{"Version", "VersionPrerelease"} {
		if !bytes.Contains(src, []byte("\t"+name+" = \"")) {
			t.Errorf("version/version.go: no string variable %s with a literal value for -X to replace", name)
		}
	}
}
