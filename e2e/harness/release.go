package harness

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// A Release is a Debian suite the harness can bootstrap and boot.
type Release struct {
	// Suite is the codename: the mmdebstrap suite and apt's suite prefix
	// (SUITE, SUITE-updates, SUITE-security).
	Suite string
	// Version is VERSION_ID in the machine's /etc/os-release.
	Version string
	// Python is the version of the distribution's python3 (MAJOR.MINOR).
	Python string
	// Gunicorn is the version of the distribution's python3-gunicorn.
	Gunicorn string
}

// The releases the harness knows. Trixie is Debian's stable release and the
// default; bookworm (oldstable) stays booted so both keep working.
var (
	Trixie   = Release{Suite: "trixie", Version: "13", Python: "3.13", Gunicorn: "23.0.0"}
	Bookworm = Release{Suite: "bookworm", Version: "12", Python: "3.11", Gunicorn: "20.1.0"}

	knownReleases = []Release{Trixie, Bookworm}
)

// DefaultRelease is what a caller gets when it names no release.
var DefaultRelease = Trixie

// ReleasesEnv names the releases the e2e tests run on, space- or
// comma-separated, e.g. "trixie bookworm". Unset or empty: DefaultRelease.
const ReleasesEnv = "WSGI_E2E_RELEASES"

func (r Release) String() string { return r.Suite }

// ReleaseNamed returns the known release with that suite name.
func ReleaseNamed(suite string) (Release, error) {
	for _, r := range knownReleases {
		if r.Suite == suite {
			return r, nil
		}
	}
	names := make([]string, len(knownReleases))
	for i, r := range knownReleases {
		names[i] = r.Suite
	}
	return Release{}, fmt.Errorf("release %q: want one of %s", suite, strings.Join(names, ", "))
}

// Releases returns the releases named by $WSGI_E2E_RELEASES, in the order
// given and without repeats, or DefaultRelease alone when it is unset.
func Releases() ([]Release, error) {
	return parseReleases(os.Getenv(ReleasesEnv))
}

func parseReleases(s string) ([]Release, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return []Release{DefaultRelease}, nil
	}
	var out []Release
	for _, f := range fields {
		r, err := ReleaseNamed(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ReleasesEnv, err)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// ForEachRelease runs f as a subtest named after each release of
// Releases() ("trixie", "bookworm"), so `-run 'TestX/bookworm'` picks one.
// The subtests run one after the other: each boots machines of its own and
// the machine has two cores.
func ForEachRelease(t *testing.T, f func(t *testing.T, r Release)) {
	t.Helper()
	rs, err := Releases()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		t.Run(r.Suite, func(t *testing.T) { f(t, r) })
	}
}

// OnFirstRelease runs f as one subtest, named after the first release of
// Releases(): for the parts of the matrix that one release is enough for,
// named like the rest so -run patterns stay the same.
func OnFirstRelease(t *testing.T, f func(t *testing.T, r Release)) {
	t.Helper()
	rs, err := Releases()
	if err != nil {
		t.Fatal(err)
	}
	t.Run(rs[0].Suite, func(t *testing.T) { f(t, rs[0]) })
}
