package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/report"
)

// The wheelhouse: wheels of the app's requirements built at bake time, so first boot installs
// them offline instead of downloading and compiling. Built with the baked venv's pip, so every
// wheel fits the interpreter the release venvs are made with.

// Wheelhouse reports whether the image bakes a wheelhouse.
func (s Stack) Wheelhouse() bool { return s.Requirements != "" }

// WheelhouseRequirements is where the requirements file the wheelhouse was built from is kept.
func (s Stack) WheelhouseRequirements() string { return s.WheelhouseDir + "/requirements.txt" }

// WheelhouseSums lists the sha256 of every baked wheel (sha256sum's format), for
// requirements files that use pip's hash checking.
func (s Stack) WheelhouseSums() string { return s.WheelhouseDir + "/SHA256SUMS" }

// WheelhouseVenv is the venv the bake installs the requirements into, from the wheelhouse as
// first boot would. A release whose requirements file is the baked one, byte for byte, gets it
// as its own venv (a symlink) and runs no pip.
func (s Stack) WheelhouseVenv() string { return s.WheelhouseDir + "/.venv" }

// WheelhouseVenvPython is the baked venv's interpreter.
func (s Stack) WheelhouseVenvPython() string { return s.WheelhouseVenv() + "/bin/python" }

// RequirementsSHA256 is the digest of the requirements file the wheelhouse was built from.
func (s Stack) RequirementsSHA256() string {
	sum := sha256.Sum256([]byte(s.Requirements))
	return hex.EncodeToString(sum[:])
}

// BuildTools are the packages installed only to build the wheels: the distribution's compilers,
// the headers of the interpreter that creates the venv, then build_packages.
func (s Stack) BuildTools() []string {
	d := s.Distro()
	py := "python3"
	if strings.HasPrefix(s.Python, "python3") {
		py = s.Python
	}
	out := append([]string{}, d.Compilers...)
	out = append(out, py+d.DevSuffix)
	for _, p := range s.BuildPackages {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// requirementLines are the lines of a requirements file that say something: comments, blank
// lines and continuations joined, as pip reads them.
func requirementLines(content string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(strings.ReplaceAll(content, "\r\n", "\n"), "\n") {
		if c, ok := strings.CutSuffix(l, "\\"); ok {
			cur += c + " "
			continue
		}
		l = cur + l
		cur = ""
		if i := strings.Index(l, " #"); i >= 0 {
			l = l[:i]
		}
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	if strings.TrimSpace(cur) != "" {
		out = append(out, strings.TrimSpace(cur))
	}
	return out
}

// fileOptions are the requirement-file options that name another file, which the bake would not
// have: only the one file is uploaded.
var fileOptions = []string{"-r", "--requirement", "-c", "--constraint", "-e", "--editable"}

func (s Stack) validateWheelhouse(r *report.Report) {
	for i, p := range s.BuildPackages {
		if !packageRe.MatchString(p) {
			r.Add(fmt.Sprintf("build_packages[%d]", i), "must be a package name, got %q", p)
		}
	}
	if !s.Wheelhouse() {
		if len(s.BuildPackages) > 0 {
			r.Add("build_packages", "are only installed to build the wheelhouse: set requirements_file, or leave build_packages out")
		}
		return
	}
	for _, l := range requirementLines(s.Requirements) {
		word, _, _ := strings.Cut(l, " ")
		word, _, _ = strings.Cut(word, "=")
		switch {
		case slices.Contains(fileOptions, word) || strings.HasPrefix(l, "-r") || strings.HasPrefix(l, "-c") || strings.HasPrefix(l, "-e"):
			r.Add("requirements_file", "%q names another file or a source checkout, which the bake does not upload: give one self-contained requirements file (pip-compile's output is one)", l)
		case strings.HasPrefix(l, ".") || strings.HasPrefix(l, "/") || strings.HasPrefix(l, "file:"):
			r.Add("requirements_file", "%q is a local path, which the bake does not upload: name the package, or serve it from pip_find_links", l)
		}
	}
}
