package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The release archive is served on the instance's loopback by a fixture unit baked into both
// images, so every variant fetches the same bytes the same way (as e2e/firstboot_test.go does).
const (
	fixtureDir  = "/srv/e2e-fixtures"
	fixturePort = "8081"
	tarballURL  = "http://127.0.0.1:" + fixturePort + "/flask.tar.gz"
	fixtureUnit = "e2e-http.service"
	// appMarker is in every answer of the app and in nothing NGINX answers by itself (its
	// default page, the maintenance page), so a 200 carrying it came from the app.
	appMarker = "unit="
)

const fixtureUnitText = `[Unit]
Description=e2e fixture: release archives over HTTP on loopback
Before=cloud-final.service
[Service]
ExecStart=/usr/bin/python3 -m http.server ` + fixturePort + ` --bind 127.0.0.1 --directory ` + fixtureDir + `/http
[Install]
WantedBy=multi-user.target
`

var flaskFiles = map[string]string{
	"hello/app.py": `import os
from flask import Flask

app = Flask(__name__)


@app.get("/healthz")
def health():
    return "ok\n"


@app.get("/")
def index():
    return "unit=%s\n" % os.environ.get("WSGI_UNIT")
`,
}

// flaskTarball is the release archive: a gzip tar with sorted names and fixed times, so the
// same files give the same bytes and sha256 in every run.
func flaskTarball() ([]byte, string, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(flaskFiles))
	for n := range flaskFiles {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		c := flaskFiles[n]
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write([]byte(c)); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:]), nil
}

// installFixtures writes the archive and the enabled fixture unit into a machine's root.
func installFixtures(root string) error {
	tgz, _, err := flaskTarball()
	if err != nil {
		return err
	}
	unitDir := filepath.Join(root, "etc/systemd/system")
	files := map[string][]byte{
		filepath.Join(root, fixtureDir, "http/flask.tar.gz"): tgz,
		filepath.Join(unitDir, fixtureUnit):                  []byte(fixtureUnitText),
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, c, 0o644); err != nil {
			return err
		}
	}
	wants := filepath.Join(unitDir, "multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	link := filepath.Join(wants, fixtureUnit)
	_ = os.Remove(link)
	return os.Symlink("/etc/systemd/system/"+fixtureUnit, link)
}
