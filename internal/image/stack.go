// Package image is what a golden image holds: the WSGI stack (paths, unit names, the app user, the
// number of sockets, versions), its HCL keys, its validation, and the files that make it up,
// rendered from embedded templates: the systemd units, the NGINX site, the Gunicorn config, the
// install and hygiene scripts, the baked deploy program and the machine-readable description of
// the stack (contract.StackFile). The payload does not depend on it: it describes only the app.
package image

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
	"github.com/wsgi-ami/packer-plugin-wsgi/internal/report"
)

// Family is the package-manager family of the target machine.
type Family string

const (
	// FamilyApt covers Debian and Ubuntu.
	FamilyApt Family = "apt"
	// FamilyDnf covers Amazon Linux 2023 (and RHEL-likes with the same layout).
	FamilyDnf Family = "dnf"
)

// GunicornSource says where the baked Gunicorn comes from.
type GunicornSource string

const (
	// GunicornFromPip installs a pinned Gunicorn from a Python package index into the venv.
	GunicornFromPip GunicornSource = "pip"
	// GunicornFromDistro uses the distribution's package, seen by the venv through system site packages.
	GunicornFromDistro GunicornSource = "distro"
)

// Limits that Validate enforces. Sixteen sockets are far more than one instance needs; the
// bound keeps a typo (100) from creating a hundred Gunicorn masters.
const (
	MaxSockets        = 16
	MaxWorkersPerUnit = 64
	MaxThreads        = 256
)

// DefaultGunicornVersion is the Gunicorn pinned by default when it comes from pip.
const DefaultGunicornVersion = "23.0.0"

// Stack is the on-instance contract between the baked image and first boot.
type Stack struct {
	// AppName names the NGINX upstream and shows in process titles; lower-case letters, digits, '-' and '_'.
	AppName string
	// User and Group own the Gunicorn processes.
	User  string
	Group string
	// Sockets is the number of socket-activated Gunicorn units (wsgi@1..N).
	Sockets int
	// WorkersPerUnit, WorkerClass and Threads configure each Gunicorn master.
	WorkersPerUnit int
	WorkerClass    string
	Threads        int
	// TimeoutSeconds is Gunicorn's worker timeout; GracefulTimeoutSeconds bounds a graceful stop;
	// KeepAliveSeconds is how long Gunicorn keeps an idle NGINX connection.
	TimeoutSeconds         int
	GracefulTimeoutSeconds int
	KeepAliveSeconds       int
	// MaxRequests recycles a worker after that many requests (0 disables), with jitter of an eighth.
	MaxRequests int
	// Backlog is the listen backlog of each socket: connections wait here while a unit restarts.
	Backlog int
	// GunicornAccessLog also logs every request from Gunicorn to the journal. Off by default:
	// NGINX already logs each request, and a second line per request costs throughput.
	GunicornAccessLog bool

	// Family selects the package manager and the NGINX layout.
	Family Family
	// Python is the interpreter that creates the venv: a command name or an absolute path.
	Python string
	// GunicornSource, GunicornVersion, PipIndexURL and PipFindLinks decide how Gunicorn is installed.
	GunicornSource  GunicornSource
	GunicornVersion string
	PipIndexURL     string
	PipFindLinks    string
	// SystemSitePackages lets the venv see distribution Python packages (forced on for the distro source).
	SystemSitePackages bool
	// ExtraPackages are distribution packages baked into the image (for example libpq5).
	ExtraPackages []string
	// FirstBoot is what the payloads this image will run need from it (the wsgi-cloudinit data
	// source's needs output): capabilities of package contract, such as "git".
	FirstBoot []string
	// Requirements is the content of the requirements file the wheelhouse is baked from; empty
	// for an image without a wheelhouse.
	Requirements string
	// WheelhouseDir holds the baked wheels.
	WheelhouseDir string
	// BuildPackages are distribution packages installed only while the wheels are built.
	BuildPackages []string

	// NGINX front end.
	ListenPort        int
	ServerName        string
	ClientMaxBodySize string
	ProxyReadTimeout  int
	HealthPath        string
	StaticURL         string
	// TrustedProxyCIDRs are the address ranges of the load balancer in front of the instance:
	// only a peer in one of them may set X-Forwarded-For and X-Forwarded-Proto. Default
	// DefaultTrustedProxyCIDRs.
	TrustedProxyCIDRs []string

	// Paths. All absolute.
	VenvDir  string // baked virtualenv with Gunicorn
	SrvDir   string // releases/<id> and the current symlink
	EtcDir   string // wsgi.env and gunicorn.conf.py
	RunDir   string // the UNIX sockets
	ShareDir string // maintenance page
}

// DefaultTrustedProxyCIDRs are the private IPv4 ranges (RFC 1918). An AWS load balancer's nodes
// take their addresses from the VPC's subnets, and the VPC's range is not known when the image is
// baked; these ranges hold every usual VPC range, so the default works behind any ALB while a
// client on the internet can never set the forwarded headers. Set trusted_proxy_cidrs to the
// load balancer's subnets to also keep other hosts in the VPC from setting them.
var DefaultTrustedProxyCIDRs = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}

// Default returns the documented defaults for a Debian/Ubuntu machine.
func Default() Stack {
	return Stack{
		AppName:                "app",
		User:                   "wsgi",
		Group:                  "wsgi",
		Sockets:                3,
		WorkersPerUnit:         1,
		WorkerClass:            "gthread",
		Threads:                16,
		TimeoutSeconds:         30,
		GracefulTimeoutSeconds: 25,
		KeepAliveSeconds:       75,
		MaxRequests:            0,
		Backlog:                2048,
		Family:                 FamilyApt,
		Python:                 "python3",
		GunicornSource:         GunicornFromPip,
		GunicornVersion:        DefaultGunicornVersion,
		ListenPort:             80,
		ServerName:             "_",
		ClientMaxBodySize:      "10m",
		ProxyReadTimeout:       60,
		HealthPath:             "/healthz",
		StaticURL:              "/static/",
		TrustedProxyCIDRs:      slices.Clone(DefaultTrustedProxyCIDRs),
		VenvDir:                "/opt/wsgi/venv",
		SrvDir:                 "/srv/wsgi",
		EtcDir:                 "/etc/wsgi",
		RunDir:                 "/run/wsgi",
		ShareDir:               "/usr/share/wsgi",
		WheelhouseDir:          "/opt/wsgi/wheelhouse",
	}
}

// WithDefaults fills every zero field of s from Default, so a caller sets only what it changes.
func (s Stack) WithDefaults() Stack {
	d := Default()
	str := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	num := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	str(&s.AppName, d.AppName)
	str(&s.User, d.User)
	if s.Group == "" {
		s.Group = s.User
	}
	num(&s.Sockets, d.Sockets)
	num(&s.WorkersPerUnit, d.WorkersPerUnit)
	str(&s.WorkerClass, d.WorkerClass)
	if s.Threads == 0 {
		s.Threads = d.Threads
		if s.WorkerClass != "gthread" {
			s.Threads = 1
		}
	}
	num(&s.TimeoutSeconds, d.TimeoutSeconds)
	num(&s.GracefulTimeoutSeconds, d.GracefulTimeoutSeconds)
	num(&s.KeepAliveSeconds, d.KeepAliveSeconds)
	num(&s.Backlog, d.Backlog)
	if s.Family == "" {
		s.Family = d.Family
	}
	str(&s.Python, d.Python)
	if s.GunicornSource == "" {
		s.GunicornSource = d.GunicornSource
	}
	if s.GunicornVersion == "" && s.GunicornSource == GunicornFromPip {
		s.GunicornVersion = d.GunicornVersion
	}
	if s.GunicornSource == GunicornFromDistro {
		s.SystemSitePackages = true
	}
	num(&s.ListenPort, d.ListenPort)
	str(&s.ServerName, d.ServerName)
	str(&s.ClientMaxBodySize, d.ClientMaxBodySize)
	num(&s.ProxyReadTimeout, d.ProxyReadTimeout)
	str(&s.HealthPath, d.HealthPath)
	str(&s.StaticURL, d.StaticURL)
	if s.TrustedProxyCIDRs == nil {
		s.TrustedProxyCIDRs = d.TrustedProxyCIDRs
	}
	str(&s.VenvDir, d.VenvDir)
	str(&s.SrvDir, d.SrvDir)
	str(&s.EtcDir, d.EtcDir)
	str(&s.RunDir, d.RunDir)
	str(&s.ShareDir, d.ShareDir)
	str(&s.WheelhouseDir, d.WheelhouseDir)
	return s
}

var (
	nameRe        = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)
	appNameRe     = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	versionRe     = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,3}([a-z]+[0-9]*)?$`)
	packageRe     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9.+_-]*$`)
	sizeRe        = regexp.MustCompile(`^[0-9]+[kKmMgG]?$`)
	serverNameRe  = regexp.MustCompile(`^[a-zA-Z0-9_.*~^$\\-]+( [a-zA-Z0-9_.*~^$\\-]+)*$`)
	urlPathRe     = regexp.MustCompile(`^/[A-Za-z0-9._~/-]*$`)
	pythonNameRe  = regexp.MustCompile(`^python3(\.[0-9]+)?$`)
	safeURLRe     = regexp.MustCompile(`^[A-Za-z0-9:/._~%?&=+@-]+$`)
	absPathRe     = regexp.MustCompile(`^(/[A-Za-z0-9._+-]+)+$`)
	workerClasses = []string{"sync", "gthread", "gevent", "eventlet", "tornado"}
)

// Validate reports every problem of s, each at the HCL key a user writes in wsgi-stack. It is
// the stack's one validation: Render takes a Stack that passed it.
func (s Stack) Validate() report.Report {
	var r report.Report
	between := r.Between

	if !appNameRe.MatchString(s.AppName) {
		r.Add("app_name", "must be 1-32 lower-case letters, digits, '-' or '_', starting with a letter, got %q", s.AppName)
	}
	if !nameRe.MatchString(s.User) || s.User == "root" {
		r.Add("user", "must be a system user name other than root (lower-case, at most 31 characters), got %q", s.User)
	}
	if !nameRe.MatchString(s.Group) || s.Group == "root" {
		r.Add("group", "must be a group name other than root (lower-case, at most 31 characters), got %q", s.Group)
	}
	between("sockets", s.Sockets, 1, MaxSockets)
	between("workers", s.WorkersPerUnit, 1, MaxWorkersPerUnit)
	if !slices.Contains(workerClasses, s.WorkerClass) {
		r.Add("worker_class", "must be one of %s, got %q", strings.Join(workerClasses, ", "), s.WorkerClass)
	}
	between("threads", s.Threads, 1, MaxThreads)
	if s.WorkerClass != "gthread" && s.Threads != 1 {
		r.Add("threads", "only the gthread worker class uses threads; set threads = 1 or worker_class = \"gthread\", got %d", s.Threads)
	}
	between("worker_timeout", s.TimeoutSeconds, 1, 3600)
	between("graceful_timeout", s.GracefulTimeoutSeconds, 1, 3600)
	between("keepalive", s.KeepAliveSeconds, 1, 3600)
	between("max_requests", s.MaxRequests, 0, 10_000_000)
	between("backlog", s.Backlog, 16, 65535)

	if s.Family != FamilyApt && s.Family != FamilyDnf {
		r.Add("distro_family", "must be %q (Debian, Ubuntu) or %q (Amazon Linux 2023), got %q", FamilyApt, FamilyDnf, s.Family)
	}
	if !pythonNameRe.MatchString(s.Python) && !(absPathRe.MatchString(s.Python) && path.Clean(s.Python) == s.Python) {
		r.Add("python", "must be python3, python3.X or an absolute path, got %q", s.Python)
	}
	switch s.GunicornSource {
	case GunicornFromPip:
		if !versionRe.MatchString(s.GunicornVersion) {
			r.Add("gunicorn_version", "must be an exact version such as %q, got %q", DefaultGunicornVersion, s.GunicornVersion)
		}
	case GunicornFromDistro:
		if s.GunicornVersion != "" {
			r.Add("gunicorn_version", "the distro package has its own version; leave it empty with gunicorn_source = \"distro\", got %q", s.GunicornVersion)
		}
		if !s.SystemSitePackages {
			r.Add("system_site_packages", "must be true with gunicorn_source = \"distro\"")
		}
	default:
		r.Add("gunicorn_source", "must be %q or %q, got %q", GunicornFromPip, GunicornFromDistro, s.GunicornSource)
	}
	if s.PipIndexURL != "" && (!safeURLRe.MatchString(s.PipIndexURL) || !(strings.HasPrefix(s.PipIndexURL, "https://") || strings.HasPrefix(s.PipIndexURL, "http://"))) {
		r.Add("pip_index_url", "must be an http(s) URL, got %q", s.PipIndexURL)
	}
	if s.PipFindLinks != "" && !safeURLRe.MatchString(s.PipFindLinks) {
		r.Add("pip_find_links", "must be a URL or an absolute path without spaces or quotes, got %q", s.PipFindLinks)
	}
	for i, p := range s.ExtraPackages {
		if !packageRe.MatchString(p) {
			r.Add(fmt.Sprintf("extra_packages[%d]", i), "must be a package name, got %q", p)
		}
	}

	between("listen_port", s.ListenPort, 1, 65535)
	if !serverNameRe.MatchString(s.ServerName) {
		r.Add("server_name", "must be NGINX server names separated by spaces, got %q", s.ServerName)
	}
	if !sizeRe.MatchString(s.ClientMaxBodySize) {
		r.Add("client_max_body_size", "must be a size such as 10m, got %q", s.ClientMaxBodySize)
	}
	between("proxy_read_timeout", s.ProxyReadTimeout, 1, 3600)
	if !urlPathRe.MatchString(s.HealthPath) || s.HealthPath == "/" {
		r.Add("health_path", "must be a URL path such as /healthz, got %q", s.HealthPath)
	}
	if !urlPathRe.MatchString(s.StaticURL) || !strings.HasSuffix(s.StaticURL, "/") || s.StaticURL == "/" {
		r.Add("static_url", "must be a URL path that ends in '/', such as /static/, got %q", s.StaticURL)
	}

	for i, c := range s.TrustedProxyCIDRs {
		key := fmt.Sprintf("trusted_proxy_cidrs[%d]", i)
		p, err := netip.ParsePrefix(c)
		switch {
		case err != nil:
			r.Add(key, "must be an address range such as 10.0.0.0/16, got %q", c)
		case p.Masked() != p:
			r.Add(key, "has host bits set; the range is %s, got %q", p.Masked(), c)
		case p.Bits() == 0:
			r.Add(key, "%s trusts every address, so any client could set the forwarded headers; name the load balancer's range", c)
		}
	}

	for _, p := range []struct{ key, v string }{
		{"venv_dir", s.VenvDir}, {"srv_dir", s.SrvDir}, {"etc_dir", s.EtcDir},
		{"run_dir", s.RunDir}, {"share_dir", s.ShareDir}, {"wheelhouse_dir", s.WheelhouseDir},
	} {
		switch {
		case !path.IsAbs(p.v):
			r.Add(p.key, "must be an absolute path, got %q", p.v)
		case path.Clean(p.v) != p.v || !absPathRe.MatchString(p.v):
			r.Add(p.key, "must be a clean absolute path below / without spaces or quotes, got %q", p.v)
		}
	}
	if s.RunDir != "" && !strings.HasPrefix(s.RunDir, "/run/") {
		r.Add("run_dir", "must be below /run so the sockets vanish at reboot, got %q", s.RunDir)
	}

	s.validateWheelhouse(&r)

	for i, n := range s.FirstBoot {
		key := fmt.Sprintf("first_boot[%d]", i)
		switch {
		case strings.HasPrefix(n, "schema-") && n != contract.SchemaNeed(contract.SchemaVersion):
			r.Add(key, "the payload was rendered for stack %s, and this plugin bakes %s: render the payload and bake the image with the same plugin version",
				n, contract.SchemaNeed(contract.SchemaVersion))
		case !contract.IsKnown(n):
			r.Add(key, "must be one of %s (the wsgi-cloudinit data source's needs output), got %q", strings.Join(contract.Known(), ", "), n)
		}
	}
	return r
}

// Instances returns 1..Sockets, the instance names of the template units.
func (s Stack) Instances() []int {
	out := make([]int, s.Sockets)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// SocketPath is the UNIX socket of instance i.
func (s Stack) SocketPath(i int) string { return fmt.Sprintf("%s/app-%d.sock", s.RunDir, i) }

// SocketUnit and ServiceUnit name the units of instance i.
func (s Stack) SocketUnit(i int) string  { return fmt.Sprintf("wsgi@%d.socket", i) }
func (s Stack) ServiceUnit(i int) string { return fmt.Sprintf("wsgi@%d.service", i) }

// SocketUnits lists every socket unit, in instance order.
func (s Stack) SocketUnits() []string {
	out := make([]string, 0, s.Sockets)
	for _, i := range s.Instances() {
		out = append(out, s.SocketUnit(i))
	}
	return out
}

// Fixed names and paths of the stack, the same on every image: no key changes them.
const (
	// TargetUnit groups the socket units; enabling it is what first boot does last.
	TargetUnit = "wsgi.target"
	// FirstBootGate holds the worker of a first boot that started the first unit before Django's
	// migrate: while it exists, a worker has imported the app but accepts no connection.
	FirstBootGate = "/run/wsgi-first-boot.gate"
	// UnitDir is where the units are installed.
	UnitDir = "/etc/systemd/system"
	// NginxSite is where the site configuration is installed. conf.d is included inside the http
	// block by both Debian's and Amazon Linux's nginx.conf, so one path serves both.
	NginxSite = "/etc/nginx/conf.d/wsgi.conf"
	// DeployStateDir is the deploy's own state (root's).
	DeployStateDir = "/var/lib/wsgi"
	// DeployedMarker is written when first boot has placed a live release; a relaunch sees it and
	// does not deploy again.
	DeployedMarker = DeployStateDir + "/deployed"
	// AppStateDir is the app's writable state directory (StateDirectory=wsgi-app of the units),
	// also the app user's HOME while hooks run.
	AppStateDir = "/var/lib/wsgi-app"
	// DeployLog is the deploy's own log file, beside cloud-init's output log and the journal.
	DeployLog = "/var/log/wsgi-deploy.log"
	// MigrateHelper is Django's fleet-wide migrate: the deploy runs it in the app's Django, as
	// the app user, so one instance of a release migrates while the others wait for it.
	MigrateHelper = "/usr/local/lib/wsgi/wsgi-migrate"
)

// ReleasesDir holds one folder per deployed release.
func (s Stack) ReleasesDir() string { return s.SrvDir + "/releases" }

// CurrentLink is the symlink to the live release; it is switched atomically.
func (s Stack) CurrentLink() string { return s.SrvDir + "/current" }

// StaticDir is where a release's collected static files live, served by NGINX at StaticURL.
func (s Stack) StaticDir() string { return s.CurrentLink() + "/static" }

// EnvFile is the app's environment (no secrets in user data; see docs/SECURITY.md).
func (s Stack) EnvFile() string { return s.EtcDir + "/wsgi.env" }

// GunicornConfig is the Gunicorn settings file every unit reads.
func (s Stack) GunicornConfig() string { return s.EtcDir + "/gunicorn.conf.py" }

// MaintenancePage is served with status 503 while no release is live.
func (s Stack) MaintenancePage() string { return s.ShareDir + "/maintenance.html" }

// Distro is what the stack needs to know of the machine's distribution family.
func (s Stack) Distro() Distro { return distros[s.Family] }

// UpstreamName is the NGINX upstream over the sockets.
func (s Stack) UpstreamName() string { return "wsgi_" + strings.ReplaceAll(s.AppName, "-", "_") }

// VenvPython is the interpreter of the baked venv, which runs Gunicorn.
func (s Stack) VenvPython() string { return s.VenvDir + "/bin/python" }

// Packages are the distribution packages the bake installs, in a stable order without repeats:
// NGINX, the interpreter, what first_boot asks for, then extra_packages.
func (s Stack) Packages() []string {
	d := s.Distro()
	py := "python3"
	if strings.HasPrefix(s.Python, "python3") {
		py = s.Python
	}
	out := append([]string{}, d.Base...)
	out = append(out, py)
	if d.VenvSuffix != "" {
		out = append(out, py+d.VenvSuffix)
	}
	if s.GunicornSource == GunicornFromDistro {
		out = append(out, "python3-gunicorn")
	}
	if slices.Contains(s.FirstBoot, contract.NeedGit) {
		out = append(out, "git")
	}
	for _, p := range s.ExtraPackages {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Provides is what an image of this stack offers a payload (contract.TagProvides): this
// schema, signed AWS requests through the baked helper, and git when the bake installs it.
func (s Stack) Provides() []string {
	p := []string{contract.SchemaNeed(contract.SchemaVersion), contract.NeedAWSRequests}
	if slices.Contains(s.Packages(), "git") {
		p = append(p, contract.NeedGit)
	}
	slices.Sort(p)
	return p
}
