package launchtemplate

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
)

// User data encodings accepted by user_data_encoding.
const (
	EncodingRaw        = "raw"
	EncodingGzipBase64 = "gzip+base64"
)

// maxUserDataBytes is EC2's limit on user data before base64 encoding.
const maxUserDataBytes = 16384

// gzipBase64Prefix is how base64 of any gzip stream begins (1f 8b 08).
const gzipBase64Prefix = "H4sI"

// prepareUserData reads user_data or user_data_file and stores the base64
// text that EC2 expects in LaunchTemplateData.UserData.
func (c *Config) prepareUserData() error {
	if c.UserData != "" && c.UserDataFile != "" {
		return errors.New("user_data, user_data_file: set only one of them")
	}
	key, content := "user_data", []byte(c.UserData)
	if c.UserDataFile != "" {
		b, err := os.ReadFile(c.UserDataFile)
		if err != nil {
			return fmt.Errorf("user_data_file: %w", err)
		}
		if len(b) == 0 {
			return fmt.Errorf("user_data_file: %s is empty", c.UserDataFile)
		}
		key, content = "user_data_file", b
	}
	// `packer validate` runs Prepare before data sources are evaluated: their outputs arrive as
	// a placeholder (Packer 1.12 sends "<unknown>"; the SDK defines its own sentinel too). The
	// real value is checked when the build prepares again.
	if c.UserData == "<unknown>" || c.UserData == hcl2helper.UnknownVariableValue {
		return nil
	}
	if len(content) == 0 {
		if c.UserDataEncoding != "" {
			return errors.New("user_data_encoding: only used with user_data or user_data_file")
		}
		return nil
	}
	switch c.UserDataEncoding {
	case EncodingRaw, EncodingGzipBase64:
	case "":
		return fmt.Errorf("user_data_encoding: required with %s: %q for a plain document, %q for base64 of gzip (the wsgi-cloudinit output user_data_gzip_base64)", key, EncodingRaw, EncodingGzipBase64)
	default:
		return fmt.Errorf("user_data_encoding: must be %q or %q, got %q", EncodingRaw, EncodingGzipBase64, c.UserDataEncoding)
	}
	enc, err := encodeUserData(content, c.UserDataEncoding)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	c.userData = enc
	return nil
}

// encodeUserData returns the base64 text for LaunchTemplateData.UserData.
// EC2 stores user data base64-encoded and hands instances the decoded
// bytes; cloud-init then gunzips a gzip stream itself. So raw data is
// encoded once here, and gzip+base64 data is already in its final form and
// is only checked.
func encodeUserData(data []byte, encoding string) (string, error) {
	switch encoding {
	case EncodingRaw:
		if strings.HasPrefix(string(data), gzipBase64Prefix) {
			return "", fmt.Errorf("starts with %q like base64 of gzip, but user_data_encoding is %q; set user_data_encoding = %q", gzipBase64Prefix, EncodingRaw, EncodingGzipBase64)
		}
		if len(data) > maxUserDataBytes {
			return "", fmt.Errorf("%d bytes, EC2 allows %d; compress it (user_data_encoding = %q with the wsgi-cloudinit output user_data_gzip_base64)", len(data), maxUserDataBytes, EncodingGzipBase64)
		}
		return base64.StdEncoding.EncodeToString(data), nil
	case EncodingGzipBase64:
		// A file may wrap its base64 at 76 columns.
		text := strings.Join(strings.Fields(string(data)), "")
		raw, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return "", fmt.Errorf("user_data_encoding is %q but the value is not base64: %w", EncodingGzipBase64, err)
		}
		if len(raw) < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
			return "", fmt.Errorf("user_data_encoding is %q but the value decodes to data that is not gzip; for a plain document set user_data_encoding = %q", EncodingGzipBase64, EncodingRaw)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			_, err = io.Copy(io.Discard, zr)
		}
		if err != nil {
			return "", fmt.Errorf("gzip stream is corrupt: %w", err)
		}
		if len(raw) > maxUserDataBytes {
			return "", fmt.Errorf("%d bytes after base64 decoding, EC2 allows %d", len(raw), maxUserDataBytes)
		}
		return base64.StdEncoding.EncodeToString(raw), nil
	}
	return "", fmt.Errorf("unknown user_data_encoding %q", encoding)
}
