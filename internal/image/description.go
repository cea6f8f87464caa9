package image

import (
	"encoding/json"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/contract"
)

// description is the machine-readable stack at contract.StackFile: what the image is, for the
// builder's AMI tags, the operations command and anyone on the instance. Its first two fields
// are contract.StackHeader; the rest describes the stack itself.
type description struct {
	Schema   int      `json:"schema"`
	Provides []string `json:"provides"`
	App      string   `json:"app_name"`
	User     string   `json:"user"`
	Group    string   `json:"group"`
	Family   Family   `json:"distro_family"`
	Python   string   `json:"python"`
	Gunicorn struct {
		Source  GunicornSource `json:"source"`
		Version string         `json:"version,omitempty"`
		Workers int            `json:"workers"`
		Class   string         `json:"worker_class"`
		Threads int            `json:"threads"`
	} `json:"gunicorn"`
	Units struct {
		Target   string   `json:"target"`
		Sockets  []string `json:"sockets"`
		Services []string `json:"services"`
	} `json:"units"`
	Paths struct {
		Venv     string   `json:"venv"`
		Releases string   `json:"releases"`
		Current  string   `json:"current"`
		EnvFile  string   `json:"env_file"`
		Sockets  []string `json:"sockets"`
		Deploy   string   `json:"deploy"`
		AppFile  string   `json:"app_file"`
		Deployed string   `json:"deployed_marker"`
		Log      string   `json:"deploy_log"`
	} `json:"paths"`
	NGINX struct {
		ListenPort int    `json:"listen_port"`
		HealthPath string `json:"health_path"`
		StaticURL  string `json:"static_url"`
	} `json:"nginx"`
	Packages []string `json:"packages"`
	// Wheelhouse is there when the image bakes the app's requirements as wheels.
	Wheelhouse *wheelhouse `json:"wheelhouse,omitempty"`
}

// wheelhouse tells a reader of the description where the baked wheels are, what they were
// built from, the venv the bake installed them into, and how first boot uses them. BuildTools were installed for the build and removed
// again (those already on the machine before the bake stay).
type wheelhouse struct {
	Dir                string   `json:"dir"`
	Requirements       string   `json:"requirements"`
	RequirementsSHA256 string   `json:"requirements_sha256"`
	Sums               string   `json:"sha256sums"`
	Venv               string   `json:"venv"`
	FirstBoot          string   `json:"first_boot"`
	BuildTools         []string `json:"build_tools"`
}

// Description is the content of contract.StackFile for s: indented JSON, the same bytes for the
// same Stack, so its digest names the stack.
func (s Stack) Description() []byte {
	v := view{Stack: s}
	d := description{
		Schema:   contract.SchemaVersion,
		Provides: s.Provides(),
		App:      s.AppName,
		User:     s.User,
		Group:    s.Group,
		Family:   s.Family,
		Python:   s.Python,
		Packages: s.Packages(),
	}
	d.Gunicorn.Source, d.Gunicorn.Version = s.GunicornSource, s.GunicornVersion
	d.Gunicorn.Workers, d.Gunicorn.Class, d.Gunicorn.Threads = s.WorkersPerUnit, s.WorkerClass, s.Threads
	d.Units.Target, d.Units.Sockets, d.Units.Services = TargetUnit, s.SocketUnits(), v.Services()
	d.Paths.Venv, d.Paths.Releases, d.Paths.Current, d.Paths.EnvFile = s.VenvDir, s.ReleasesDir(), s.CurrentLink(), s.EnvFile()
	d.Paths.Sockets, d.Paths.Deploy, d.Paths.AppFile = v.SocketPaths(), contract.DeployProgram, contract.AppFile
	d.Paths.Deployed, d.Paths.Log = DeployedMarker, DeployLog
	d.NGINX.ListenPort, d.NGINX.HealthPath, d.NGINX.StaticURL = s.ListenPort, s.HealthPath, s.StaticURL
	if s.Wheelhouse() {
		d.Wheelhouse = &wheelhouse{
			Dir: s.WheelhouseDir, Requirements: s.WheelhouseRequirements(), RequirementsSHA256: s.RequirementsSHA256(),
			Sums: s.WheelhouseSums(), Venv: s.WheelhouseVenv(),
			FirstBoot: "the venv, without pip, when the release's requirements file has requirements_sha256 and the payload names no index or constraints " +
				"(if the bake could install the file into it); else pip --no-index --find-links " + s.WheelhouseDir + " unless the payload names an index",
			BuildTools: s.BuildTools(),
		}
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		panic("stack description: " + err.Error()) // only strings and ints: cannot fail
	}
	return append(out, '\n')
}
