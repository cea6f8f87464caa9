package harness

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// seedDir is where cloud-init's NoCloud datasource looks for its seed.
const seedDir = "var/lib/cloud/seed/nocloud"

// writeSeed writes the NoCloud seed into root. meta-data is built with
// yaml.v3 so an odd instance id or hostname cannot break the document.
func writeSeed(root string, userData []byte, instanceID, hostname string) error {
	dir := filepath.Join(root, seedDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	meta, err := yaml.Marshal(map[string]string{
		"instance-id":    instanceID,
		"local-hostname": hostname,
	})
	if err != nil {
		return fmt.Errorf("seed: meta-data: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meta-data"), meta, 0o600); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user-data"), userData, 0o600); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	return nil
}

// SSHUserData returns a #cloud-config that creates user with passwordless
// sudo, authorizedKey as its only way in (password locked), and makes sure
// sshd is enabled and running. It is what a Packer build over SSH needs.
func SSHUserData(user, authorizedKey string) []byte {
	doc := map[string]any{
		"users": []map[string]any{{
			"name":                user,
			"groups":              []string{"sudo"},
			"shell":               "/bin/bash",
			"sudo":                "ALL=(ALL) NOPASSWD:ALL",
			"lock_passwd":         true,
			"ssh_authorized_keys": []string{strings.TrimSpace(authorizedKey)},
		}},
		"ssh_pwauth": false,
		"runcmd":     [][]string{{"systemctl", "enable", "--now", "ssh.service"}},
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		panic(err) // maps of strings: cannot fail
	}
	return append([]byte("#cloud-config\n"), b...)
}

// NewSSHKey writes a new ed25519 key pair to dir/id_ed25519 (mode 0600, an
// OpenSSH private key) and dir/id_ed25519.pub, and returns the private
// key's path and the public key as an authorized_keys line.
func NewSSHKey(dir string) (privPath, pubLine string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "wsgi-e2e")
	if err != nil {
		return "", "", fmt.Errorf("ssh key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", "", fmt.Errorf("ssh key: %w", err)
	}
	pubLine = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " wsgi-e2e"
	privPath = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(privPath, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", "", fmt.Errorf("ssh key: %w", err)
	}
	if err := os.WriteFile(privPath+".pub", []byte(pubLine+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("ssh key: %w", err)
	}
	return privPath, pubLine, nil
}
