package stack

import (
	"bufio"
	"fmt"
	"slices"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

// osRelease holds the /etc/os-release fields the family is decided from.
type osRelease struct {
	ID, IDLike, VersionID, PrettyName string
}

// parseOSRelease reads the KEY=value lines of os-release(5); values may be quoted.
func parseOSRelease(content string) osRelease {
	var r osRelease
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
			val = val[1 : len(val)-1]
		}
		switch key {
		case "ID":
			r.ID = strings.ToLower(val)
		case "ID_LIKE":
			r.IDLike = strings.ToLower(val)
		case "VERSION_ID":
			r.VersionID = val
		case "PRETTY_NAME":
			r.PrettyName = val
		}
	}
	return r
}

var (
	aptIDs = []string{"debian", "ubuntu"}
	dnfIDs = []string{"amzn", "fedora", "rhel"}
)

// familyOf decides the package-manager family from ID first and ID_LIKE second, so a derivative
// (Linux Mint: ID=linuxmint, ID_LIKE="ubuntu debian") is placed by what it is built on.
func familyOf(r osRelease) (image.Family, error) {
	if r.ID == "amzn" && r.VersionID == "2" {
		return "", fmt.Errorf("distro_family: Amazon Linux 2 uses yum and is not supported; use Amazon Linux 2023 (dnf)")
	}
	ids := append([]string{r.ID}, strings.Fields(r.IDLike)...)
	for _, id := range ids {
		switch {
		case slices.Contains(aptIDs, id):
			return image.FamilyApt, nil
		case slices.Contains(dnfIDs, id):
			return image.FamilyDnf, nil
		}
	}
	return "", fmt.Errorf("distro_family: cannot tell the package manager from /etc/os-release (ID=%q, ID_LIKE=%q): "+
		"supported are Debian and Ubuntu (apt) and Amazon Linux 2023, Fedora and RHEL-likes (dnf); "+
		"set distro_family = \"apt\" or \"dnf\" if this machine is compatible with one of them", r.ID, r.IDLike)
}
