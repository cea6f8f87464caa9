//go:build release

package release

import (
	"context"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestCrossBuild builds every release target the way .goreleaser.yml does (same flags, same
// ldflags, CGO_ENABLED=0), checks each binary is an executable for its os/arch, and runs
// `describe` and `packer-sdc plugin-check` on the host's binary. It needs no goreleaser and no
// network beyond the module cache: go test -tags release -v ./release/
func TestCrossBuild(t *testing.T) {
	c := loadConfig(t)
	const version = "1.2.3"
	b := c.Builds[0]
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()

	ldflags := render(t, c, strings.Join(b.Ldflags, " "), version, target{})
	built := map[target]string{}
	for _, tg := range releaseTargets(c) {
		out := filepath.Join(dir, render(t, c, b.Binary, version, tg))
		if tg.OS == "windows" {
			// goreleaser adds .exe to windows binaries.
			out += ".exe"
		}
		args := append([]string{"build"}, b.Flags...)
		args = append(args, "-ldflags", ldflags, "-o", out, ".")
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "GOOS="+tg.OS, "GOARCH="+tg.Arch, "CGO_ENABLED=0")
		start := time.Now()
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("GOOS=%s GOARCH=%s go %s: %v\n%s", tg.OS, tg.Arch, strings.Join(args, " "), err, msg)
		}
		t.Logf("%s/%s: built %s in %s", tg.OS, tg.Arch, filepath.Base(out), time.Since(start).Round(time.Second))
		checkExecutable(t, out, tg)
		built[tg] = out
	}

	host := target{runtime.GOOS, runtime.GOARCH}
	bin, ok := built[host]
	if !ok {
		t.Skipf("host %s/%s is not a release target: describe not run", host.OS, host.Arch)
	}
	out, err := exec.CommandContext(ctx, bin, "describe").Output()
	if err != nil {
		t.Fatalf("%s describe: %v", bin, err)
	}
	var d struct {
		Version    string `json:"version"`
		APIVersion string `json:"api_version"`
	}
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("describe output %q: %v", out, err)
	}
	if d.Version != version {
		t.Errorf("describe version: want %q (ldflags with an empty prerelease), got %q", version, d.Version)
	}
	if d.APIVersion != apiVersion {
		t.Errorf("describe api_version: want %q (the name says %s), got %q", apiVersion, apiVersion, d.APIVersion)
	}

	// packer-sdc plugin-check wants the binary's own name (packer-plugin-*), not a path.
	sdc := filepath.Join(t.TempDir(), "packer-sdc")
	build := exec.CommandContext(ctx, "go", "build", "-o", sdc, "github.com/hashicorp/packer-plugin-sdk/cmd/packer-sdc")
	build.Dir = ".."
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build packer-sdc: %v\n%s", err, msg)
	}
	chk := exec.CommandContext(ctx, sdc, "plugin-check", filepath.Base(bin))
	chk.Dir = filepath.Dir(bin)
	if msg, err := chk.CombinedOutput(); err != nil {
		t.Errorf("packer-sdc plugin-check %s: %v\n%s", filepath.Base(bin), err, msg)
	}

	// The pinned Packer installs the binary under the name `packer init` would download, when
	// the release name, the version and the API version agree.
	packer, err := filepath.Abs(filepath.Join("..", "bin", "packer"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(packer); err != nil {
		t.Logf("%s not built (make packer): install check skipped", packer)
		return
	}
	cfg := t.TempDir()
	install := exec.CommandContext(ctx, packer, "plugins", "install", "--path", bin, "github.com/wsgi-ami/wsgi")
	install.Env = append(os.Environ(), "PACKER_CONFIG_DIR="+cfg, "PACKER_PLUGIN_PATH="+filepath.Join(cfg, "plugins"), "PACKER_CHECKPOINT_DISABLE=1")
	if msg, err := install.CombinedOutput(); err != nil {
		t.Fatalf("packer plugins install --path %s: %v\n%s", filepath.Base(bin), err, msg)
	}
	want := filepath.Join(cfg, "plugins", "github.com", "wsgi-ami", "wsgi", filepath.Base(bin))
	for _, p := range []string{want, want + "_SHA256SUM"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after packer plugins install: %v", err)
		}
	}
}

// checkExecutable opens path with the object format of tg and checks its machine type.
func checkExecutable(t *testing.T, path string, tg target) {
	t.Helper()
	switch tg.OS {
	case "linux":
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: not ELF: %v", path, err)
		}
		defer f.Close()
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[tg.Arch]
		if f.Machine != want || f.Type != elf.ET_EXEC {
			t.Errorf("%s: want ELF executable for %v, got %v %v", path, want, f.Type, f.Machine)
		}
	case "darwin":
		f, err := macho.Open(path)
		if err != nil {
			t.Fatalf("%s: not Mach-O: %v", path, err)
		}
		defer f.Close()
		want := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[tg.Arch]
		if f.Cpu != want || f.Type != macho.TypeExec {
			t.Errorf("%s: want Mach-O executable for %v, got %v %v", path, want, f.Type, f.Cpu)
		}
	case "windows":
		f, err := pe.Open(path)
		if err != nil {
			t.Fatalf("%s: not PE: %v", path, err)
		}
		defer f.Close()
		want := map[string]uint16{"amd64": pe.IMAGE_FILE_MACHINE_AMD64, "arm64": pe.IMAGE_FILE_MACHINE_ARM64}[tg.Arch]
		if f.Machine != want || f.Characteristics&pe.IMAGE_FILE_EXECUTABLE_IMAGE == 0 {
			t.Errorf("%s: want PE executable for machine %#x, got %#x", path, want, f.Machine)
		}
	default:
		t.Errorf("%s: no object format check for %s", path, tg.OS)
	}
}
