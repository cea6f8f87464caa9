package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// lowerFor returns image unpacked into a folder beside it, unpacking it
// first if needed, with the folder's lock held: the caller unlocks once its
// overlay is mounted. The folder's name carries the tarball's size and
// modification time, so a rewritten tarball gets a new folder. Folders
// are never changed once complete: overlays only read them.
func lowerFor(ctx context.Context, image string) (lower string, unlock func(), err error) {
	st, err := os.Stat(image)
	if err != nil {
		return "", nil, fmt.Errorf("image: %w", err)
	}
	lower = lowerName(image, st)
	unlock, err = lockFile(ctx, lower+".lock")
	if err != nil {
		return "", nil, err
	}
	if err := unpackLower(ctx, image, lower); err != nil {
		unlock()
		return "", nil, err
	}
	return lower, unlock, nil
}

// lowerName is absolute, as the overlay's lowerdir and mountinfo give it.
func lowerName(image string, st os.FileInfo) string {
	return filepath.Join(imageDir(image), fmt.Sprintf("%s%d-%d.root", lowerPrefix(image), st.Size(), st.ModTime().UnixNano()))
}

func imageDir(image string) string {
	if abs, err := filepath.Abs(image); err == nil {
		image = abs
	}
	return filepath.Dir(image)
}

// lowerPrefix starts the name of every lower folder of image, whichever its version.
func lowerPrefix(image string) string { return "." + filepath.Base(image) + "." }

func unpackLower(ctx context.Context, image, lower string) error {
	if _, err := os.Stat(lower + ".ok"); err == nil {
		return nil
	}
	tmp := lower + ".part"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := unpack(ctx, image, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.RemoveAll(lower); err != nil {
		return err
	}
	if err := os.Rename(tmp, lower); err != nil {
		return err
	}
	return os.WriteFile(lower+".ok", nil, 0o644)
}

// pruneLowers removes the lower folders of image's earlier versions (a
// tarball rewritten since, so of another size or time) that no overlay
// uses: each is a whole unpacked root, and nothing else would ever remove
// it. One whose lock another process holds (unpacking or mounting it) or
// that a mounted overlay reads is left for a later prune. Best effort: a
// failure is logged, never returned.
func pruneLowers(ctx context.Context, image, keep string, log io.Writer) {
	dir := imageDir(image)
	entries, err := os.ReadDir(dir)
	if err != nil {
		logf(log, "prune lowers of %s: %v", image, err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, lowerPrefix(image)) || !strings.HasSuffix(name, ".root") {
			continue
		}
		old := filepath.Join(dir, name)
		if old == keep {
			continue
		}
		if err := pruneLower(ctx, old); err != nil {
			logf(log, "prune %s: %v", old, err)
		}
	}
}

func pruneLower(ctx context.Context, old string) error {
	// Only a free lock: waiting on another process's unpack would hold up this boot.
	tryCtx, cancel := context.WithCancel(ctx)
	cancel()
	unlock, err := lockFile(tryCtx, old+".lock")
	if errors.Is(err, context.Canceled) {
		return nil // another process holds it
	}
	if err != nil {
		return err
	}
	defer unlock()
	mi, err := os.ReadFile(mountinfoFile)
	if err != nil {
		return err
	}
	if overlayReads(string(mi), old) {
		return nil
	}
	if err := removeTree(old); err != nil {
		return err
	}
	for _, p := range []string{old + ".ok", old + ".part", old + ".lock"} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// overlayReads reports whether a mount in mountinfo is an overlay with dir
// among its lower folders.
func overlayReads(mountinfo, dir string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		_, after, ok := strings.Cut(line, " - ")
		f := strings.Fields(after)
		if !ok || len(f) < 3 || f[0] != "overlay" {
			continue
		}
		for _, opt := range strings.Split(f[2], ",") {
			if v, ok := strings.CutPrefix(opt, "lowerdir="); ok && slices.Contains(strings.Split(v, ":"), dir) {
				return true
			}
		}
	}
	return false
}
