package cloudinit

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// NeedsVar is the variable of the app file that lists what the payload needs from the image,
// as capabilities of package contract separated by spaces.
const NeedsVar = "WSGI_NEEDS"

// NeedsLine is the app file's line for needs. Capabilities are [a-z0-9-] words, so the single
// quotes need no escaping.
func NeedsLine(needs []string) string {
	return NeedsVar + "='" + contract.FormatProvides(needs) + "'"
}

// NeedsOf reads what a payload needs from its raw user data (gzip-compressed or not, a
// #cloud-config or MIME multipart whose first part is one): the NeedsVar line of the
// contract.AppFile it writes. found is false when the user data is not a wsgi-cloudinit payload.
func NeedsOf(userData []byte) (needs []string, found bool, err error) {
	if bytes.HasPrefix(userData, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(userData))
		if err != nil {
			return nil, false, fmt.Errorf("user data: gzip: %w", err)
		}
		if userData, err = io.ReadAll(zr); err != nil {
			return nil, false, fmt.Errorf("user data: gzip: %w", err)
		}
	}
	doc := userData
	if !bytes.HasPrefix(doc, []byte(CloudConfigHeader)) {
		if doc, err = firstCloudConfigPart(userData); err != nil || doc == nil {
			return nil, false, err
		}
	}
	var cfg struct {
		WriteFiles []struct {
			Path    string `yaml:"path"`
			Content string `yaml:"content"`
		} `yaml:"write_files"`
	}
	if err := yaml.Unmarshal(doc, &cfg); err != nil {
		return nil, false, fmt.Errorf("user data: cloud-config: %w", err)
	}
	for _, f := range cfg.WriteFiles {
		if f.Path != contract.AppFile {
			continue
		}
		for _, line := range strings.Split(f.Content, "\n") {
			if v, ok := strings.CutPrefix(line, NeedsVar+"="); ok {
				return contract.ParseProvides(strings.Trim(v, "'")), true, nil
			}
		}
		return nil, false, fmt.Errorf("user data: %s has no %s line", contract.AppFile, NeedsVar)
	}
	return nil, false, nil
}

// firstCloudConfigPart returns the first text/cloud-config part of a MIME multipart document,
// or nil when userData is not one.
func firstCloudConfigPart(userData []byte) ([]byte, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(userData))
	if err != nil {
		return nil, nil
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return nil, nil
	}
	r := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("user data: multipart: %w", err)
		}
		if ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct == "text/cloud-config" {
			return io.ReadAll(p)
		}
	}
}
