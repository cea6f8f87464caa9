package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// StackHeader is the part of StackFile every reader relies on: the schema version and what the
// image provides. The file holds the whole stack besides (paths, units, user, sockets, versions);
// readers that need more decode more.
type StackHeader struct {
	Schema   int      `json:"schema"`
	Provides []string `json:"provides"`
}

// ParseStackHeader reads the header of a StackFile's content.
func ParseStackHeader(b []byte) (StackHeader, error) {
	var h StackHeader
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("%s: %w", StackFile, err)
	}
	if h.Schema < 1 {
		return h, fmt.Errorf("%s: no schema version", StackFile)
	}
	return h, nil
}

// Digest is the TagDigest value of a StackFile's content.
func Digest(stackFile []byte) string {
	sum := sha256.Sum256(stackFile)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Tags are the AMI tags that describe the stack in a StackFile's content.
func Tags(stackFile []byte) (map[string]string, error) {
	h, err := ParseStackHeader(stackFile)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		TagSchema:   fmt.Sprint(h.Schema),
		TagDigest:   Digest(stackFile),
		TagProvides: FormatProvides(h.Provides),
	}, nil
}
