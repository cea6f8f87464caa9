package stack

import (
	"strings"
	"testing"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

func TestFamilyFromOSRelease(t *testing.T) {
	for _, tc := range []struct {
		name, release string
		want          image.Family
		wantErr       string
	}{
		{"debian 12", debian12, image.FamilyApt, ""},
		{"ubuntu 24.04", "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n", image.FamilyApt, ""},
		{"linux mint, by ID_LIKE", "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n", image.FamilyApt, ""},
		{"raspbian, by ID_LIKE", "ID=raspbian\nID_LIKE=debian\n", image.FamilyApt, ""},
		{"amazon linux 2023", amazon2023, image.FamilyDnf, ""},
		{"fedora 41", "NAME=\"Fedora Linux\"\nVERSION_ID=41\nID=fedora\n", image.FamilyDnf, ""},
		{"rhel 9", "ID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\n", image.FamilyDnf, ""},
		{"rocky 9, by ID_LIKE", "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n", image.FamilyDnf, ""},
		{"single quotes and comments", "# a comment\nID='debian'\n", image.FamilyApt, ""},
		{"upper case ID", "ID=Debian\n", image.FamilyApt, ""},
		{"amazon linux 2 uses yum", "ID=\"amzn\"\nID_LIKE=\"centos rhel fedora\"\nVERSION_ID=\"2\"\n", "", "distro_family: Amazon Linux 2 uses yum and is not supported"},
		{"alpine", "ID=alpine\nVERSION_ID=3.20.3\n", "", `distro_family: cannot tell the package manager from /etc/os-release (ID="alpine", ID_LIKE="")`},
		{"arch", "ID=arch\n", "", `(ID="arch", ID_LIKE="")`},
		{"opensuse", "ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\n", "", `(ID="opensuse-leap", ID_LIKE="suse opensuse")`},
		{"empty", "", "", `(ID="", ID_LIKE="")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := familyOf(parseOSRelease(tc.release))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
