package cloudinit

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// EC2 refuses user data above this many bytes (before base64).
const (
	MaxUserDataBytes  = 16384
	WarnUserDataBytes = MaxUserDataBytes * 9 / 10
)

// CloudConfigHeader is the first line of every #cloud-config document.
const CloudConfigHeader = "#cloud-config"

// Payload is the rendered user data and what describes it.
type Payload struct {
	// UserData is the raw user data: a #cloud-config document, or MIME multipart/mixed when
	// there are extra parts.
	UserData []byte
	// Gzip is UserData gzip-compressed (cloud-init detects and inflates it); GzipBase64 is that
	// in base64, the form EC2's API takes.
	Gzip       []byte
	GzipBase64 string
	// CloudConfigs are the #cloud-config documents inside UserData (the deploy's first), each
	// one what `cloud-init schema --config-file` takes.
	CloudConfigs [][]byte
	// Files are the instance paths the payload writes with write_files.
	Files []string
	// Needs is what the payload needs from the image (capabilities of package contract).
	Needs []string
	// Warnings are problems that do not stop the build, such as a size near EC2's limit.
	Warnings []string
}

// SizeBytes is the size EC2 counts against MaxUserDataBytes.
func (p *Payload) SizeBytes() int { return len(p.UserData) }

// cloudConfig is the subset of cloud-init's schema the deploy uses.
type cloudConfig struct {
	WriteFiles []writeFile `yaml:"write_files"`
	Runcmd     [][]string  `yaml:"runcmd"`
}

type writeFile struct {
	Path        string  `yaml:"path"`
	Owner       string  `yaml:"owner"`
	Permissions string  `yaml:"permissions"`
	Content     literal `yaml:"content"`
}

// literal is marshalled as a YAML block scalar so the script stays readable in the user data.
type literal string

func (l literal) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Style: yaml.LiteralStyle, Value: string(l)}, nil
}

// Build renders the payload of an App that passed Validate (after WithDefaults). It is a pure
// function: the same App gives the same bytes. Its errors are about the output: a payload above
// EC2's size limit, or one that does not read back as it should.
func Build(app App) (*Payload, error) {
	cfg := cloudConfig{
		WriteFiles: []writeFile{
			{Path: contract.AppFile, Owner: "root:root", Permissions: "0600", Content: literal(app.appFile())},
		},
		// The deploy is the only runcmd entry, so runcmd's script ends with its exit status and
		// cloud-init's scripts-user module fails (status error) when the deploy does.
		Runcmd: [][]string{{contract.DeployProgram}},
	}
	doc, err := marshalCloudConfig(cfg)
	if err != nil {
		return nil, err
	}
	p := &Payload{CloudConfigs: [][]byte{doc}, Needs: app.Needs()}
	for _, f := range cfg.WriteFiles {
		p.Files = append(p.Files, f.Path)
	}
	if len(app.ExtraParts) == 0 {
		p.UserData = doc
	} else {
		if p.UserData, err = multipartDoc(doc, app.ExtraParts); err != nil {
			return nil, err
		}
		for _, part := range app.ExtraParts {
			if part.ContentType == "text/cloud-config" {
				p.CloudConfigs = append(p.CloudConfigs, []byte(part.Content))
			}
		}
	}
	if p.Gzip, err = gzipBytes(p.UserData); err != nil {
		return nil, err
	}
	p.GzipBase64 = base64.StdEncoding.EncodeToString(p.Gzip)

	// validate the output
	if err := checkOutput(p, cfg, len(app.ExtraParts)); err != nil {
		return nil, err
	}
	return p, nil
}

func marshalCloudConfig(cfg cloudConfig) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(CloudConfigHeader + "\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("marshal cloud-config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal cloud-config: %w", err)
	}
	return buf.Bytes(), nil
}

// multipartDoc wraps the deploy's document and the extra parts in multipart/mixed. The
// boundary is derived from the content, so it is stable and cannot occur inside a part.
func multipartDoc(doc []byte, parts []Part) ([]byte, error) {
	h := sha256.New()
	h.Write(doc)
	for _, p := range parts {
		io.WriteString(h, p.ContentType+"\x00"+p.Filename+"\x00"+p.Content+"\x00")
	}
	boundary := "wsgi-" + hex.EncodeToString(h.Sum(nil))[:32]

	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	if err := w.SetBoundary(boundary); err != nil {
		return nil, fmt.Errorf("multipart boundary: %w", err)
	}
	add := func(contentType, filename string, content []byte) error {
		// Set directly, not with Set, to keep the spelling cloud-init's own make-mime uses.
		hdr := textproto.MIMEHeader{
			"Content-Type":              {contentType + `; charset="utf-8"`},
			"MIME-Version":              {"1.0"},
			"Content-Transfer-Encoding": {"8bit"},
			"Content-Disposition":       {fmt.Sprintf("attachment; filename=%q", filename)},
		}
		pw, err := w.CreatePart(hdr)
		if err != nil {
			return err
		}
		_, err = pw.Write(content)
		return err
	}
	if err := add("text/cloud-config", "wsgi-deploy.cfg", doc); err != nil {
		return nil, fmt.Errorf("multipart: %w", err)
	}
	for i, p := range parts {
		name := p.Filename
		if name == "" {
			name = fmt.Sprintf("part-%d", i+1)
		}
		if err := add(p.ContentType, name, []byte(p.Content)); err != nil {
			return nil, fmt.Errorf("multipart: extra_part[%d]: %w", i, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("multipart: %w", err)
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "Content-Type: multipart/mixed; boundary=%q\nMIME-Version: 1.0\n\n", boundary)
	out.Write(body.Bytes())
	return out.Bytes(), nil
}

// gzipBytes compresses without a name or time in the header, so the bytes are reproducible.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// checkOutput reads the payload back the way cloud-init will and checks EC2's size limit.
func checkOutput(p *Payload, want cloudConfig, extra int) error {
	if extra == 0 && !bytes.HasPrefix(p.UserData, []byte(CloudConfigHeader+"\n")) {
		return fmt.Errorf("%w: user data does not start with %q", ErrOutput, CloudConfigHeader)
	}
	var got cloudConfig
	if err := yaml.Unmarshal(p.CloudConfigs[0], &got); err != nil {
		return fmt.Errorf("%w: cloud-config does not parse back: %v", ErrOutput, err)
	}
	if len(got.WriteFiles) != len(want.WriteFiles) || len(got.Runcmd) != 1 {
		return fmt.Errorf("%w: cloud-config does not round-trip", ErrOutput)
	}
	for i := range got.WriteFiles {
		if got.WriteFiles[i] != want.WriteFiles[i] {
			return fmt.Errorf("%w: write_files[%d] (%s) does not round-trip", ErrOutput, i, want.WriteFiles[i].Path)
		}
	}
	if extra > 0 {
		n, err := countParts(p.UserData)
		if err != nil {
			return fmt.Errorf("%w: multipart does not parse back: %v", ErrOutput, err)
		}
		if n != extra+1 {
			return fmt.Errorf("%w: multipart has %d parts, want %d", ErrOutput, n, extra+1)
		}
	}
	if needs, found, err := NeedsOf(p.UserData); err != nil || !found || strings.Join(needs, " ") != strings.Join(p.Needs, " ") {
		return fmt.Errorf("%w: the needs do not read back from the user data (got %q, found %v, %v)", ErrOutput, needs, found, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(p.Gzip))
	if err != nil {
		return fmt.Errorf("%w: gzip: %v", ErrOutput, err)
	}
	if back, err := io.ReadAll(zr); err != nil || !bytes.Equal(back, p.UserData) {
		return fmt.Errorf("%w: gzip does not inflate to the user data", ErrOutput)
	}
	size := len(p.UserData)
	if size > MaxUserDataBytes {
		return fmt.Errorf("%w: user data is %d bytes, above EC2's limit of %d (gzip would be %d bytes): shorten hooks, env or extra_part", ErrTooLarge, size, MaxUserDataBytes, len(p.Gzip))
	}
	if size > WarnUserDataBytes {
		p.Warnings = append(p.Warnings, fmt.Sprintf("user data is %d bytes, within %d of EC2's limit of %d", size, MaxUserDataBytes-size, MaxUserDataBytes))
	}
	return nil
}

func countParts(doc []byte) (int, error) {
	hdrEnd := bytes.Index(doc, []byte("\n\n"))
	if hdrEnd < 0 {
		return 0, errors.New("no header")
	}
	first, _, _ := strings.Cut(string(doc[:hdrEnd]), "\n")
	_, params, err := mime.ParseMediaType(strings.TrimPrefix(first, "Content-Type: "))
	if err != nil {
		return 0, err
	}
	r := multipart.NewReader(bytes.NewReader(doc[hdrEnd+2:]), params["boundary"])
	n := 0
	for {
		_, err := r.NextPart()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// Render is the whole pipeline for a caller that holds an App: defaults, the one validation
// (a *report.Error lists every problem at its HCL key), then Build.
func Render(app App) (*Payload, error) {
	app = app.WithDefaults()
	if err := app.Validate().Err(); err != nil {
		return nil, err
	}
	return Build(app)
}
