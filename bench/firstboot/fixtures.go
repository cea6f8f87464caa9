package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/pyfixture"
)

// The release archives are served on the instance's loopback by a fixture unit baked into every
// image, so every variant fetches the same bytes the same way (as e2e/firstboot_test.go does).
const (
	fixtureDir  = "/srv/e2e-fixtures"
	fixturePort = "8081"
	fixtureURL  = "http://127.0.0.1:" + fixturePort
	tarballURL  = fixtureURL + "/flask.tar.gz"
	shopURL     = fixtureURL + "/shop.tar.gz"
	// indexPath is the shop's PEP 503 index on the fixture server, for the variants that install
	// its requirements at boot. On loopback: pip trusts plain HTTP only there.
	indexPath   = "index"
	indexURL    = fixtureURL + "/" + indexPath + "/simple/"
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
	b, err := pyfixture.TarGz(flaskFiles)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:]), nil
}

// installFixtures writes the archive and the enabled fixture unit into a machine's root, and
// with shop the Django shop's archive and its index (wheels built offline, by the wheelhouse
// bake) under shopDir and indexPath of the same server.
func installFixtures(root string, shop *shopFixture) error {
	tgz, _, err := flaskTarball()
	if err != nil {
		return err
	}
	unitDir := filepath.Join(root, "etc/systemd/system")
	files := map[string][]byte{
		filepath.Join(root, fixtureDir, "http/flask.tar.gz"): tgz,
		filepath.Join(unitDir, fixtureUnit):                  []byte(fixtureUnitText),
	}
	if shop != nil {
		files[filepath.Join(root, fixtureDir, "http/shop.tar.gz")] = shop.tgz
		if err := pyfixture.WriteIndex(filepath.Join(root, fixtureDir, "http", indexPath), shop.wheels); err != nil {
			return err
		}
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
