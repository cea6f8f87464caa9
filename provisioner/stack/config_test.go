package stack

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

func TestPrepareDefaults(t *testing.T) {
	var c Config
	if err := c.Prepare(map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if c.DistroFamily != "auto" || c.StagingDir != "/tmp" || c.ExecuteCommand != DefaultExecuteCommand || !*c.ImageHygiene || !*c.WaitForCloudInit {
		t.Errorf("provisioner defaults: family %q staging %q execute %q hygiene %v cloud-init %v",
			c.DistroFamily, c.StagingDir, c.ExecuteCommand, *c.ImageHygiene, *c.WaitForCloudInit)
	}
	if got, want := c.Stack(image.FamilyApt), image.Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("stack of an empty config:\n got %+v\nwant %+v", got, want)
	}
}

// Every key reaches its Stack field.
func TestPrepareEveryKey(t *testing.T) {
	var c Config
	reqs := filepath.Join(t.TempDir(), "requirements.txt")
	if err := os.WriteFile(reqs, []byte("Django==4.2.11\nfastcounter==1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := c.Prepare(map[string]any{
		"requirements_file": reqs, "wheelhouse_dir": "/opt/shop/wheels", "build_packages": []string{"libpq-dev"},
		"app_name": "shop", "user": "shop", "group": "shopgrp", "sockets": 5, "workers": 2,
		"worker_class": "gthread", "threads": 4, "worker_timeout": 40, "graceful_timeout": 20,
		"keepalive": 10, "max_requests": 1000, "backlog": 512, "distro_family": "dnf",
		"python": "python3.11", "gunicorn_source": "pip", "gunicorn_version": "22.0.0",
		"pip_index_url": "http://10.0.0.1:8080/simple/", "pip_find_links": "/opt/wheels",
		"system_site_packages": true, "extra_packages": []string{"libpq5"},
		"listen_port": 8080, "server_name": "shop.example.com", "client_max_body_size": "20m",
		"proxy_read_timeout": 90, "health_path": "/up", "static_url": "/assets/",
		"trusted_proxy_cidrs": []string{"10.1.0.0/16"},
		"venv_dir":            "/opt/shop/venv", "srv_dir": "/srv/shop", "etc_dir": "/etc/shop",
		"run_dir": "/run/shop", "share_dir": "/usr/share/shop",
		"image_hygiene": false, "wait_for_cloud_init": false, "staging_dir": "/var/tmp",
		"execute_command": "doas {{.Command}}",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := image.Stack{
		AppName: "shop", User: "shop", Group: "shopgrp", Sockets: 5, WorkersPerUnit: 2,
		WorkerClass: "gthread", Threads: 4, TimeoutSeconds: 40, GracefulTimeoutSeconds: 20,
		KeepAliveSeconds: 10, MaxRequests: 1000, Backlog: 512, Family: image.FamilyDnf,
		Python: "python3.11", GunicornSource: "pip", GunicornVersion: "22.0.0",
		PipIndexURL: "http://10.0.0.1:8080/simple/", PipFindLinks: "/opt/wheels",
		SystemSitePackages: true, ExtraPackages: []string{"libpq5"},
		Requirements: "Django==4.2.11\nfastcounter==1.0\n", WheelhouseDir: "/opt/shop/wheels", BuildPackages: []string{"libpq-dev"},
		ListenPort: 8080, ServerName: "shop.example.com", ClientMaxBodySize: "20m",
		ProxyReadTimeout: 90, HealthPath: "/up", StaticURL: "/assets/",
		TrustedProxyCIDRs: []string{"10.1.0.0/16"},
		VenvDir:           "/opt/shop/venv", SrvDir: "/srv/shop", EtcDir: "/etc/shop",
		RunDir: "/run/shop", ShareDir: "/usr/share/shop",
	}
	if got := c.Stack(image.FamilyDnf); !reflect.DeepEqual(got, want) {
		t.Errorf("stack:\n got %+v\nwant %+v", got, want)
	}
	if *c.ImageHygiene || *c.WaitForCloudInit || c.StagingDir != "/var/tmp" || c.ExecuteCommand != "doas {{.Command}}" {
		t.Errorf("provisioner keys not taken: %v %v %q %q", *c.ImageHygiene, *c.WaitForCloudInit, c.StagingDir, c.ExecuteCommand)
	}
}

func TestPrepareErrors(t *testing.T) {
	emptyRequirements := filepath.Join(t.TempDir(), "requirements.txt")
	if err := os.WriteFile(emptyRequirements, []byte("# nothing yet\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		raw  map[string]any
		want []string // each must be one line of the error
	}{
		{"explicit zero sockets", map[string]any{"sockets": 0}, []string{"sockets: must be between 1 and 16, got 0"}},
		{"too many sockets", map[string]any{"sockets": 17}, []string{"sockets: must be between 1 and 16, got 17"}},
		{"explicit zero threads", map[string]any{"threads": 0}, []string{"threads: must be between 1 and 256, got 0"}},
		{"threads without gthread", map[string]any{"worker_class": "sync", "threads": 4},
			[]string{`threads: only the gthread worker class uses threads; set threads = 1 or worker_class = "gthread", got 4`}},
		{"sync without threads takes 1", map[string]any{"worker_class": "sync", "workers": 0}, []string{"workers: must be between 1 and 64, got 0"}},
		{"worker_timeout is the HCL key of Gunicorn's timeout", map[string]any{"worker_timeout": 0}, []string{"worker_timeout: must be between 1 and 3600, got 0"}},
		{"distro family", map[string]any{"distro_family": "yum"},
			[]string{`distro_family: must be "auto", "apt" (Debian, Ubuntu) or "dnf" (Amazon Linux 2023), got "yum"`}},
		{"distro gunicorn with a version", map[string]any{"gunicorn_source": "distro", "gunicorn_version": "20.1.0"},
			[]string{`gunicorn_version: the distro package has its own version; leave it empty with gunicorn_source = "distro", got "20.1.0"`}},
		{"distro gunicorn without system site packages", map[string]any{"gunicorn_source": "distro", "system_site_packages": false},
			[]string{`system_site_packages: must be true with gunicorn_source = "distro"`}},
		{"staging_dir", map[string]any{"staging_dir": "tmp"},
			[]string{`staging_dir: must be a clean absolute path without spaces or quotes, such as /tmp, got "tmp"`}},
		{"staging_dir with a space", map[string]any{"staging_dir": "/my tmp"},
			[]string{`staging_dir: must be a clean absolute path without spaces or quotes, such as /tmp, got "/my tmp"`}},
		{"execute_command without the command", map[string]any{"execute_command": "sudo -n sh"},
			[]string{`execute_command: must contain {{.Command}}, got "sudo -n sh"`}},
		{"requirements_file missing", map[string]any{"requirements_file": "/nonexistent/requirements.txt"},
			[]string{"requirements_file: must be a readable file on the machine that runs Packer: open /nonexistent/requirements.txt: no such file or directory"}},
		{"requirements_file empty", map[string]any{"requirements_file": emptyRequirements},
			[]string{"requirements_file: names no requirement: " + emptyRequirements + " has only comments and blank lines; leave requirements_file out for an image without a wheelhouse"}},
		{"build_packages alone", map[string]any{"build_packages": []string{"libpq-dev"}},
			[]string{"build_packages: are only installed to build the wheelhouse: set requirements_file, or leave build_packages out"}},
		{"every problem at once", map[string]any{"sockets": 99, "run_dir": "/var/run2", "listen_port": 0, "app_name": "Shop"}, []string{
			"sockets: must be between 1 and 16, got 99",
			`run_dir: must be below /run so the sockets vanish at reboot, got "/var/run2"`,
			"listen_port: must be between 1 and 65535, got 0",
			`app_name: must be 1-32 lower-case letters, digits, '-' or '_', starting with a letter, got "Shop"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			err := c.Prepare(tc.raw)
			if err == nil {
				t.Fatal("Prepare succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), "* wsgi-stack: "+w+"\n") && !strings.HasSuffix(err.Error(), "* wsgi-stack: "+w) {
					t.Errorf("error lacks the line %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestPrepareExecuteCommandDoesNotParse(t *testing.T) {
	var c Config
	err := c.Prepare(map[string]any{"execute_command": "sudo {{if .Sudo}} {{.Command}}"})
	if err == nil || !strings.Contains(err.Error(), "execute_command") || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("got %v, want a template error naming execute_command", err)
	}
}

func TestPrepareUnknownKey(t *testing.T) {
	var c Config
	err := c.Prepare(map[string]any{"timeout": 30})
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("got %v, want an error about the unknown key timeout", err)
	}
}

// Every key Validate can name is a key of the HCL spec, so an error always points at
// something the user can write.
func TestValidationKeysAreHCLKeys(t *testing.T) {
	var c Config
	err := c.Prepare(map[string]any{
		"app_name": "-", "user": "root", "group": "root", "sockets": 0, "workers": 0, "worker_class": "x",
		"threads": 0, "worker_timeout": 0, "graceful_timeout": 0, "keepalive": 0, "max_requests": -1,
		"backlog": 0, "distro_family": "x", "python": "perl", "gunicorn_version": "latest",
		"pip_index_url": "ftp://x", "pip_find_links": "a b", "extra_packages": []string{"-x"},
		"listen_port": 0, "server_name": "'", "client_max_body_size": "big", "proxy_read_timeout": 0,
		"health_path": "/", "static_url": "/", "trusted_proxy_cidrs": []string{"0.0.0.0/0"}, "venv_dir": "v", "srv_dir": "s", "etc_dir": "e",
		"run_dir": "r", "share_dir": "d", "staging_dir": "t", "execute_command": "x",
		"requirements_file": "/nonexistent", "wheelhouse_dir": "w", "build_packages": []string{"-x"},
	})
	if err == nil {
		t.Fatal("Prepare succeeded")
	}
	spec := (&Provisioner{}).ConfigSpec()
	lines := strings.Split(err.Error(), "\n")
	n := 0
	for _, l := range lines {
		l, ok := strings.CutPrefix(l, "* wsgi-stack: ")
		if !ok {
			continue
		}
		n++
		key, _, _ := strings.Cut(l, ":")
		key, _, _ = strings.Cut(key, "[")
		if _, ok := spec[key]; !ok {
			t.Errorf("error names %q, which is no HCL key: %s", key, l)
		}
	}
	if n < 30 {
		t.Errorf("only %d problems reported for 32 bad keys:\n%v", n, err)
	}
}

// Every HCL key is documented on the provisioner's page.
func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/provisioners/stack.mdx")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for key := range (&Provisioner{}).ConfigSpec() {
		if strings.HasPrefix(key, "packer_") {
			continue // set by Packer itself
		}
		n++
		if !strings.Contains(string(doc), "- `"+key+"` (") {
			t.Errorf("docs/provisioners/stack.mdx does not document %s", key)
		}
	}
	if n < 35 {
		t.Errorf("only %d keys in the spec", n)
	}
}
