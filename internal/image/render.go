package image

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"text/template"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/quote"
)

//go:embed files/*.tmpl
var files embed.FS

// awsHelper is the request signer, baked as is (contract.AWSHelper): standard-library Python.
//
//go:embed files/wsgi-aws.py
var awsHelper []byte

// migrateHelper is the fleet-wide migrate (MigrateHelper): standard-library Python run inside
// the app's own Django.
//
//go:embed files/wsgi-migrate.py
var migrateHelper []byte

// Every value a user writes reaches a script through q (one word) or qs (a list of words).
var parsed = template.Must(template.New("").Option("missingkey=error").Funcs(template.FuncMap{
	"q":    quote.Shell,
	"qs":   quote.Shells,
	"envq": quote.Env,
}).ParseFS(files, "files/*.tmpl"))

// File is one rendered file of the image, at its absolute path on the instance.
type File struct {
	Path    string
	Mode    fs.FileMode
	Group   string // owning group; the owner is always root
	Content []byte
}

// ModeString is the mode as install(1) takes it.
func (f File) ModeString() string { return fmt.Sprintf("%04o", f.Mode.Perm()) }

// GroupName is the group the file is installed with.
func (f File) GroupName() string {
	if f.Group == "" {
		return "root"
	}
	return f.Group
}

// Bundle is everything the bake needs: the files to install and the scripts that install them
// and clean the image afterwards.
type Bundle struct {
	Stack         Stack
	Files         []File
	InstallScript []byte
	HygieneScript []byte
}

// File returns the bundle's file at path, or nil.
func (b *Bundle) File(path string) *File {
	for i := range b.Files {
		if b.Files[i].Path == path {
			return &b.Files[i]
		}
	}
	return nil
}

// view is what the templates see: the Stack plus values derived from it, so no template
// computes anything itself.
type view struct {
	Stack
	Installed []File
}

// The fixed names, for the templates.
func (view) TargetUnit() string     { return TargetUnit }
func (view) FirstBootGate() string  { return FirstBootGate }
func (view) DeployedMarker() string { return DeployedMarker }
func (view) DeployStateDir() string { return DeployStateDir }
func (view) AppStateDir() string    { return AppStateDir }
func (view) DeployLog() string      { return DeployLog }
func (view) AppFile() string        { return contract.AppFile }
func (view) AWSHelper() string      { return contract.AWSHelper }
func (view) MigrateHelper() string  { return MigrateHelper }
func (view) SchemaVersion() int     { return contract.SchemaVersion }

// FirstService and FirstSocket name the unit that a first boot without hooks starts before
// migrate, and that serves before the others start (deploy.sh).
func (v view) FirstService() string { return v.ServiceUnit(1) }
func (v view) FirstSocket() string  { return v.SocketUnit(1) }

// StopTimeout gives Gunicorn's graceful shutdown room before systemd kills it.
func (v view) StopTimeout() int { return v.GracefulTimeoutSeconds + 5 }

// StartLimitBurst and StartLimitIntervalSec bound a unit's crash loop (see wsgi@.service).
func (v view) StartLimitBurst() int       { return 5 }
func (v view) StartLimitIntervalSec() int { return 10 }

// CtlKeepReleases is how many releases wsgi-ctl keeps on disk by default.
func (v view) CtlKeepReleases() int { return 3 }

// CtlConfig is what wsgi-ctl needs to know of the stack, as a Python literal: JSON of strings and
// numbers only, whose escapes Python reads alike.
func (v view) CtlConfig() (string, error) {
	b, err := json.MarshalIndent(map[string]any{
		"sockets":     v.Sockets,
		"workers":     v.WorkersPerUnit,
		"socket":      v.RunDir + "/app-%d.sock",
		"service":     "wsgi@%d.service",
		"socket_unit": "wsgi@%d.socket",
		"health_path": v.HealthPath,
		"current":     v.CurrentLink(),
		"releases":    v.ReleasesDir(),
		"deploy":      contract.DeployProgram,
		"deploy_log":  v.DeployLog(),
		"keep":        v.CtlKeepReleases(),
	}, "", "    ")
	return string(b), err
}

// NginxWorkerConnections is NGINX's connection limit per worker; NginxRlimitNofile its
// descriptor limit: two descriptors per proxied client and room for logs and files.
func (v view) NginxWorkerConnections() int { return 8192 }
func (v view) NginxRlimitNofile() int      { return 2*v.NginxWorkerConnections() + 1024 }

// NginxModulesInclude is where the distribution's nginx.conf loads its dynamic modules from.
func (v view) NginxModulesInclude() string {
	if v.Family == FamilyDnf {
		return "/usr/share/nginx/modules/*.conf"
	}
	return "/etc/nginx/modules-enabled/*.conf"
}

// NginxStateDir holds NGINX's temp folders (client bodies, proxy buffers) on both families.
func (v view) NginxStateDir() string { return "/var/lib/nginx" }

// NginxHardeningDropInName is the file name of the nginx.service drop-in.
func (v view) NginxHardeningDropInName() string { return "50-wsgi-hardening.conf" }

// MaxRequestsJitter spreads worker recycling so workers do not restart together.
func (v view) MaxRequestsJitter() int { return v.MaxRequests / 8 }

// UpstreamKeepalive is the number of idle connections NGINX keeps per worker to the units:
// enough for every Gunicorn thread, so a busy site does not reconnect on every request.
func (v view) UpstreamKeepalive() int {
	return min(max(v.Sockets*v.WorkersPerUnit*v.Threads, 8), 512)
}

// SocketPaths lists every unit's socket, in instance order.
func (v view) SocketPaths() []string {
	out := make([]string, 0, v.Sockets)
	for _, i := range v.Instances() {
		out = append(out, v.SocketPath(i))
	}
	return out
}

// Services lists the service units, in instance order.
func (v view) Services() []string {
	out := make([]string, 0, v.Sockets)
	for _, i := range v.Instances() {
		out = append(out, v.ServiceUnit(i))
	}
	return out
}

// fileSpec is one file of the image and the template it comes from.
type fileSpec struct {
	tmpl, path, group string
	mode              fs.FileMode
}

func (s Stack) fileSpecs() []fileSpec {
	return []fileSpec{
		{"wsgi@.socket.tmpl", UnitDir + "/wsgi@.socket", "", 0o644},
		{"wsgi@.service.tmpl", UnitDir + "/wsgi@.service", "", 0o644},
		{"wsgi.target.tmpl", UnitDir + "/" + TargetUnit, "", 0o644},
		{"wsgi.preset.tmpl", "/etc/systemd/system-preset/50-wsgi.preset", "", 0o644},
		{"gunicorn.conf.py.tmpl", s.GunicornConfig(), s.Group, 0o640},
		{"nginx-site.conf.tmpl", NginxSite, "", 0o644},
		{"wsgi_proxy_params.tmpl", "/etc/nginx/wsgi_proxy_params", "", 0o644},
		{"nginx.conf.tmpl", "/etc/nginx/nginx.conf", "", 0o644},
		{"nginx-hardening.conf.tmpl", UnitDir + "/nginx.service.d/50-wsgi-hardening.conf", "", 0o644},
		{"maintenance.html.tmpl", s.MaintenancePage(), "", 0o644},
		{"deploy.sh.tmpl", contract.DeployProgram, "", 0o755},
		{"wsgi-ctl.tmpl", contract.CtlProgram, "", 0o755},
	}
}

// Render renders the complete file set of the image for a Stack that passed Validate. The same
// Stack always gives the same bytes. It has no error to return: the templates are executed for
// every golden stack in the tests, so a failure here is a bug, and it panics.
func Render(s Stack) *Bundle {
	v := view{Stack: s}
	b := &Bundle{Stack: s}
	for _, sp := range s.fileSpecs() {
		b.Files = append(b.Files, File{Path: sp.path, Mode: sp.mode, Group: sp.group, Content: execute(sp.tmpl, v)})
	}
	b.Files = append(b.Files,
		File{Path: contract.AWSHelper, Mode: 0o755, Content: awsHelper},
		File{Path: MigrateHelper, Mode: 0o644, Content: migrateHelper},
		File{Path: contract.StackFile, Mode: 0o644, Content: s.Description()})
	if s.Wheelhouse() {
		b.Files = append(b.Files, File{Path: s.WheelhouseRequirements(), Mode: 0o644, Content: []byte(s.Requirements)})
	}
	v.Installed = b.Files
	b.InstallScript = execute("install.sh.tmpl", v)
	b.HygieneScript = execute("hygiene.sh.tmpl", v)
	return b
}

func execute(name string, data any) []byte {
	var buf bytes.Buffer
	if err := parsed.ExecuteTemplate(&buf, name, data); err != nil {
		panic(fmt.Sprintf("render %s: %v", strings.TrimSuffix(name, ".tmpl"), err))
	}
	return buf.Bytes()
}

// NginxUser is the distribution's NGINX user, for the templates.
func (v view) NginxUser() string { return v.Distro().NginxUser }
