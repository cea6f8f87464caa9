package image

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenCases are the stacks whose rendered files are kept under testdata/<name>/.
func goldenCases() map[string]Stack {
	dnf := Stack{Family: FamilyDnf, Python: "python3.11", AppName: "shop", Sockets: 2}.WithDefaults()
	distro := Stack{GunicornSource: GunicornFromDistro, WorkerClass: "sync", WorkersPerUnit: 3,
		ExtraPackages: []string{"python3-flask", "libpq5"}, MaxRequests: 1000, GunicornAccessLog: true}.WithDefaults()
	// An index URL with a query string: & and = must reach pip as one word.
	pipIndex := Stack{PipIndexURL: "http://127.0.0.1:8000/simple/?token=a&b=c", GunicornVersion: "20.1.0",
		FirstBoot: []string{"schema-1", "git", "aws-requests"}}.WithDefaults()
	// A baked wheelhouse with a build package beside the compilers.
	wheels := Stack{Requirements: "Django==4.2.11\nfastcounter==1.0 --hash=sha256:" + strings.Repeat("ab", 32) + "\n",
		BuildPackages: []string{"libpq-dev"}}.WithDefaults()
	return map[string]Stack{
		"wheelhouse":  wheels,
		"default":     Default(),
		"dnf":         dnf,
		"distro-sync": distro,
		"pip-index":   pipIndex,
	}
}

// bundleFiles flattens a bundle into name → content, with the on-instance path as the name.
func bundleFiles(b *Bundle) map[string][]byte {
	out := map[string][]byte{
		"install.sh": b.InstallScript,
		"hygiene.sh": b.HygieneScript,
	}
	for _, f := range b.Files {
		out[strings.TrimPrefix(f.Path, "/")] = f.Content
	}
	return out
}

func TestRenderGolden(t *testing.T) {
	for name, s := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			b := Render(s)
			dir := filepath.Join("testdata", name)
			got := bundleFiles(b)
			if *update {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				for p, c := range got {
					fp := filepath.Join(dir, p)
					if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(fp, c, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			seen := map[string]bool{}
			err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(dir, p)
				seen[rel] = true
				want, _ := os.ReadFile(p)
				if c, ok := got[rel]; !ok {
					t.Errorf("golden file %s is no longer rendered", rel)
				} else if !bytes.Equal(c, want) {
					t.Errorf("%s differs from its golden file (go test ./internal/image -update rewrites it):\n%s", rel, c)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("read golden files: %v (run go test ./internal/image -update)", err)
			}
			for p := range got {
				if !seen[p] {
					t.Errorf("%s has no golden file (go test ./internal/image -update)", p)
				}
			}
		})
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	for name, s := range goldenCases() {
		a := Render(s)
		b := Render(s)
		for p, c := range bundleFiles(a) {
			if !bytes.Equal(c, bundleFiles(b)[p]) {
				t.Errorf("%s: %s differs between two renders of the same Stack", name, p)
			}
		}
	}
}

func TestRenderContract(t *testing.T) {
	s := Default()
	b := Render(s)
	files := bundleFiles(b)
	site := string(files["etc/nginx/conf.d/wsgi.conf"])
	for _, i := range s.Instances() {
		if !strings.Contains(site, "server unix:"+s.SocketPath(i)+" ") {
			t.Errorf("NGINX upstream lacks socket %d (%s)", i, s.SocketPath(i))
		}
	}
	// Each socket is listed twice (two tries per unit), and nothing else is.
	if n := strings.Count(site, "server unix:"); n != 2*s.Sockets {
		t.Errorf("NGINX upstream has %d servers, want %d (each socket twice)", n, 2*s.Sockets)
	}
	sock := string(files["etc/systemd/system/wsgi@.socket"])
	for _, want := range []string{"SocketMode=0660", "SocketGroup=www-data", "SocketUser=wsgi", "ListenStream=/run/wsgi/app-%i.sock"} {
		if !strings.Contains(sock, want+"\n") {
			t.Errorf("socket unit lacks %q", want)
		}
	}
	target := string(files["etc/systemd/system/wsgi.target"])
	if !strings.Contains(target, "Wants=wsgi@1.socket wsgi@2.socket wsgi@3.socket\n") {
		t.Errorf("wsgi.target does not want the three sockets:\n%s", target)
	}
	install := string(b.InstallScript)
	if strings.Contains(install, "systemctl enable wsgi") || strings.Contains(install, "enable --now wsgi") {
		t.Error("install script enables the app units; the baked image must not serve before first boot")
	}
	for _, f := range b.Files {
		if !strings.Contains(install, `"$STAGE"'`+f.Path+`' '`+f.Path+`'`) {
			t.Errorf("install script does not install %s", f.Path)
		}
	}
	dnf := Stack{Family: FamilyDnf}.WithDefaults()
	db := Render(dnf)
	if !strings.Contains(string(bundleFiles(db)["etc/systemd/system/wsgi@.socket"]), "SocketGroup=nginx\n") {
		t.Error("dnf socket unit does not give the socket to group nginx")
	}
}
