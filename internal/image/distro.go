package image

// Distro is one package-manager family: everything the stack does differently on it. A new
// distribution is one row here (and a harness suite to boot it).
type Distro struct {
	// Tool is the package manager's command; the install script refuses a machine without it.
	Tool string
	// Base are the packages every stack installs besides the interpreter.
	Base []string
	// VenvSuffix names the interpreter's venv package (python3 + "-venv"), "" where venv ships
	// with the interpreter.
	VenvSuffix string
	// Installed is a shell test that package "$p" is installed.
	Installed string
	// Install installs the packages that follow it on the command line.
	Install string
	// Clean empties the package caches for imaging.
	Clean string
	// Remove removes the packages that follow it on the command line (the wheelhouse's build tools).
	Remove string
	// List prints every installed package's name, one a line, sorted.
	List string
	// Compilers are what builds a C extension; DevSuffix names the interpreter's headers package
	// (python3 + "-dev"). Both are installed only while the wheelhouse is built.
	Compilers []string
	DevSuffix string
	// NginxUser is the distribution's NGINX user; it reaches the sockets through their group.
	NginxUser string
	// DefaultSite is the distribution's default site that would otherwise answer on port 80.
	DefaultSite string
}

var distros = map[Family]Distro{
	FamilyApt: {
		Tool: "apt-get",
		// nginx, not nginx-light: Debian 13 made nginx-light a transitional package, and nginx
		// is the full server on Debian 12, 13 and Ubuntu alike.
		Base:        []string{"nginx", "curl", "ca-certificates"},
		VenvSuffix:  "-venv",
		Installed:   `dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"`,
		Install:     "apt-get update -q && apt-get install -y -q --no-install-recommends",
		Clean:       "apt-get clean && rm -rf /var/lib/apt/lists/*",
		Remove:      "apt-get purge -y -q",
		List:        `dpkg-query -W -f='${binary:Package}\n' | sort`,
		Compilers:   []string{"build-essential"},
		DevSuffix:   "-dev",
		NginxUser:   "www-data",
		DefaultSite: "/etc/nginx/sites-enabled/default",
	},
	FamilyDnf: {
		Tool: "dnf",
		// Amazon Linux 2023 ships curl-minimal, which provides curl; asking for curl would swap it.
		Base:      []string{"nginx"},
		Installed: `rpm -q "$p" >/dev/null 2>&1`,
		Install:   "dnf install -y -q",
		Clean:     "dnf clean all -q",
		Remove:    "dnf remove -y -q",
		List:      `rpm -qa --qf '%{NAME}\n' | sort`,
		Compilers: []string{"gcc"},
		DevSuffix: "-devel",
		NginxUser: "nginx",
	},
}
