package stack

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/image"
)

const (
	stage      = "/tmp/wsgi-stack.Ab12Cd34"
	debian12   = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n"
	amazon2023 = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\nPRETTY_NAME=\"Amazon Linux 2023.6.20241121\"\n"
)

// mkStage makes the staging folder with a folder for each file of the default bundle, sorted.
var mkStage = func() string {
	var dirs []string
	for _, f := range image.Render(image.Default()).Files {
		if d := "files" + path.Dir(f.Path); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return `umask 077 && d=$(mktemp -d /tmp/wsgi-stack.XXXXXXXX) && cd "$d" && mkdir -p ` + strings.Join(dirs, " ") + ` && echo "$d"`
}()

// uploads is every file of the default bundle, in the order they are uploaded: the provisioner
// uploads exactly what image.Render gives, install.sh first.
var uploads = func() []string {
	out := []string{"upload: " + stage + "/install.sh"}
	for _, f := range image.Render(image.Default()).Files {
		out = append(out, "upload: "+stage+"/files"+f.Path)
	}
	return out
}()

func seq(parts ...any) []string {
	var out []string
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			out = append(out, v)
		case []string:
			out = append(out, v...)
		}
	}
	return out
}

// machine answers like a healthy Debian 12 machine reached as user uid.
func machine(uid string) map[string]reply {
	return map[string]reply{
		cmdCloudInit: {stdout: "\nstatus: done\n"},
		cmdWhoami:    {stdout: uid + "\n"},
		cmdOSRelease: {stdout: debian12},
		"umask 077":  {stdout: stage + "\n"},
	}
}

func prepared(t *testing.T, raw map[string]any) *Provisioner {
	t.Helper()
	var p Provisioner
	if err := p.Prepare(raw); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return &p
}

func TestProvisionCommandSequence(t *testing.T) {
	for _, tc := range []struct {
		name    string
		raw     map[string]any
		replies map[string]reply
		want    []string
	}{{
		name:    "defaults as root",
		replies: machine("0"),
		want: seq(
			"run: cloud-init status --wait",
			"run: id -u",
			"run: cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release",
			"run: "+mkStage,
			uploads,
			"run: /bin/sh "+stage+"/install.sh "+stage+"/files",
			"run: rm -rf "+stage,
			"run: /bin/sh -s",
		),
	}, {
		name:    "non-root user goes through sudo -n",
		replies: machine("1000"),
		want: seq(
			"run: cloud-init status --wait",
			"run: id -u",
			"run: cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release",
			"run: sudo -n true",
			"run: "+mkStage,
			uploads,
			"run: sudo -n /bin/sh "+stage+"/install.sh "+stage+"/files",
			"run: rm -rf "+stage,
			"run: sudo -n /bin/sh -s",
		),
	}, {
		name: "explicit family, no cloud-init wait, no hygiene, own execute_command and staging_dir",
		raw: map[string]any{
			"distro_family":       "apt",
			"wait_for_cloud_init": false,
			"image_hygiene":       false,
			"staging_dir":         "/var/tmp",
			"execute_command":     "sudo -n -E -- {{.Command}}",
		},
		replies: map[string]reply{cmdWhoami: {stdout: "1000\n"}, "umask 077": {stdout: "/var/tmp/wsgi-stack.Zz\n"}},
		want: seq(
			"run: id -u",
			"run: sudo -n -E -- true",
			"run: "+strings.Replace(mkStage, "/tmp/", "/var/tmp/", 1),
			func() []string {
				var out []string
				for _, u := range uploads {
					out = append(out, strings.Replace(u, stage, "/var/tmp/wsgi-stack.Zz", 1))
				}
				return out
			}(),
			"run: sudo -n -E -- /bin/sh /var/tmp/wsgi-stack.Zz/install.sh /var/tmp/wsgi-stack.Zz/files",
			"run: rm -rf /var/tmp/wsgi-stack.Zz",
		),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := prepared(t, tc.raw)
			comm := &fakeComm{replies: tc.replies}
			if err := p.provision(context.Background(), &fakeUI{}, comm, false); err != nil {
				t.Fatalf("provision: %v", err)
			}
			if got := comm.sequence(); !slices.Equal(got, tc.want) {
				t.Errorf("commands:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
		})
	}
}

// The uploaded files and the scripts are exactly the rendered bundle, at their absolute paths.
func TestProvisionUploadsTheBundle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		raw     map[string]any
		release string
		family  image.Family
	}{
		{"debian", map[string]any{"sockets": 4, "app_name": "shop"}, debian12, image.FamilyApt},
		{"amazon linux 2023", map[string]any{"gunicorn_source": "distro"}, amazon2023, image.FamilyDnf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := prepared(t, tc.raw)
			replies := machine("0")
			replies[cmdOSRelease] = reply{stdout: tc.release}
			comm := &fakeComm{replies: replies}
			if err := p.provision(context.Background(), &fakeUI{}, comm, false); err != nil {
				t.Fatalf("provision: %v", err)
			}
			want := image.Render(p.config.Stack(tc.family))
			if got, ok := comm.find("upload", stage+"/install.sh"); !ok || got.data != string(want.InstallScript) {
				t.Errorf("install.sh: uploaded %v, content equal to the rendered script: %v", ok, got.data == string(want.InstallScript))
			}
			for _, f := range want.Files {
				got, ok := comm.find("upload", path.Join(stage, "files", f.Path))
				if !ok {
					t.Errorf("%s: not uploaded", f.Path)
					continue
				}
				if got.data != string(f.Content) {
					t.Errorf("%s: uploaded content differs from the rendered file", f.Path)
				}
			}
			hyg, ok := comm.find("run", "/bin/sh -s")
			if !ok || hyg.data != string(want.HygieneScript) {
				t.Errorf("hygiene: run %v, stdin equal to the rendered script: %v", ok, hyg.data == string(want.HygieneScript))
			}
			// The family decides the layout: the dnf bundle uses nginx's user, the apt one www-data.
			if !strings.Contains(string(want.InstallScript), map[image.Family]string{image.FamilyApt: "apt-get", image.FamilyDnf: "dnf install"}[tc.family]) {
				t.Errorf("install script is not for the %s family", tc.family)
			}
		})
	}
}

func TestProvisionProgressLines(t *testing.T) {
	p := prepared(t, nil)
	replies := machine("0")
	replies["/bin/sh "+stage+"/install.sh"] = reply{stdout: "==> wsgi-stack: packages\nReading package lists...\n==> wsgi-stack: user wsgi\n==> wsgi-stack: done\n", stderr: "debconf: delaying package configuration\n"}
	replies["/bin/sh -s"] = reply{stdout: "==> wsgi-stack: image hygiene\n==> wsgi-stack: image hygiene done\n"}
	ui := &fakeUI{}
	if err := p.provision(context.Background(), ui, &fakeComm{replies: replies}, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"say: Waiting for cloud-init to finish\n",
		"say:   status: done\n",
		"say: Detected Debian GNU/Linux 12 (bookworm): apt family\n",
		"say: Installing the WSGI stack \"app\": 3 socket-activated units, Gunicorn 23.0.0 from pip\n",
		"say: [1/8] packages\nsay:   Reading package lists...\n",
		"say: [2/8] user wsgi\n",
		"say: [3/8] done\n",
		"error:   debconf: delaying package configuration\n",
		"say: [1/2] image hygiene\nsay: [2/2] image hygiene done\n",
	} {
		if !strings.Contains(ui.text(), want) {
			t.Errorf("UI lacks %q; it got:\n%s", want, ui.text())
		}
	}
}

func TestProvisionFailures(t *testing.T) {
	installCmd := "/bin/sh " + stage + "/install.sh " + stage + "/files"
	for _, tc := range []struct {
		name     string
		raw      map[string]any
		replies  map[string]reply
		failOn   string
		wantErr  []string // all must appear in the error
		wantLast string   // the last command run
	}{{
		name: "install fails: command, status, phase and the tail of its output",
		replies: map[string]reply{installCmd: {
			stdout: "==> wsgi-stack: packages\n==> wsgi-stack: python venv /opt/wsgi/venv\n",
			stderr: "ERROR: Could not find a version that satisfies the requirement gunicorn==23.0.0\n",
			status: 1,
		}},
		wantErr: []string{
			`wsgi-stack: install: "/bin/sh /tmp/wsgi-stack.Ab12Cd34/install.sh /tmp/wsgi-stack.Ab12Cd34/files" exited with status 1 in phase "python venv /opt/wsgi/venv"`,
			"\n    ERROR: Could not find a version that satisfies the requirement gunicorn==23.0.0",
		},
		// The staging folder goes even after a failure; hygiene does not run.
		wantLast: "run: rm -rf " + stage,
	}, {
		name:     "cloud-init failed",
		replies:  map[string]reply{cmdCloudInit: {stdout: "status: error\n", status: 1}},
		wantErr:  []string{"cloud-init failed on the build machine (set wait_for_cloud_init = false", `"cloud-init status --wait" exited with status 1`, "status: error"},
		wantLast: "run: cloud-init status --wait",
	}, {
		name:     "sudo wants a password",
		replies:  map[string]reply{cmdWhoami: {stdout: "1000\n"}, "sudo -n true": {stderr: "sudo: a password is required\n", status: 1}},
		wantErr:  []string{"cannot use sudo without a password", "sudo: a password is required"},
		wantLast: "run: sudo -n true",
	}, {
		name:     "unknown distribution",
		replies:  map[string]reply{cmdOSRelease: {stdout: "ID=alpine\nVERSION_ID=3.20.3\n"}},
		wantErr:  []string{`distro_family: cannot tell the package manager from /etc/os-release (ID="alpine", ID_LIKE="")`, `set distro_family = "apt" or "dnf"`},
		wantLast: "run: " + cmdOSRelease,
	}, {
		name:     "no os-release",
		replies:  map[string]reply{cmdOSRelease: {stderr: "cat: /usr/lib/os-release: No such file or directory\n", status: 1}},
		wantErr:  []string{`distro_family = "auto" needs /etc/os-release on the machine`},
		wantLast: "run: " + cmdOSRelease,
	}, {
		name:     "staging folder cannot be made",
		replies:  map[string]reply{"umask 077": {stderr: "mktemp: failed to create directory via template '/tmp/wsgi-stack.XXXXXXXX': No space left on device\n", status: 1}},
		wantErr:  []string{"make the staging folder in staging_dir /tmp", "No space left on device"},
		wantLast: "run: " + mkStage,
	}, {
		name:     "upload fails",
		failOn:   stage + "/files/etc/wsgi/gunicorn.conf.py",
		wantErr:  []string{"wsgi-stack: upload " + stage + "/files/etc/wsgi/gunicorn.conf.py: scp: connection reset"},
		wantLast: "run: rm -rf " + stage,
	}, {
		name:     "hygiene fails",
		replies:  map[string]reply{"/bin/sh -s": {stdout: "==> wsgi-stack: image hygiene\n", stderr: "E: Could not get lock /var/cache/apt/archives/lock\n", status: 100}},
		wantErr:  []string{`wsgi-stack: image hygiene: "/bin/sh -s" exited with status 100 in phase "image hygiene"`, "Could not get lock"},
		wantLast: "run: /bin/sh -s",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := prepared(t, tc.raw)
			replies := machine("0")
			for k, v := range tc.replies {
				replies[k] = v
			}
			comm := &fakeComm{replies: replies, failOn: tc.failOn}
			err := p.provision(context.Background(), &fakeUI{}, comm, false)
			if err == nil {
				t.Fatal("provision succeeded")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			got := comm.sequence()
			if last := got[len(got)-1]; last != tc.wantLast {
				t.Errorf("last command %q, want %q", last, tc.wantLast)
			}
		})
	}
}

func TestProvisionCloudInitStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		say    string
	}{
		{0, "say:   status: done\n"},
		{2, "say: Warning: cloud-init finished with recoverable errors (exit status 2)"},
		{127, "say: cloud-init is not installed on this machine; not waiting for it\n"},
	} {
		p := prepared(t, nil)
		replies := machine("0")
		replies[cmdCloudInit] = reply{stdout: "status: done\n", status: tc.status}
		ui := &fakeUI{}
		comm := &fakeComm{replies: replies}
		if err := p.provision(context.Background(), ui, comm, false); err != nil {
			t.Errorf("exit %d: %v", tc.status, err)
			continue
		}
		if !strings.Contains(ui.text(), tc.say) {
			t.Errorf("exit %d: UI lacks %q:\n%s", tc.status, tc.say, ui.text())
		}
		if got := comm.sequence(); got[len(got)-1] != "run: /bin/sh -s" {
			t.Errorf("exit %d: provisioning stopped early at %q", tc.status, got[len(got)-1])
		}
	}
}

func TestProvisionCancelled(t *testing.T) {
	p := prepared(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.provision(ctx, &fakeUI{}, &blockingComm{}, false)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// blockingComm starts commands that never finish.
type blockingComm struct{ fakeComm }

func (b *blockingComm) Start(context.Context, *packersdk.RemoteCmd) error { return nil }
