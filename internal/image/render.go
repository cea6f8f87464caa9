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
)

//go:embed files/*.tmpl
var files embed.FS

var parsed = template.Must(template.New("").Option("missingkey=error").ParseFS(files, "files/*.tmpl"))

// File is one rendered file of the image, at its absolute path on the instance.
type File struct {
	Path    string
	Mode    fs.FileMode
	Group   string // owning group; the owner is always root
	Content []byte
}

// ModeString is the mode as install(1) takes it.
func (f File) ModeString() string { return fmt.Sprintf("%04o", f.Mode.Perm()) }

// Bundle is everything the bake needs: the files to install and the scripts that install them
// and clean the image afterwards.
type Bundle struct {
	Stack         Stack
	Files         []File
	InstallScript []byte
	HygieneScript []byte
}

// view is what the templates see: the Stack plus values derived from it, so no template
// computes anything itself.
type view struct {
	Stack
	Installed []File
}

// StopTimeout gives Gunicorn's graceful shutdown room before systemd kills it.
func (v view) StopTimeout() int { return v.GracefulTimeoutSeconds + 5 }

// StartLimitBurst and StartLimitIntervalSec bound a unit's crash loop (see wsgi@.service).
func (v view) StartLimitBurst() int       { return 5 }
func (v view) StartLimitIntervalSec() int { return 10 }

// UpstreamTries lets a request try every socket of the upstream, where each is listed twice.
func (v view) UpstreamTries() int { return 2 * v.Sockets }

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
	n := v.Sockets * v.WorkersPerUnit * v.Threads
	if n < 8 {
		n = 8
	}
	if n > 512 {
		n = 512
	}
	return n
}

// PythonPackage is the distribution package that provides the interpreter.
func (v view) PythonPackage() string {
	if strings.HasPrefix(v.Python, "python3") {
		return v.Python
	}
	return "python3"
}

// GroupOf returns the group name a file is installed with.
func (f File) GroupOf(v view) string {
	if f.Group == "" {
		return "root"
	}
	return f.Group
}

// Render validates s and renders the complete file set of the image. The same Stack always
// gives the same bytes.
func Render(s Stack) (*Bundle, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	v := view{Stack: s}
	specs := []struct {
		tmpl, path, group string
		mode              fs.FileMode
	}{
		{"wsgi@.socket.tmpl", s.UnitDir() + "/wsgi@.socket", "", 0o644},
		{"wsgi@.service.tmpl", s.UnitDir() + "/wsgi@.service", "", 0o644},
		{"wsgi.target.tmpl", s.UnitDir() + "/" + s.TargetUnit(), "", 0o644},
		{"wsgi.preset.tmpl", "/etc/systemd/system-preset/50-wsgi.preset", "", 0o644},
		{"gunicorn.conf.py.tmpl", s.GunicornConfig(), s.Group, 0o640},
		{"nginx-site.conf.tmpl", s.NginxSite(), "", 0o644},
		{"wsgi_proxy_params.tmpl", "/etc/nginx/wsgi_proxy_params", "", 0o644},
		{"nginx.conf.tmpl", "/etc/nginx/nginx.conf", "", 0o644},
		{"nginx-hardening.conf.tmpl", s.UnitDir() + "/nginx.service.d/50-wsgi-hardening.conf", "", 0o644},
		{"maintenance.html.tmpl", s.MaintenancePage(), "", 0o644},
		{"wsgi-ctl.tmpl", contract.CtlProgram, "", 0o755},
	}
	b := &Bundle{Stack: s}
	for _, sp := range specs {
		out, err := execute(sp.tmpl, v)
		if err != nil {
			return nil, err
		}
		b.Files = append(b.Files, File{Path: sp.path, Mode: sp.mode, Group: sp.group, Content: out})
	}
	v.Installed = b.Files
	var err error
	if b.InstallScript, err = execute("install.sh.tmpl", v); err != nil {
		return nil, err
	}
	if b.HygieneScript, err = execute("hygiene.sh.tmpl", v); err != nil {
		return nil, err
	}
	return b, nil
}

// Execute renders one embedded template with data. Other packages (the first-boot payload)
// use it for their scripts so that all on-instance text lives here.
func Execute(name string, data any) ([]byte, error) { return execute(name, data) }

func execute(name string, data any) ([]byte, error) {
	var buf bytes.Buffer
	if err := parsed.ExecuteTemplate(&buf, name, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", strings.TrimSuffix(name, ".tmpl"), err)
	}
	return buf.Bytes(), nil
}
