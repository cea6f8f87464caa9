package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// PackerVersion is the pinned Packer the end-to-end tests run.
const PackerVersion = "1.12.0"

const packerModule = "github.com/hashicorp/packer"

// Packer returns the path of the pinned Packer binary, in this order:
// $WSGI_E2E_PACKER if set; repoRoot/bin/packer if present; otherwise
// `make -C repoRoot packer` if the Makefile has that target; otherwise it
// builds Packer itself from the Go module cache into
// repoRoot/e2e/.cache/packer-vVERSION (copied out of the read-only cache
// and built with go build, since `go install pkg@version` refuses a module
// with replace directives). The binary's `packer version` is checked.
func Packer(ctx context.Context, repoRoot string) (packerPath string, err error) {
	if p := os.Getenv("WSGI_E2E_PACKER"); p != "" {
		return checkPacker(ctx, p)
	}
	bin := filepath.Join(repoRoot, "bin", "packer")
	if isExecutable(bin) {
		return checkPacker(ctx, bin)
	}
	if exec.CommandContext(ctx, "make", "-C", repoRoot, "-n", "packer").Run() == nil {
		if _, err := run(ctx, "make", "-C", repoRoot, "packer"); err != nil {
			return "", fmt.Errorf("packer: %w", err)
		}
		return checkPacker(ctx, bin)
	}
	out := filepath.Join(repoRoot, "e2e", ".cache", "packer-v"+PackerVersion)
	if !isExecutable(out) {
		if err := buildPacker(ctx, out); err != nil {
			return "", err
		}
	}
	return checkPacker(ctx, out)
}

func buildPacker(ctx context.Context, out string) error {
	tmp, err := os.MkdirTemp("", "packer-src-")
	if err != nil {
		return fmt.Errorf("packer: %w", err)
	}
	defer os.RemoveAll(tmp)
	env := append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", packerModule+"@v"+PackerVersion)
	dl.Dir, dl.Env = tmp, env
	b, err := dl.Output()
	if err != nil {
		return fmt.Errorf("packer: go mod download: %w", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(b, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("packer: go mod download gave no folder: %s", b)
	}
	src := filepath.Join(tmp, "src")
	if _, err := run(ctx, "cp", "-r", mod.Dir, src); err != nil {
		return fmt.Errorf("packer: %w", err)
	}
	if _, err := run(ctx, "chmod", "-R", "u+w", src); err != nil {
		return fmt.Errorf("packer: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("packer: %w", err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", out+".part", ".")
	build.Dir, build.Env = src, env
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("packer: go build: %w: %s", err, tailString(string(b), 20))
	}
	return os.Rename(out+".part", out)
}

func checkPacker(ctx context.Context, path string) (string, error) {
	out, err := run(ctx, path, "version")
	if err != nil {
		return "", fmt.Errorf("packer: %w", err)
	}
	if !strings.Contains(out, "Packer v"+PackerVersion) {
		return "", fmt.Errorf("packer: %s is %q, want v%s", path, strings.TrimSpace(out), PackerVersion)
	}
	return path, nil
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// PackerEnv returns the environment for running Packer in isolation: the
// current environment with PACKER_CHECKPOINT_DISABLE=1 and Packer's config,
// plugin and cache folders under scratchDir (created here), so a test
// neither reads nor changes the user's ~/.config/packer. SSH_AUTH_SOCK is
// dropped so only the key a template names is offered.
func PackerEnv(scratchDir string) []string {
	dirs := map[string]string{
		"PACKER_CONFIG_DIR":  filepath.Join(scratchDir, "config"),
		"PACKER_PLUGIN_PATH": filepath.Join(scratchDir, "plugins"),
		"PACKER_CACHE_DIR":   filepath.Join(scratchDir, "cache"),
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := dirs[k]; ours || k == "PACKER_CHECKPOINT_DISABLE" || k == "SSH_AUTH_SOCK" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PACKER_CHECKPOINT_DISABLE=1")
	for _, k := range []string{"PACKER_CONFIG_DIR", "PACKER_PLUGIN_PATH", "PACKER_CACHE_DIR"} {
		_ = os.MkdirAll(dirs[k], 0o755)
		env = append(env, k+"="+dirs[k])
	}
	return env
}
