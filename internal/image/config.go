package image

import (
	"bytes"
	"os"
	"unicode/utf8"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/report"
)

// FamilyAuto asks the provisioner to read the family from /etc/os-release on the machine.
const FamilyAuto = "auto"

// Config holds the stack's HCL keys, declared once: the wsgi-stack provisioner embeds it, and
// nothing else has them (the payload describes only the app). A key left out takes the default
// of Default. The numeric keys are pointers so that an explicit 0 is reported as an error
// instead of silently becoming the default.
type Config struct {
	// Name of the app: the NGINX upstream and the Gunicorn process titles. Default "app".
	AppName string `mapstructure:"app_name"`
	// System user that runs Gunicorn and the first-boot hooks. Default "wsgi".
	User string `mapstructure:"user"`
	// Group of that user. Default: the same as user.
	Group string `mapstructure:"group"`
	// Number of socket-activated Gunicorn units (wsgi@1..N), 1 to 16. Default 3.
	Sockets *int `mapstructure:"sockets"`
	// Gunicorn workers per unit, 1 to 64. Default 1.
	Workers *int `mapstructure:"workers"`
	// Gunicorn worker class: sync, gthread, gevent, eventlet or tornado. Default "gthread".
	WorkerClass string `mapstructure:"worker_class"`
	// Threads per worker (gthread only), 1 to 256. Default 16 with gthread, else 1.
	Threads *int `mapstructure:"threads"`
	// Gunicorn worker timeout in seconds (Gunicorn's --timeout). Default 30. Not called
	// `timeout`: Packer itself reads that argument of every provisioner block as a duration.
	WorkerTimeout *int `mapstructure:"worker_timeout"`
	// Seconds a worker has to finish its requests on a graceful stop. Default 25.
	GracefulTimeout *int `mapstructure:"graceful_timeout"`
	// Seconds Gunicorn keeps an idle NGINX connection open. Default 75.
	KeepAlive *int `mapstructure:"keepalive"`
	// Requests after which a worker is recycled; 0 never recycles. Default 0.
	MaxRequests *int `mapstructure:"max_requests"`
	// Listen backlog of each socket, 16 to 65535. Default 2048.
	Backlog *int `mapstructure:"backlog"`
	// Also log every request from Gunicorn to the journal. Default false: NGINX already logs
	// each request, and a second line per request costs throughput.
	GunicornAccessLog *bool `mapstructure:"gunicorn_access_log"`

	// Package-manager family of the machine: "apt" (Debian, Ubuntu), "dnf" (Amazon Linux 2023)
	// or "auto", which reads ID and ID_LIKE from /etc/os-release. Default "auto".
	DistroFamily string `mapstructure:"distro_family"`
	// Interpreter that creates the venv: python3, python3.X or an absolute path. Default "python3".
	Python string `mapstructure:"python"`
	// Where Gunicorn comes from: "pip" (a pinned version into the venv) or "distro" (the
	// distribution's package, seen through system site packages). Default "pip".
	GunicornSource string `mapstructure:"gunicorn_source"`
	// Exact Gunicorn version with gunicorn_source = "pip". Default "23.0.0".
	GunicornVersion string `mapstructure:"gunicorn_version"`
	// Python package index (PEP 503) the bake installs Gunicorn from. Default: pip's own (PyPI).
	PipIndexURL string `mapstructure:"pip_index_url"`
	// Extra URL or absolute path on the machine with wheels for the bake (pip --find-links).
	PipFindLinks string `mapstructure:"pip_find_links"`
	// Let the venv see the distribution's Python packages. Default false; always true with
	// gunicorn_source = "distro".
	SystemSitePackages *bool `mapstructure:"system_site_packages"`
	// Further distribution packages baked into the image, for example ["libpq5"].
	ExtraPackages []string `mapstructure:"extra_packages"`
	// Path, on the machine that runs Packer, of the app's requirements file (pip's format, one
	// self-contained file: no -r, -c or -e lines). When set, the bake uploads it, builds a wheel
	// of every requirement and its dependencies into wheelhouse_dir (from pip_index_url and
	// pip_find_links, compiling what has no wheel with build_packages) and installs the file
	// from there into the baked venv wheelhouse_dir/.venv. First boot gives a release whose
	// requirements file is this one, byte for byte, that venv and runs no pip; any other file it
	// installs from the wheelhouse offline unless the payload names an index. Default: no
	// wheelhouse.
	RequirementsFile string `mapstructure:"requirements_file"`
	// Where the baked wheels live on the image. Default "/opt/wsgi/wheelhouse".
	WheelhouseDir string `mapstructure:"wheelhouse_dir"`
	// Distribution packages needed only to build the wheels, such as ["libpq-dev"]. They are
	// installed for the build, together with the compilers and Python headers (build-essential and
	// python3-dev on Debian and Ubuntu, gcc and python3-devel on Amazon Linux 2023), and removed
	// again: the image holds the same packages as without a wheelhouse, and the bake fails if not.
	BuildPackages []string `mapstructure:"build_packages"`
	// What the first-boot payloads of this image need from it: the needs output of the
	// wsgi-cloudinit data source (`first_boot = data.wsgi-cloudinit.NAME.needs`). The bake installs
	// what they ask for (git for a git source) and the AMI's wsgi:stack-provides tag says so, so
	// the post-processor can prove a payload fits the image before it changes anything.
	FirstBoot []string `mapstructure:"first_boot"`

	// Port NGINX listens on. Default 80.
	ListenPort *int `mapstructure:"listen_port"`
	// NGINX server_name. Default "_".
	ServerName string `mapstructure:"server_name"`
	// NGINX client_max_body_size. Default "10m".
	ClientMaxBodySize string `mapstructure:"client_max_body_size"`
	// NGINX proxy_read_timeout in seconds. Default 60.
	ProxyReadTimeout *int `mapstructure:"proxy_read_timeout"`
	// URL path of the app's health check: NGINX does not log it, and first boot waits for HTTP 200
	// there unless the payload names another. Default "/healthz".
	HealthPath string `mapstructure:"health_path"`
	// URL prefix NGINX serves from the release's static/ folder. Default "/static/".
	StaticURL string `mapstructure:"static_url"`
	// Address ranges of the load balancer: only a peer in one of them may set X-Forwarded-For and
	// X-Forwarded-Proto; a direct client's are replaced by its own address and scheme. Default
	// the private ranges ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], which hold any VPC's
	// range; set the load balancer's subnets to trust nothing else in the VPC.
	TrustedProxyCIDRs []string `mapstructure:"trusted_proxy_cidrs"`

	// The baked virtualenv. Default "/opt/wsgi/venv".
	VenvDir string `mapstructure:"venv_dir"`
	// Releases and the current symlink. Default "/srv/wsgi".
	SrvDir string `mapstructure:"srv_dir"`
	// wsgi.env and gunicorn.conf.py. Default "/etc/wsgi".
	EtcDir string `mapstructure:"etc_dir"`
	// The UNIX sockets, below /run. Default "/run/wsgi".
	RunDir string `mapstructure:"run_dir"`
	// The maintenance page. Default "/usr/share/wsgi".
	ShareDir string `mapstructure:"share_dir"`

	// requirements is the content of requirements_file, read by Prepare.
	requirements string
}

// maxRequirementsBytes bounds requirements_file: a requirements file is text of a few kilobytes.
const maxRequirementsBytes = 1 << 20

// Prepare fills the family's default and validates every key against the stack it describes.
// With distro_family = "auto" the stack is validated with the apt layout, since no check
// depends on the family; the provisioner detects the real one on the machine.
func (c *Config) Prepare() report.Report {
	var r report.Report
	if c.DistroFamily == "" {
		c.DistroFamily = FamilyAuto
	}
	family := Family(c.DistroFamily)
	switch c.DistroFamily {
	case FamilyAuto:
		family = FamilyApt
	case string(FamilyApt), string(FamilyDnf):
	default:
		r.Add("distro_family", "must be %q, %q (Debian, Ubuntu) or %q (Amazon Linux 2023), got %q",
			FamilyAuto, FamilyApt, FamilyDnf, c.DistroFamily)
		family = FamilyApt
	}
	c.readRequirements(&r)
	r.Merge("", c.Stack(family).Validate())
	return r
}

// readRequirements loads requirements_file from the machine that runs Packer: the bake uploads
// its content, so the image does not depend on where the file was.
func (c *Config) readRequirements(r *report.Report) {
	c.requirements = ""
	if c.RequirementsFile == "" {
		return
	}
	b, err := os.ReadFile(c.RequirementsFile)
	switch {
	case err != nil:
		r.Add("requirements_file", "must be a readable file on the machine that runs Packer: %v", err)
	case len(b) > maxRequirementsBytes:
		r.Add("requirements_file", "must be at most %d bytes, got %d in %s", maxRequirementsBytes, len(b), c.RequirementsFile)
	case !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0:
		r.Add("requirements_file", "must be a text file (pip's requirements format), got binary data in %s", c.RequirementsFile)
	case len(requirementLines(string(b))) == 0:
		r.Add("requirements_file", "names no requirement: %s has only comments and blank lines; leave requirements_file out for an image without a wheelhouse", c.RequirementsFile)
	default:
		c.requirements = string(b)
	}
}

// Stack is the stack the keys describe on a machine of the given family. Unset keys take
// Default's values; keys given explicitly win even when they are zero, so that Validate reports
// them.
func (c *Config) Stack(family Family) Stack {
	s := Stack{
		AppName:           c.AppName,
		User:              c.User,
		Group:             c.Group,
		WorkerClass:       c.WorkerClass,
		Family:            family,
		Python:            c.Python,
		GunicornSource:    GunicornSource(c.GunicornSource),
		GunicornVersion:   c.GunicornVersion,
		PipIndexURL:       c.PipIndexURL,
		PipFindLinks:      c.PipFindLinks,
		ExtraPackages:     c.ExtraPackages,
		Requirements:      c.requirements,
		WheelhouseDir:     c.WheelhouseDir,
		BuildPackages:     c.BuildPackages,
		FirstBoot:         c.FirstBoot,
		ServerName:        c.ServerName,
		ClientMaxBodySize: c.ClientMaxBodySize,
		HealthPath:        c.HealthPath,
		StaticURL:         c.StaticURL,
		TrustedProxyCIDRs: c.TrustedProxyCIDRs,
		VenvDir:           c.VenvDir,
		SrvDir:            c.SrvDir,
		EtcDir:            c.EtcDir,
		RunDir:            c.RunDir,
		ShareDir:          c.ShareDir,
	}
	// Threads defaults by worker class, so it must be known before WithDefaults runs.
	if c.Threads != nil {
		s.Threads = *c.Threads
	}
	s = s.WithDefaults()
	for _, f := range []struct {
		dst *int
		src *int
	}{
		{&s.Sockets, c.Sockets},
		{&s.WorkersPerUnit, c.Workers},
		{&s.Threads, c.Threads},
		{&s.TimeoutSeconds, c.WorkerTimeout},
		{&s.GracefulTimeoutSeconds, c.GracefulTimeout},
		{&s.KeepAliveSeconds, c.KeepAlive},
		{&s.MaxRequests, c.MaxRequests},
		{&s.Backlog, c.Backlog},
		{&s.ListenPort, c.ListenPort},
		{&s.ProxyReadTimeout, c.ProxyReadTimeout},
	} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if c.SystemSitePackages != nil {
		s.SystemSitePackages = *c.SystemSitePackages
	}
	if c.GunicornAccessLog != nil {
		s.GunicornAccessLog = *c.GunicornAccessLog
	}
	return s
}
