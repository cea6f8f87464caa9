// Package pyfixture makes the Python fixtures the e2e tests and the benchmarks share, with no
// package index at hand: wheels and sdists made here or repacked from a machine's Debian
// packages, PEP 503 indexes of them served on a machine's loopback, and the shop (a Django app
// whose requirements include a pure-Python wheel and a C extension).
package pyfixture

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// IndexDir is where an index lives on a machine while it is served. Not below /tmp or
// /var/tmp: the server runs with DynamicUser, which gives it private ones.
const IndexDir = "/var/cache/wsgi-e2e-index"

// indexUnit is the transient unit that serves IndexDir.
const indexUnit = "wsgi-e2e-index.service"

// Wheel writes a wheel's zip with its RECORD.
type Wheel struct {
	buf    bytes.Buffer
	zw     *zip.Writer
	record []string
	err    error
}

// NewWheel starts an empty wheel.
func NewWheel() *Wheel {
	w := &Wheel{}
	w.zw = zip.NewWriter(&w.buf)
	return w
}

// Add puts one file into the wheel and its digest into RECORD.
func (w *Wheel) Add(name string, data []byte) {
	if w.err != nil {
		return
	}
	f, err := w.zw.Create(name)
	if err == nil {
		_, err = f.Write(data)
	}
	if err != nil {
		w.err = fmt.Errorf("wheel file %s: %w", name, err)
		return
	}
	sum := sha256.Sum256(data)
	w.record = append(w.record, fmt.Sprintf("%s,sha256=%s,%d", name, base64.RawURLEncoding.EncodeToString(sum[:]), len(data)))
}

// Close writes RECORD into info (the dist-info folder, with its trailing slash) and returns
// the wheel's bytes.
func (w *Wheel) Close(info string) ([]byte, error) {
	w.record = append(w.record, info+"RECORD,,")
	w.Add(info+"RECORD", []byte(strings.Join(w.record, "\n")+"\n"))
	if w.err != nil {
		return nil, w.err
	}
	if err := w.zw.Close(); err != nil {
		return nil, err
	}
	return w.buf.Bytes(), nil
}

// PureWheel is a py3-none-any wheel of name and version holding files.
func PureWheel(name, version string, files map[string]string) ([]byte, error) {
	w := NewWheel()
	for _, n := range slices.Sorted(maps.Keys(files)) {
		w.Add(n, []byte(files[n]))
	}
	info := name + "-" + version + ".dist-info/"
	w.Add(info+"METADATA", []byte("Metadata-Version: 2.1\nName: "+name+"\nVersion: "+version+"\n"))
	w.Add(info+"WHEEL", []byte("Wheel-Version: 1.0\nGenerator: packer-plugin-wsgi-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
	return w.Close(info)
}

// Repack makes a pure-Python wheel of the package top (a folder of site, a path below root)
// and its dist-info, as Debian installed them. Symlinks (Debian points some of Django's
// JavaScript at /usr/share/javascript) are resolved inside root; dangling ones are left out.
func Repack(root, site, top, info string) ([]byte, error) {
	w := NewWheel()
	err := filepath.WalkDir(filepath.Join(site, top), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, "__pycache__") {
			return err
		}
		src := p
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				src = filepath.Join(root, target)
			} else {
				src = filepath.Join(filepath.Dir(p), target)
			}
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return nil // dangling in the image too
		}
		rel, _ := filepath.Rel(site, p)
		w.Add(filepath.ToSlash(rel), b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"METADATA", "entry_points.txt", "top_level.txt"} {
		if b, err := os.ReadFile(filepath.Join(site, info, f)); err == nil {
			w.Add(info+"/"+f, b)
		}
	}
	w.Add(info+"/WHEEL", []byte("Wheel-Version: 1.0\nGenerator: packer-plugin-wsgi-e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
	return w.Close(info + "/")
}

// TarGz is a gzip tar of files with sorted names and fixed times: the same files give the same
// bytes.
func TarGz(files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		c := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(c)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(c)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteIndex writes a PEP 503 "simple" index of files (file name → content) into dir:
// dir/packages/FILE and dir/simple/PROJECT/index.html, each link with the file's sha256, so
// pip checks what it downloads.
func WriteIndex(dir string, files map[string][]byte) error {
	out := map[string][]byte{}
	byProject := map[string][]string{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		content := files[name]
		out["packages/"+name] = content
		project := strings.ToLower(strings.SplitN(name, "-", 2)[0])
		sum := sha256.Sum256(content)
		byProject[project] = append(byProject[project], fmt.Sprintf(`<a href="../../packages/%s#sha256=%s">%s</a>`, name, hex.EncodeToString(sum[:]), name))
	}
	var projects []string
	for _, p := range slices.Sorted(maps.Keys(byProject)) {
		projects = append(projects, fmt.Sprintf(`<a href="%s/">%s</a>`, p, p))
		out["simple/"+p+"/index.html"] = []byte(page(byProject[p]))
	}
	out["simple/index.html"] = []byte(page(projects))
	for name, content := range out {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func page(links []string) string {
	return "<!DOCTYPE html><html><body>" + strings.Join(links, "") + "</body></html>"
}

// ServeIndex serves IndexDir of m on m's loopback at port with Python's http.server in a
// transient unit, which leaves nothing in the image, and waits until it answers. pip trusts plain
// HTTP only on loopback.
func ServeIndex(ctx context.Context, m *harness.Machine, port int) error {
	if _, stderr, err := m.Exec(ctx, "systemd-run", "--unit="+indexUnit, "--property=DynamicUser=yes",
		"python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", IndexDir, strconv.Itoa(port)); err != nil {
		return fmt.Errorf("start the index on %s: %w: %s", m.Name(), err, stderr)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/simple/", port)
	for start := time.Now(); ; {
		_, _, err := m.Exec(ctx, "curl", "-fsS", "-o", "/dev/null", url)
		if err == nil {
			return nil
		}
		if time.Since(start) > 15*time.Second {
			return fmt.Errorf("the index on %s does not answer at %s: %w", m.Name(), url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StopIndex stops the index server and removes IndexDir, so a snapshot does not hold them.
func StopIndex(ctx context.Context, m *harness.Machine) error {
	_, _, err := m.Exec(ctx, "systemctl", "stop", indexUnit)
	if err != nil && (errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "not running") || strings.Contains(err.Error(), "not loaded")) {
		err = nil
	}
	if rerr := os.RemoveAll(filepath.Join(m.Root(), IndexDir)); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}
