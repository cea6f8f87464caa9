// Package demo runs the whole product on this machine: the AWS APIs on moto, the EC2 instance
// as a local Debian machine booted with systemd-nspawn, and the real packer. It bakes the golden
// image with all four components, reads the new launch-template version back from the emulator,
// launches an instance of the image with that version's user data, and shows the sample Django
// app answering through NGINX from every unit. `make demo` runs it; the e2e suite checks it.
package demo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// all: keeps files that start with _ or ., such as the package's __init__.py, which a plain
// folder pattern drops.
//
//go:embed all:shop
var shopApp embed.FS

const (
	region = "us-east-1"
	// copyRegion receives a copy of the AMI, shared with shareAccount.
	copyRegion   = "eu-west-1"
	shareAccount = "123456789012"
	// debianAlias is the public SSM parameter a real build resolves; the emulator has no
	// Debian images, so the demo puts one of its own images behind the same name.
	debianAlias = "/aws/service/debian/release/13/latest/amd64"
)

// Options tune a run.
type Options struct {
	// Log receives every progress line and the output of packer.
	Log io.Writer
	// Keep leaves the instance running until ctx is done, for a look inside.
	Keep bool
	// WorkDir holds the run's files (default: a temporary folder, removed at the end).
	WorkDir string
	// Release is the Debian release of the instances (default harness.DefaultRelease).
	Release harness.Release
}

// Result is what a run proved.
type Result struct {
	AMI             string
	CopyAMI         string
	LaunchTemplate  string
	Version         int64
	RefreshID       string
	URL             string
	Units           map[string]int // unit -> requests it served
	StaticBytes     int
	Phases          []Phase
	InstanceName    string
	InstanceLeader  int
	UserDataBytes   int
	GoldenImagePath string
}

// Phase is one timed step of the run.
type Phase struct {
	Name string
	Took time.Duration
}

type run struct {
	opts    Options
	start   time.Time
	res     *Result
	cleanup []func()
	repo    string
	work    string
}

// Run does the whole path and cleans up everything it started, also on error or cancel.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the demo needs root (systemd-nspawn, ip, nft)")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	r := &run{opts: opts, start: time.Now(), res: &Result{Units: map[string]int{}}}
	defer r.close()
	if r.repo, err = harness.RepoRoot(); err != nil {
		return nil, err
	}
	r.work = opts.WorkDir
	if r.work == "" {
		if r.work, err = os.MkdirTemp("", "wsgi-demo-"); err != nil {
			return nil, err
		}
		// Also on Ctrl-C, after the harness has closed the machines whose folders are in it.
		work := r.work
		untrack := harness.AtInterrupt(func() { os.RemoveAll(work) })
		r.defer_(func() { untrack(); os.RemoveAll(work) })
	}
	if err := r.all(ctx); err != nil {
		return r.res, err
	}
	return r.res, nil
}

func (r *run) defer_(f func()) { r.cleanup = append(r.cleanup, f) }

func (r *run) close() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
}

func (r *run) say(format string, a ...any) {
	fmt.Fprintf(r.opts.Log, "==> demo [%6.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, a...))
}

// phase runs one named step and records how long it took.
func (r *run) phase(name string, f func() error) error {
	r.say("%s ...", name)
	t0 := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	took := time.Since(t0)
	r.res.Phases = append(r.res.Phases, Phase{name, took})
	r.say("%s: done in %s", name, took.Round(100*time.Millisecond))
	return nil
}

func (r *run) all(ctx context.Context) error {
	var (
		packer, plugin, base string
		env                  []string
		proxy                *awsproxy.Proxy
		refreshes            = &awsproxy.InstanceRefreshes{}
		clients              awsClients
		sourceAMI            string
		build                *harness.Machine
		appURL, appSHA       string
		userData             []byte
	)
	steps := []struct {
		name string
		f    func() error
	}{
		{"plugin and the pinned packer", func() (err error) {
			if packer, err = harness.Packer(ctx, r.repo); err != nil {
				return err
			}
			plugin = filepath.Join(r.work, "packer-plugin-wsgi")
			env = append(harness.PackerEnv(filepath.Join(r.work, "packer")),
				"AWS_ACCESS_KEY_ID=demo", "AWS_SECRET_ACCESS_KEY=demo", "AWS_EC2_METADATA_DISABLED=true",
				"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
			if err := r.cmd(ctx, r.repo, nil, "go", "build", "-o", plugin, "."); err != nil {
				return err
			}
			return r.cmd(ctx, r.work, env, packer, "plugins", "install", "--path", plugin, "github.com/wsgi-ami/wsgi")
		}},
		{"Debian base image (the stock AMI)", func() (err error) {
			// Django comes with the base image: the distribution's package cannot be installed
			// inside an nspawn machine (tzdata cannot replace the /etc/localtime nspawn binds).
			base, err = harness.BaseImage(ctx, r.opts.Release, r.opts.Log)
			return err
		}},
		{"AWS APIs on moto, behind a local proxy", func() error {
			moto, err := awsproxy.StartMoto(ctx, filepath.Join(r.work, "moto.log"))
			if err != nil {
				return err
			}
			r.defer_(moto.Close)
			if proxy, err = awsproxy.Start(moto.URL); err != nil {
				return err
			}
			r.defer_(func() { _ = proxy.Close() })
			refreshes.Register(proxy)
			clients = newAWSClients(proxy.URL)
			stock, err := seed(ctx, clients)
			if err != nil {
				return err
			}
			proxy.Intercept(answerDebianAlias(stock))
			sourceAMI = "resolve:ssm:" + debianAlias
			return nil
		}},
		{"build instance (local machine, sshd waits for the key EC2 imports)", func() (err error) {
			// The seed makes user admin; the builder's temporary key reaches the machine the way
			// EC2 hands it to cloud-init: from ImportKeyPair, here caught by the proxy.
			_, placeholder, err := harness.NewSSHKey(r.work)
			if err != nil {
				return err
			}
			if build, err = harness.Boot(ctx, harness.BootOptions{Image: base, Name: "demo-build", InstanceID: "i-0demobuild0000001",
				UserData: harness.SSHUserData("admin", placeholder), WorkDir: r.work, Log: r.opts.Log}); err != nil {
				return err
			}
			r.defer_(build.Close)
			proxy.Intercept(authorizeImportedKey(ctx, build, "admin"))
			return nil
		}},
		{"release archive of the sample Django app, on loopback, published to the machines", func() (err error) {
			appURL, appSHA, err = r.serveApp(ctx)
			return err
		}},
		{"packer build: wsgi-ami + wsgi-stack + wsgi-cloudinit + wsgi-launch-template", func() error {
			tpl := filepath.Join(r.work, "demo.pkr.hcl")
			if err := os.WriteFile(tpl, []byte(demoTemplate), 0o644); err != nil {
				return err
			}
			out, err := r.cmdOut(ctx, r.work, env, packer, "build", "-color=false",
				"-var", "endpoint="+proxy.URL, "-var", "source_ami="+sourceAMI, "-var", "ssh_host="+build.IP(), "-var", "ssh_cidr="+build.Gateway()+"/32",
				"-var", "app_url="+appURL, "-var", "app_sha256="+appSHA, tpl)
			if err != nil {
				return err
			}
			m := regexp.MustCompile(`(?m)^` + region + `: (ami-[0-9a-f]+)`).FindStringSubmatch(out)
			if m == nil {
				return errors.New("no AMI in packer's artifact output")
			}
			r.res.AMI = m[1]
			if m = regexp.MustCompile(`(?m)^` + copyRegion + `: (ami-[0-9a-f]+)`).FindStringSubmatch(out); m == nil {
				return errors.New("no " + copyRegion + " copy in packer's artifact output")
			}
			r.res.CopyAMI = m[1]
			if err := checkCopy(ctx, proxy.URL, r.res.CopyAMI); err != nil {
				return err
			}
			if started := refreshes.Started(); len(started) == 1 {
				r.res.RefreshID = started[0].ID
			}
			return nil
		}},
		{"golden image (the AMI's disk)", func() error {
			r.res.GoldenImagePath = filepath.Join(r.work, "golden.tar.zst")
			return build.Snapshot(ctx, r.res.GoldenImagePath)
		}},
		{"launch template: read back the new default version", func() (err error) {
			var ami string
			r.res.LaunchTemplate, r.res.Version, ami, userData, err = defaultVersion(ctx, clients, "shop")
			if err != nil {
				return err
			}
			if ami != r.res.AMI {
				return fmt.Errorf("default version %d launches %s, want the built %s", r.res.Version, ami, r.res.AMI)
			}
			r.res.UserDataBytes = len(userData)
			r.say("%s version %d: %s, %d bytes of user data (gzip), instance refresh %s; %s copy %s shared with %s",
				r.res.LaunchTemplate, r.res.Version, ami, len(userData), r.res.RefreshID, copyRegion, r.res.CopyAMI, shareAccount)
			return nil
		}},
		{"launch an instance of the golden image with that user data", func() error {
			m, err := harness.Boot(ctx, harness.BootOptions{Image: r.res.GoldenImagePath, Name: "demo-web", InstanceID: "i-0demoweb00000001",
				UserData: userData, WorkDir: r.work, Log: r.opts.Log})
			if err != nil {
				return err
			}
			r.defer_(m.Close)
			r.res.InstanceName = m.Name()
			r.res.InstanceLeader = m.Leader()
			r.res.URL = "http://" + m.IP() + "/"
			return r.checkServing(ctx, m)
		}},
	}
	for _, s := range steps {
		if err := r.phase(s.name, s.f); err != nil {
			return err
		}
	}
	r.report()
	if r.opts.Keep {
		r.say("the instance keeps running; Ctrl-C stops it and cleans up everything")
		<-ctx.Done()
	}
	return nil
}

// checkServing asks NGINX on the instance until every unit has answered, and fetches a static
// file NGINX serves itself.
func (r *run) checkServing(ctx context.Context, m *harness.Machine) error {
	if out, _, err := m.Exec(ctx, "cloud-init", "status", "--long"); err != nil {
		logs, _, _ := m.Exec(ctx, "tail", "-n", "40", "/var/log/wsgi-deploy.log")
		return fmt.Errorf("cloud-init did not finish cleanly: %w\n%s\n%s", err, out, logs)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 30; i++ {
		resp, err := client.Get(r.res.URL)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", r.res.URL, resp.Status, body)
		}
		if m := regexp.MustCompile(`"unit": "([0-9]+)"`).FindSubmatch(body); m != nil {
			r.res.Units[string(m[1])]++
		}
	}
	resp, err := client.Get(r.res.URL + "static/admin/css/base.css")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET static/admin/css/base.css: %s", resp.Status)
	}
	r.res.StaticBytes = len(body)
	return nil
}

func (r *run) report() {
	var units []string
	for u, n := range r.res.Units {
		units = append(units, fmt.Sprintf("wsgi@%s: %d", u, n))
	}
	sort.Strings(units)
	r.say("serving: %s answers 200 from %d units (%s); NGINX serves the collected static files (%d bytes of admin CSS)",
		r.res.URL, len(r.res.Units), strings.Join(units, ", "), r.res.StaticBytes)
	r.say("total %s", time.Since(r.start).Round(100*time.Millisecond))
	fmt.Fprintf(r.opts.Log, `
What to try next (make demo KEEP=1 keeps the instance running until Ctrl-C):
  curl -s %[1]s                 the sample app; the "unit" changes from request to request
  curl -s %[1]sstatic/admin/css/base.css | head    static files, served by NGINX
  nsenter -t %[2]d -a bash       a shell on the instance, then:
      systemctl status wsgi.target 'wsgi@*'
      cloud-init status --long
      less /var/log/wsgi-deploy.log
  On AWS: example.pkr.hcl is the same build against a real account; see README.md and docs/.
`, r.res.URL, r.res.InstanceLeader)
}

// serveApp packs the sample app, serves it on loopback for the rest of the run, publishes it
// to the machines, and returns the URL they fetch it from and its sha256.
func (r *run) serveApp(ctx context.Context) (string, string, error) {
	archive, err := tarGz(shopApp, "shop")
	if err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(archive)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	// The harness rewrites a machine's traffic to the published address into this loopback
	// port (DNAT on the machine's own link): no address is added to the host.
	base, err := harness.Publish("http://" + ln.Addr().String())
	if err != nil {
		ln.Close()
		return "", "", err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/releases/shop-1.0.0.tar.gz" {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(archive)
	})}
	go func() { _ = srv.Serve(ln) }()
	r.defer_(func() { _ = srv.Close() })
	return base + "/releases/shop-1.0.0.tar.gz", hex.EncodeToString(sum[:]), nil
}

// tarGz packs dir of fsys as a reproducible gzip tar archive with paths relative to dir.
func tarGz(fsys fs.FS, dir string) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, dir+"/")
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	return buf.Bytes(), err
}

func (r *run) cmd(ctx context.Context, dir string, env []string, name string, args ...string) error {
	_, err := r.cmdOut(ctx, dir, env, name, args...)
	return err
}

// cmdOut runs a command with its output going to the log as it comes, and returns it too.
func (r *run) cmdOut(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var out bytes.Buffer
	w := io.MultiWriter(&out, r.opts.Log)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// authorizeImportedKey installs the public key of every ImportKeyPair call for user on the
// machine, as cloud-init does on EC2 from the instance metadata, and lets the call through.
func authorizeImportedKey(ctx context.Context, m *harness.Machine, user string) awsproxy.Interceptor {
	var mu sync.Mutex
	return func(w http.ResponseWriter, c *awsproxy.Call) bool {
		if c.Service != "ec2" || c.Action != "ImportKeyPair" {
			return false
		}
		key, err := base64.StdEncoding.DecodeString(c.Form.Get("PublicKeyMaterial"))
		if err != nil {
			key = []byte(c.Form.Get("PublicKeyMaterial"))
		}
		mu.Lock()
		defer mu.Unlock()
		line := strings.TrimSpace(string(key)) + "\n"
		_, _, _ = m.Exec(ctx, "sh", "-c", `umask 077; mkdir -p ~`+user+`/.ssh && printf '%s' "$1" >> ~`+user+`/.ssh/authorized_keys && chown -R `+user+`: ~`+user+`/.ssh`, "sh", line)
		return false
	}
}

// checkCopy asks the emulator, in the copy's region, that the copy is available, tagged for
// retention and shared with the account the template names.
func checkCopy(ctx context.Context, endpoint, ami string) error {
	cfg := aws.Config{Region: copyRegion, Credentials: credentials.NewStaticCredentialsProvider("demo", "demo", "")}
	c := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(endpoint) })
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
	if err != nil {
		return fmt.Errorf("%s copy %s: %w", copyRegion, ami, err)
	}
	if len(imgs.Images) != 1 || imgs.Images[0].State != ec2types.ImageStateAvailable {
		return fmt.Errorf("%s copy %s is not available", copyRegion, ami)
	}
	family := ""
	for _, tag := range imgs.Images[0].Tags {
		if aws.ToString(tag.Key) == "wsgi:ami-family" {
			family = aws.ToString(tag.Value)
		}
	}
	if family != "shop" {
		return fmt.Errorf("%s copy %s has wsgi:ami-family %q, want shop", copyRegion, ami, family)
	}
	attr, err := c.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(ami), Attribute: ec2types.ImageAttributeNameLaunchPermission})
	if err != nil {
		return fmt.Errorf("%s copy %s launch permissions: %w", copyRegion, ami, err)
	}
	for _, p := range attr.LaunchPermissions {
		if aws.ToString(p.UserId) == shareAccount {
			return nil
		}
	}
	return fmt.Errorf("%s copy %s is not shared with %s", copyRegion, ami, shareAccount)
}

type awsClients struct {
	ec2 *ec2.Client
	ssm *ssm.Client
	as  *autoscaling.Client
}

func newAWSClients(endpoint string) awsClients {
	cfg := aws.Config{Region: region, Credentials: credentials.NewStaticCredentialsProvider("demo", "demo", "")}
	return awsClients{
		ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		ssm: ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		as:  autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) { o.BaseEndpoint = aws.String(endpoint) }),
	}
}

// seed gives the emulator what the account would have: the app's launch template (version 1
// launches a stock image) and its Auto Scaling group. It returns that stock image.
func seed(ctx context.Context, c awsClients) (string, error) {
	// The emulator ships no Debian image; its Ubuntu image is the nearest stand-in for the
	// AMI id. What boots is the local Debian machine either way.
	imgs, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{"ubuntu/images/hvm-ssd/ubuntu-xenial-*"}}}})
	if err != nil {
		return "", err
	}
	if len(imgs.Images) == 0 {
		return "", errors.New("the emulator has no Ubuntu image to stand in for the stock AMI")
	}
	stock := aws.ToString(imgs.Images[0].ImageId)
	lt, err := c.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("shop"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String(stock), InstanceType: ec2types.InstanceTypeT3Small}})
	if err != nil {
		return "", err
	}
	if _, err := c.as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("shop-web"),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId, Version: aws.String("$Default")},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(3), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{region + "a"},
	}); err != nil {
		return "", err
	}
	return stock, nil
}

// answerDebianAlias answers SSM GetParameter for the public Debian alias, which the emulator
// lacks (and refuses to create: /aws/ names are reserved), with the given image.
func answerDebianAlias(ami string) awsproxy.Interceptor {
	return func(w http.ResponseWriter, c *awsproxy.Call) bool {
		if c.Service != "ssm" || c.Action != "GetParameter" {
			return false
		}
		var in struct{ Name string }
		if json.Unmarshal(c.Body, &in) != nil || in.Name != debianAlias {
			return false
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(map[string]any{"Parameter": map[string]any{
			"Name": debianAlias, "Type": "String", "Value": ami, "Version": 1, "DataType": "aws:ec2:image",
			"ARN": "arn:aws:ssm:" + region + "::parameter" + debianAlias,
		}})
		return true
	}
}

// defaultVersion reads a launch template's default version: its id, number, AMI and the user
// data as an instance receives it (base64 decoded).
func defaultVersion(ctx context.Context, c awsClients, name string) (string, int64, string, []byte, error) {
	out, err := c.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateName: aws.String(name), Versions: []string{"$Default"}})
	if err != nil {
		return "", 0, "", nil, err
	}
	if len(out.LaunchTemplateVersions) != 1 {
		return "", 0, "", nil, fmt.Errorf("launch template %s: %d default versions", name, len(out.LaunchTemplateVersions))
	}
	v := out.LaunchTemplateVersions[0]
	ud, err := base64.StdEncoding.DecodeString(aws.ToString(v.LaunchTemplateData.UserData))
	if err != nil {
		return "", 0, "", nil, fmt.Errorf("user data of %s version %d is not base64: %w", name, aws.ToInt64(v.VersionNumber), err)
	}
	return aws.ToString(v.LaunchTemplateId), aws.ToInt64(v.VersionNumber), aws.ToString(v.LaunchTemplateData.ImageId), ud, nil
}
