package image

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate().Err(); err != nil {
		t.Fatalf("Default() is invalid: %v", err)
	}
	if got := (Stack{}).WithDefaults(); got.Sockets != 3 || got.User != "wsgi" || got.Group != "wsgi" {
		t.Errorf("WithDefaults of the zero Stack: sockets %d user %q group %q", got.Sockets, got.User, got.Group)
	}
}

func TestValidateRejects(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Stack)
		want   string
	}{
		{"zero sockets", func(s *Stack) { s.Sockets = 0 }, "sockets: must be between 1 and 16, got 0"},
		{"100 sockets", func(s *Stack) { s.Sockets = 100 }, "sockets: must be between 1 and 16, got 100"},
		{"relative venv", func(s *Stack) { s.VenvDir = "opt/venv" }, `venv_dir: must be an absolute path, got "opt/venv"`},
		{"unclean srv", func(s *Stack) { s.SrvDir = "/srv/../etc" }, `srv_dir: must be a clean absolute path`},
		{"space in path", func(s *Stack) { s.EtcDir = "/etc/my app" }, `etc_dir: must be a clean absolute path`},
		{"run dir outside /run", func(s *Stack) { s.RunDir = "/var/run2" }, `run_dir: must be below /run`},
		{"unknown distro", func(s *Stack) { s.Family = "pacman" }, `distro_family: must be "apt" (Debian, Ubuntu) or "dnf" (Amazon Linux 2023), got "pacman"`},
		{"root user", func(s *Stack) { s.User = "root" }, `user: must be a system user name other than root`},
		{"bad worker class", func(s *Stack) { s.WorkerClass = "uvicorn" }, `worker_class: must be one of sync, gthread, gevent, eventlet, tornado, got "uvicorn"`},
		{"threads with sync", func(s *Stack) { s.WorkerClass = "sync"; s.Threads = 4 }, `threads: only the gthread worker class uses threads`},
		{"zero workers", func(s *Stack) { s.WorkersPerUnit = 0 }, `workers: must be between 1 and 64, got 0`},
		{"loose version", func(s *Stack) { s.GunicornVersion = ">=20" }, `gunicorn_version: must be an exact version`},
		{"distro with version", func(s *Stack) { s.GunicornSource = GunicornFromDistro; s.SystemSitePackages = true }, `gunicorn_version: the distro package has its own version`},
		{"unknown source", func(s *Stack) { s.GunicornSource = "conda" }, `gunicorn_source: must be "pip" or "distro", got "conda"`},
		{"index not http", func(s *Stack) { s.PipIndexURL = "ftp://x" }, `pip_index_url: must be an http(s) URL`},
		{"package injection", func(s *Stack) { s.ExtraPackages = []string{"ok", "x; rm -rf /"} }, `extra_packages[1]: must be a package name`},
		{"python injection", func(s *Stack) { s.Python = "python3; id" }, `python: must be python3, python3.X or an absolute path`},
		{"health root", func(s *Stack) { s.HealthPath = "/" }, `health_path: must be a URL path such as /healthz`},
		{"static without slash", func(s *Stack) { s.StaticURL = "/static" }, `static_url: must be a URL path that ends in '/'`},
		{"body size", func(s *Stack) { s.ClientMaxBodySize = "lots" }, `client_max_body_size: must be a size such as 10m, got "lots"`},
		{"port", func(s *Stack) { s.ListenPort = 70000 }, `listen_port: must be between 1 and 65535, got 70000`},
		{"app name", func(s *Stack) { s.AppName = "My App" }, `app_name: must be 1-32 lower-case letters`},
		{"unknown need", func(s *Stack) { s.FirstBoot = []string{"git", "svn"} }, `first_boot[1]: must be one of aws-requests, git, schema-1 (the wsgi-cloudinit data source's needs output), got "svn"`},
		{"other schema", func(s *Stack) { s.FirstBoot = []string{"schema-2"} }, `first_boot[0]: the payload was rendered for stack schema-2, and this plugin bakes schema-1`},
		{"wheelhouse dir", func(s *Stack) { s.Requirements = "Django\n"; s.WheelhouseDir = "/opt/my wheels" }, `wheelhouse_dir: must be a clean absolute path`},
		{"build package injection", func(s *Stack) { s.Requirements = "Django\n"; s.BuildPackages = []string{"libpq-dev", "$(id)"} }, `build_packages[1]: must be a package name, got "$(id)"`},
		{"build packages without a wheelhouse", func(s *Stack) { s.BuildPackages = []string{"libpq-dev"} }, `build_packages: are only installed to build the wheelhouse: set requirements_file`},
		{"requirements include", func(s *Stack) { s.Requirements = "Django\n-r base.txt\n" }, `requirements_file: "-r base.txt" names another file`},
		{"requirements constraint", func(s *Stack) { s.Requirements = "--constraint=c.txt\n" }, `requirements_file: "--constraint=c.txt" names another file`},
		{"requirements editable", func(s *Stack) { s.Requirements = "-e git+https://x/y.git#egg=y\n" }, `requirements_file: "-e git+https://x/y.git#egg=y" names another file`},
		{"requirements local path", func(s *Stack) { s.Requirements = "./vendor/pkg\n" }, `requirements_file: "./vendor/pkg" is a local path`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := Default()
			c.change(&s)
			err := s.Validate().Err()
			if err == nil {
				t.Fatalf("Validate accepted %+v", s)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	s := Default()
	s.Sockets, s.VenvDir, s.Family = 0, "venv", "yum"
	r := s.Validate()
	if len(r.Problems) != 3 {
		t.Errorf("got %d problems, want 3: %q", len(r.Problems), r.Problems)
	}
	for _, p := range r.Problems {
		if p.Path == "" || p.Message == "" {
			t.Errorf("problem without path or message: %+v", p)
		}
	}
}

func TestPaths(t *testing.T) {
	s := Default()
	for got, want := range map[string]string{
		s.SocketPath(2):                    "/run/wsgi/app-2.sock",
		s.CurrentLink():                    "/srv/wsgi/current",
		s.ReleasesDir():                    "/srv/wsgi/releases",
		s.EnvFile():                        "/etc/wsgi/wsgi.env",
		s.GunicornConfig():                 "/etc/wsgi/gunicorn.conf.py",
		s.Distro().NginxUser:               "www-data",
		s.StaticDir():                      "/srv/wsgi/current/static",
		s.UpstreamName():                   "wsgi_app",
		s.Distro().DefaultSite:             "/etc/nginx/sites-enabled/default",
		strings.Join(s.SocketUnits(), " "): "wsgi@1.socket wsgi@2.socket wsgi@3.socket",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestPackagesAndProvides(t *testing.T) {
	cases := []struct {
		name           string
		s              Stack
		packages, caps string
	}{
		{"default", Default(), "nginx curl ca-certificates python3 python3-venv", "aws-requests schema-1"},
		{"git from first_boot", Stack{FirstBoot: []string{"schema-1", "git"}}.WithDefaults(),
			"nginx curl ca-certificates python3 python3-venv git", "aws-requests git schema-1"},
		{"git from extra_packages, no repeats", Stack{ExtraPackages: []string{"git", "libpq5", "nginx"}, FirstBoot: []string{"git"}}.WithDefaults(),
			"nginx curl ca-certificates python3 python3-venv git libpq5", "aws-requests git schema-1"},
		{"distro gunicorn on dnf", Stack{Family: FamilyDnf, Python: "python3.11", GunicornSource: GunicornFromDistro}.WithDefaults(),
			"nginx python3.11 python3-gunicorn", "aws-requests schema-1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := strings.Join(c.s.Packages(), " "); got != c.packages {
				t.Errorf("Packages = %q, want %q", got, c.packages)
			}
			if got := strings.Join(c.s.Provides(), " "); got != c.caps {
				t.Errorf("Provides = %q, want %q", got, c.caps)
			}
		})
	}
}

// TestDescription checks the stack file against the contract's reader and the AMI tags the
// builder makes of it.
func TestDescription(t *testing.T) {
	s := Stack{FirstBoot: []string{"git"}, Sockets: 2, AppName: "shop"}.WithDefaults()
	file := s.Description()
	h, err := contract.ParseStackHeader(file)
	if err != nil {
		t.Fatal(err)
	}
	if h.Schema != contract.SchemaVersion || !slices.Contains(h.Provides, "git") {
		t.Fatalf("header = %+v", h)
	}
	var full map[string]any
	if err := json.Unmarshal(file, &full); err != nil {
		t.Fatal(err)
	}
	paths := full["paths"].(map[string]any)
	if paths["deploy"] != contract.DeployProgram || paths["app_file"] != contract.AppFile || len(paths["sockets"].([]any)) != 2 {
		t.Errorf("paths = %v", paths)
	}
	tags, err := contract.Tags(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := contract.Fits([]string{"schema-1", "git", "aws-requests"}, "the image", tags); err != nil {
		t.Errorf("a git payload does not fit a stack baked with first_boot git: %v", err)
	}
	if tags2, _ := contract.Tags(Default().Description()); contract.Fits([]string{"git"}, "the image", tags2) == nil {
		t.Error("a git payload fits a stack without git")
	}
	if string(s.Description()) != string(file) {
		t.Error("two descriptions of the same stack differ")
	}
}

func TestRequirementLines(t *testing.T) {
	got := requirementLines("# pinned\nDjango==4.2 \\\n    --hash=sha256:aa  # the framework\n\n\r\nfastcounter\r\n--only-binary :all:\n")
	want := []string{"Django==4.2      --hash=sha256:aa", "fastcounter", "--only-binary :all:"}
	if !slices.Equal(got, want) {
		t.Errorf("requirementLines = %q, want %q", got, want)
	}
}

// The wheelhouse's build tools follow the interpreter and the family; build_packages come last.
func TestBuildTools(t *testing.T) {
	apt := Stack{Requirements: "x\n", BuildPackages: []string{"libpq-dev", "build-essential"}}.WithDefaults()
	dnf := Stack{Requirements: "x\n", Family: FamilyDnf, Python: "python3.11"}.WithDefaults()
	for _, c := range []struct {
		s    Stack
		want []string
	}{
		{apt, []string{"build-essential", "python3-dev", "libpq-dev"}},
		{dnf, []string{"gcc", "python3.11-devel"}},
	} {
		if got := c.s.BuildTools(); !slices.Equal(got, c.want) {
			t.Errorf("%s BuildTools = %q, want %q", c.s.Family, got, c.want)
		}
		if slices.ContainsFunc(c.s.Packages(), func(p string) bool { return slices.Contains(c.want, p) }) {
			t.Errorf("%s: a build tool is among the packages baked into the image: %q", c.s.Family, c.s.Packages())
		}
	}
}

// The bake proves the wheelhouse holds every requirement with a copy of the file without its
// hashes (a wheel compiled at bake time has a new sha256): run the install script's own sed.
func TestWheelhouseProofDropsHashes(t *testing.T) {
	sh := requireTool(t, "sh")
	s := Stack{Requirements: "x\n"}.WithDefaults()
	script := string(Render(s).InstallScript)
	start := strings.Index(script, "sed -e 's/--hash")
	end := strings.Index(script[start:], "requirements-nohash.txt\"\n")
	if start < 0 || end < 0 {
		t.Fatal("the install script has no hash-free copy of the requirements")
	}
	stage := t.TempDir()
	in := "--require-hashes\nDjango==4.2.30 \\\n    --hash=sha256:" + strings.Repeat("ab", 32) + " \\\n    --hash=sha256:" + strings.Repeat("CD", 32) +
		"\nfastcounter==1.0 --hash=sha256:" + strings.Repeat("01", 32) + "  # compiled at bake time\n"
	writeFile(t, stage+s.WheelhouseRequirements(), []byte(in), 0o644)
	cmd := exec.Command(sh, "-c", script[start:start+end+len("requirements-nohash.txt\"")])
	cmd.Env = []string{"STAGE=" + stage, "PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sed: %v\n%s", err, out)
	}
	got, err := os.ReadFile(stage + "/requirements-nohash.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Django==4.2.30", "fastcounter==1.0"}
	if lines := requirementLines(string(got)); len(lines) != 2 || strings.Fields(lines[0])[0] != want[0] || strings.Fields(lines[1])[0] != want[1] || strings.Contains(string(got), "hash") {
		t.Errorf("hash-free copy:\n%s\nwant only %q", got, want)
	}
}
