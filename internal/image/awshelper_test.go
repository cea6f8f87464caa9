package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/quote"
)

// The request signer the baked deploy runs (contract.AWSHelper), tested here against an IMDS
// stand-in and a stand-in for SSM, Secrets Manager, S3 and Auto Scaling that recomputes every
// request's SigV4 signature with aws-sdk-go-v2's signer. e2e/awshelper runs it against moto.

const awsHelperFile = "files/wsgi-aws.py"

var (
	pythonOnce sync.Once
	pythonPath string
	pythonErr  error
)

// helperPython is the interpreter the tests run the helper with: python3, or WSGI_AWS_PYTHON
// (for example a python3.9, the oldest the images carry). It is resolved to the real executable
// once, so that a wrapper such as pyenv's shim does not cost a shell per run.
func helperPython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("WSGI_AWS_PYTHON")
	if py == "" {
		py = requireTool(t, "python3")
	}
	pythonOnce.Do(func() {
		out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
		pythonPath, pythonErr = strings.TrimSpace(string(out)), err
	})
	if pythonErr != nil || pythonPath == "" {
		t.Fatalf("%s: cannot tell its executable: %v", py, pythonErr)
	}
	return pythonPath
}

// ---------------------------------------------------------------- IMDS stand-in

type fakeIMDS struct {
	srv *httptest.Server

	mu         sync.Mutex
	generation int // the credentials served are generation N: AKID-N, token-N
	credReads  int
	tokens     []string
	requests   []string
	noRole     bool
	noRegion   bool // placement/region answers 404: the identity document must be read
	region     string
	instanceID string
}

func newFakeIMDS(t *testing.T) *fakeIMDS {
	m := &fakeIMDS{generation: 1, region: "eu-west-3", instanceID: "i-0123456789abcdef0"}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

func fakeCreds(gen int) aws.Credentials {
	return aws.Credentials{
		AccessKeyID:     fmt.Sprintf("AKIDTEST%d", gen),
		SecretAccessKey: fmt.Sprintf("secret/key+%d", gen),
		SessionToken:    fmt.Sprintf("session-token-%d", gen),
	}
}

// expireToken invalidates the current IMDS session tokens: the helper must take a new one.
func (m *fakeIMDS) expireToken() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens = nil
}

func (m *fakeIMDS) rotate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.generation++
}

func (m *fakeIMDS) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests = append(m.requests, r.Method+" "+r.URL.Path)
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "token: PUT with a TTL", http.StatusBadRequest)
			return
		}
		tok := fmt.Sprintf("imds-token-%d", len(m.requests))
		m.tokens = append(m.tokens, tok)
		fmt.Fprint(w, tok)
		return
	}
	if r.Method != http.MethodGet || !slices.Contains(m.tokens, r.Header.Get("X-aws-ec2-metadata-token")) {
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	const creds = "/latest/meta-data/iam/security-credentials/"
	switch p := r.URL.Path; {
	case p == creds:
		if m.noRole {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "wsgi-role")
	case p == creds+"wsgi-role" && !m.noRole:
		m.credReads++
		c := fakeCreds(m.generation)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": c.AccessKeyID,
			"SecretAccessKey": c.SecretAccessKey, "Token": c.SessionToken,
			"Expiration": time.Now().Add(6 * time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		})
	case p == "/latest/meta-data/placement/region" && !m.noRegion:
		fmt.Fprint(w, m.region)
	case p == "/latest/dynamic/instance-identity/document":
		_ = json.NewEncoder(w).Encode(map[string]string{"region": m.region, "instanceId": m.instanceID})
	case p == "/latest/meta-data/instance-id":
		fmt.Fprint(w, m.instanceID)
	default:
		http.NotFound(w, r)
	}
}

// ---------------------------------------------------------------- AWS stand-in

// awsCall is one request the AWS stand-in received, once its signature checked out.
type awsCall struct {
	Service, Region, Action string
	AccessKey, Token        string
	Path                    string
	Form                    url.Values
	JSON                    map[string]any
}

// awsFault is an error answer injected in place of the real one.
type awsFault struct {
	Status  int
	Code    string
	Message string
	Delay   time.Duration // sleep before answering (a timeout), then answer normally if Status is 0
	Trickle time.Duration // S3: send the object in 8 pieces, this long apart
}

type fakeAWS struct {
	srv  *httptest.Server
	imds *fakeIMDS

	mu         sync.Mutex
	calls      []awsCall
	badSig     []string
	secretFor  map[string]string // access key -> the secret key the server believes (default: IMDS's)
	expired    map[string]bool   // session tokens the server refuses as expired
	params     map[string]string
	secrets    map[string]string
	objects    map[string][]byte // "bucket/key"
	instances  map[string][2]string
	completed  []url.Values
	fault      func(c awsCall, n int) *awsFault // n counts calls of c.Action, from 1
	actionSeen map[string]int
	clockAhead time.Duration // the server's clock runs this much ahead of the host's
	skewed     int           // requests refused as RequestTimeTooSkewed
	userAgents []string
}

// errSkew: the request's time is too far from the server's clock, as AWS refuses it.
var errSkew = errors.New("request time too skewed")

func newFakeAWS(t *testing.T, m *fakeIMDS) *fakeAWS {
	a := &fakeAWS{imds: m, secretFor: map[string]string{}, expired: map[string]bool{},
		params: map[string]string{}, secrets: map[string]string{}, objects: map[string][]byte{},
		instances: map[string][2]string{}, actionSeen: map[string]int{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAWS) setFault(f func(c awsCall, n int) *awsFault) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fault = f
}

func (a *fakeAWS) Calls() []awsCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

func (a *fakeAWS) Actions() []string {
	var out []string
	for _, c := range a.Calls() {
		out = append(out, c.Service+":"+c.Action)
	}
	return out
}

// verify recomputes the request's signature with aws-sdk-go-v2's signer, over the headers the
// request says it signed, and compares. It returns the signing scope's service and region.
func (a *fakeAWS) verify(r *http.Request, body []byte) (c awsCall, err error) {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return c, fmt.Errorf("no SigV4 Authorization header: %q", auth)
	}
	fields := map[string]string{}
	for _, f := range strings.Split(rest, ", ") {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return c, fmt.Errorf("credential scope %q", fields["Credential"])
	}
	c.AccessKey, c.Region, c.Service = scope[0], scope[2], scope[3]
	c.Token = r.Header.Get("X-Amz-Security-Token")
	signed := strings.Split(fields["SignedHeaders"], ";")
	must := []string{"host", "x-amz-date", "x-amz-security-token"}
	if c.Service == "s3" {
		must = append(must, "x-amz-content-sha256")
	}
	if r.Header.Get("X-Amz-Target") != "" {
		must = append(must, "x-amz-target", "content-type")
	}
	for _, h := range must {
		if !slices.Contains(signed, h) {
			return c, fmt.Errorf("%s is not signed (SignedHeaders=%s)", h, fields["SignedHeaders"])
		}
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if c.Service == "s3" && r.Header.Get("X-Amz-Content-Sha256") != payloadHash {
		return c, fmt.Errorf("x-amz-content-sha256 %q is not the body's hash", r.Header.Get("X-Amz-Content-Sha256"))
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return c, fmt.Errorf("x-amz-date: %w", err)
	}
	if d := time.Now().Add(a.clockAhead).Sub(when); d > 5*time.Minute || d < -5*time.Minute {
		return c, errSkew
	}
	// The request as the client meant it: its URI as sent, only the headers it signed.
	u, err := url.Parse("http://" + r.Host + r.RequestURI)
	if err != nil {
		return c, err
	}
	re := &http.Request{Method: r.Method, URL: u, Host: r.Host, Header: http.Header{}}
	for _, h := range signed {
		switch h {
		case "host":
		case "content-length":
			re.ContentLength = int64(len(body))
		default:
			re.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	creds := fakeCreds(0)
	a.imds.mu.Lock()
	for g := 1; g <= a.imds.generation; g++ {
		if fakeCreds(g).AccessKeyID == c.AccessKey {
			creds = fakeCreds(g)
		}
	}
	a.imds.mu.Unlock()
	if creds.AccessKeyID != c.AccessKey {
		return c, fmt.Errorf("access key %s was never served by IMDS", c.AccessKey)
	}
	if s, ok := a.secretFor[c.AccessKey]; ok {
		creds.SecretAccessKey = s
	}
	if c.Token != creds.SessionToken {
		return c, fmt.Errorf("session token %q does not belong to %s", c.Token, c.AccessKey)
	}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = c.Service == "s3" })
	if err := signer.SignHTTP(context.Background(), creds, re, payloadHash, c.Service, c.Region, when); err != nil {
		return c, err
	}
	if want := re.Header.Get("Authorization"); want != auth {
		return c, fmt.Errorf("signature mismatch:\n got %s\nwant %s", auth, want)
	}
	return c, nil
}

func (a *fakeAWS) writeError(w http.ResponseWriter, c awsCall, status int, code, msg string) {
	switch c.Service {
	case "ssm", "secretsmanager":
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws." + c.Service + "#" + code, "message": msg})
	case "s3":
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>x</RequestId></Error>`, xmlEsc(code), xmlEsc(msg))
	default:
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>x</RequestId></ErrorResponse>`, xmlEsc(code), xmlEsc(msg))
	}
}

func xmlEsc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (a *fakeAWS) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c, err := a.verify(r, body)
	a.mu.Lock()
	a.userAgents = append(a.userAgents, r.Header.Get("User-Agent"))
	if errors.Is(err, errSkew) {
		a.skewed++
		a.mu.Unlock()
		w.Header().Set("Date", time.Now().Add(a.clockAhead).UTC().Format(http.TimeFormat))
		a.writeError(w, c, http.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
		return
	}
	if err != nil {
		a.badSig = append(a.badSig, err.Error())
		a.mu.Unlock()
		a.writeError(w, c, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	c.Path = r.URL.Path
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		_, c.Action, _ = strings.Cut(t, ".")
		_ = json.Unmarshal(body, &c.JSON)
	} else if c.Service == "s3" {
		c.Action = "GetObject"
	} else {
		c.Form, _ = url.ParseQuery(string(body))
		c.Action = c.Form.Get("Action")
	}
	a.calls = append(a.calls, c)
	a.actionSeen[c.Action]++
	n := a.actionSeen[c.Action]
	fault := a.fault
	a.mu.Unlock()

	if fault != nil {
		if f := fault(c, n); f != nil {
			time.Sleep(f.Delay)
			if f.Status != 0 {
				a.writeError(w, c, f.Status, f.Code, f.Message)
				return
			}
			if f.Trickle > 0 && c.Action == "GetObject" {
				a.mu.Lock()
				obj := a.objects[strings.TrimPrefix(r.URL.Path, "/")]
				a.mu.Unlock()
				w.Header().Set("Content-Length", fmt.Sprint(len(obj)))
				for i := 0; i < 8; i++ {
					_, _ = w.Write(obj[i*len(obj)/8 : (i+1)*len(obj)/8])
					w.(http.Flusher).Flush()
					time.Sleep(f.Trickle)
				}
				return
			}
		}
	}
	a.mu.Lock()
	expired := a.expired[c.Token]
	a.mu.Unlock()
	if expired {
		code := "ExpiredTokenException"
		if c.Service == "s3" || c.Service == "autoscaling" {
			code = "ExpiredToken"
		}
		a.writeError(w, c, http.StatusBadRequest, code, "The security token included in the request is expired")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch c.Service + ":" + c.Action {
	case "ssm:GetParameter":
		name, _ := c.JSON["Name"].(string)
		v, ok := a.params[name]
		if !ok || c.JSON["WithDecryption"] != true {
			a.writeError(w, c, http.StatusBadRequest, "ParameterNotFound", "Parameter "+name+" not found.")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"Parameter": map[string]any{"Name": name, "Type": "SecureString", "Value": v, "Version": 1}})
	case "secretsmanager:GetSecretValue":
		id, _ := c.JSON["SecretId"].(string)
		v, ok := a.secrets[id]
		if !ok {
			a.writeError(w, c, http.StatusBadRequest, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"Name": id, "SecretString": v, "VersionId": "v1"})
	case "s3:GetObject":
		// Path style: /bucket/key, the key decoded.
		obj, ok := a.objects[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok || r.Method != http.MethodGet {
			a.writeError(w, c, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(obj)))
		_, _ = w.Write(obj)
	case "autoscaling:DescribeAutoScalingInstances":
		id := c.Form.Get("InstanceIds.member.1")
		var members string
		if gi, ok := a.instances[id]; ok {
			members = fmt.Sprintf(`<member><InstanceId>%s</InstanceId><AutoScalingGroupName>%s</AutoScalingGroupName><AvailabilityZone>eu-west-3a</AvailabilityZone><LifecycleState>%s</LifecycleState><HealthStatus>HEALTHY</HealthStatus><ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>`,
				xmlEsc(id), xmlEsc(gi[0]), xmlEsc(gi[1]))
		}
		fmt.Fprintf(w, `<DescribeAutoScalingInstancesResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><DescribeAutoScalingInstancesResult><AutoScalingInstances>%s</AutoScalingInstances></DescribeAutoScalingInstancesResult><ResponseMetadata><RequestId>x</RequestId></ResponseMetadata></DescribeAutoScalingInstancesResponse>`, members)
	case "autoscaling:CompleteLifecycleAction":
		a.completed = append(a.completed, c.Form)
		fmt.Fprint(w, `<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><CompleteLifecycleActionResult/><ResponseMetadata><RequestId>x</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>`)
	default:
		a.writeError(w, c, http.StatusBadRequest, "InvalidAction", "unknown action "+c.Action)
	}
}

// ---------------------------------------------------------------- running the helper

type helperRun struct {
	stdout, stderr string
	code           int
}

type awsFakes struct {
	imds *fakeIMDS
	aws  *fakeAWS
	env  []string
}

// newAWSFakes starts both stand-ins; the helper's environment points at them. Every request
// must carry a valid signature unless the test says otherwise (allowBadSig).
func newAWSFakes(t *testing.T) *awsFakes {
	t.Helper()
	m := newFakeIMDS(t)
	a := newFakeAWS(t, m)
	f := &awsFakes{imds: m, aws: a, env: []string{
		"PATH=" + os.Getenv("PATH"),
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + m.srv.URL,
		"AWS_ENDPOINT_URL=" + a.srv.URL,
	}}
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, e := range a.badSig {
			t.Errorf("a request failed the signature check: %s", e)
		}
	})
	return f
}

func (f *awsFakes) run(t *testing.T, extraEnv []string, args ...string) helperRun {
	t.Helper()
	py := helperPython(t)
	cmd := exec.Command(py, append([]string{"-IS", awsHelperFile}, args...)...)
	cmd.Env = append(slices.Clone(f.env), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := helperRun{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("running the helper: %v", err)
	}
	return res
}

// mustSucceed fails the test unless the run exited 0 with nothing on stderr.
func (r helperRun) mustSucceed(t *testing.T) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// mustFail checks the exit status and that stderr is exactly the one line want.
func (r helperRun) mustFail(t *testing.T, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	if r.stderr != want+"\n" {
		t.Errorf("stderr:\n%q\nwant the one line\n%q", r.stderr, want+"\n")
	}
}

func fileMode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// hostileSecrets: every character that is special to sh, to systemd's parser or to JSON.
var hostileSecrets = map[string]string{
	"DQ":      `pa"ss"word-S3CR3T-1`,
	"DOLLAR":  `$HOME ${PATH} $(touch pwned) S3CR3T-2`,
	"TICK":    "`touch pwned` S3CR3T-3",
	"LINES":   "first line S3CR3T-4\nsecond line\n\nafter a blank\n",
	"BSLASH":  `C:\new\table\\ and trailing \ S3CR3T-5 \`,
	"UNICODE": "ünïcødé ✓ 日本語 🔑 S3CR3T-6",
	"MIXED":   "'single' \"double\" \\\" \\$ \\` ; & | < > * ? [ ] # ~ = % S3CR3T-7\r\n\tend",
	"SPACES":  "   leading and trailing S3CR3T-8   ",
	"JSONISH": `{"user":"app","password":"p\"w\\d\u00e9"} S3CR3T-9`,
}

// readBack reads NAME from an environment file the way the deploy's shell does.
func readBack(t *testing.T, file, name string) string {
	t.Helper()
	sh := requireTool(t, "sh")
	out, err := exec.Command(sh, "-c", `set -a; . "$1"; eval "printf %s \"\$$2\""`, "sh", file, name).Output()
	if err != nil {
		t.Fatalf("sh reading %s back: %v", name, err)
	}
	return string(out)
}

func TestAWSHelperSecretsEnv(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	var args []string
	var names []string
	for name := range hostileSecrets {
		names = append(names, name)
	}
	slices.Sort(names)
	for i, name := range names {
		if i%2 == 0 {
			f.aws.params["/shop/"+strings.ToLower(name)] = hostileSecrets[name]
			args = append(args, name+"=ssm:/shop/"+strings.ToLower(name))
		} else {
			f.aws.secrets["shop/"+name] = hostileSecrets[name]
			args = append(args, name+"=secretsmanager:shop/"+name)
		}
	}
	dir := t.TempDir()
	envFile := filepath.Join(dir, "wsgi.env")
	// A pre-existing file whose last line has no newline: the helper ends it, keeps its mode.
	writeFile(t, envFile, []byte(`PLAIN="kept"`), 0o640)
	r := f.run(t, nil, append([]string{"secrets-env", envFile}, args...)...)
	r.mustSucceed(t)

	got, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "PLAIN=\"kept\"\n"
	for _, name := range names {
		want += name + "=" + quote.Env(hostileSecrets[name]) + "\n"
	}
	if string(got) != want {
		t.Errorf("environment file, quoted other than quote.Env:\n%s\nwant\n%s", got, want)
	}
	if m := fileMode(t, envFile); m != 0o640 {
		t.Errorf("an existing file's mode changed to %o", m)
	}
	for _, name := range names {
		if v := readBack(t, envFile, name); v != hostileSecrets[name] {
			t.Errorf("%s reads back in sh as %q, want %q", name, v, hostileSecrets[name])
		}
	}
	if readBack(t, envFile, "PLAIN") != "kept" {
		t.Error("the line that was there before is damaged")
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("reading the file back ran a command from a secret")
	}
	for _, name := range names {
		for _, part := range strings.Fields(hostileSecrets[name]) {
			if strings.Contains(part, "S3CR3T") && (strings.Contains(r.stdout, part) || strings.Contains(r.stderr, part)) {
				t.Errorf("secret %s appears in the helper's output:\n%s%s", name, r.stdout, r.stderr)
			}
		}
	}
	for _, c := range f.aws.Calls() {
		if c.Region != "eu-west-3" || c.Token != "session-token-1" {
			t.Errorf("%s:%s signed for %s with %s, want the IMDS region and role", c.Service, c.Action, c.Region, c.Token)
		}
		if c.Action == "GetParameter" && c.JSON["WithDecryption"] != true {
			t.Errorf("GetParameter without decryption: %v", c.JSON)
		}
	}
	if n := len(f.aws.Calls()); n != len(names) {
		t.Errorf("%d requests for %d secrets", n, len(names))
	}
	if f.imds.credReads != 1 {
		t.Errorf("credentials read %d times from IMDS, want once", f.imds.credReads)
	}

	// A new file is created 0600.
	fresh := filepath.Join(dir, "fresh.env")
	f.run(t, nil, "secrets-env", fresh, "DQ=ssm:/shop/dq").mustSucceed(t)
	if m := fileMode(t, fresh); m != 0o600 {
		t.Errorf("a new environment file has mode %o, want 0600", m)
	}
	if b, _ := os.ReadFile(fresh); string(b) != "DQ="+quote.Env(hostileSecrets["DQ"])+"\n" {
		t.Errorf("new file: %q", b)
	}

	// One missing secret: nothing is appended, and the line names it without a value.
	before, _ := os.ReadFile(envFile)
	r = f.run(t, nil, "secrets-env", envFile, "DQ=ssm:/shop/dq", "GONE=ssm:/shop/gone")
	r.mustFail(t, 1, "wsgi-aws: secrets-env GONE (ssm:/shop/gone): ParameterNotFound (HTTP 400): Parameter /shop/gone not found.")
	if after, _ := os.ReadFile(envFile); !bytes.Equal(before, after) {
		t.Errorf("a failed run changed the file:\n%s", after)
	}
	if strings.Contains(r.stdout+r.stderr, "S3CR3T") {
		t.Errorf("a secret value in the output of a failed run:\n%s%s", r.stdout, r.stderr)
	}

	// A symbolic link in the file's place is refused.
	link := filepath.Join(dir, "link.env")
	if err := os.Symlink(envFile, link); err != nil {
		t.Fatal(err)
	}
	r = f.run(t, nil, "secrets-env", link, "DQ=ssm:/shop/dq")
	r.mustFail(t, 1, "wsgi-aws: secrets-env: cannot append to "+link+": Too many levels of symbolic links")
}

func TestAWSHelperSecretsManagerBinaryAndNUL(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	f.aws.secrets["nul"] = "before\x00after S3CR3T"
	out := filepath.Join(t.TempDir(), "env")
	r := f.run(t, nil, "secrets-env", out, "X=secretsmanager:nul")
	r.mustFail(t, 1, "wsgi-aws: secrets-env X (secretsmanager:nul): the value contains a NUL byte, which an environment file cannot hold")
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed run created the file")
	}
}

func TestAWSHelperGetObject(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	obj := make([]byte, 3<<20+17)
	for i := range obj {
		obj[i] = byte(i * 7 % 251)
	}
	key := "releases/shop 1.2+build/ü&x=y?#.tar.gz"
	f.aws.objects["my-bucket/"+key] = obj
	dir := t.TempDir()
	out := filepath.Join(dir, "src.tar.gz")
	writeFile(t, out, []byte("old"), 0o644)
	// AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL (which points at nothing).
	env := []string{"AWS_ENDPOINT_URL=http://127.0.0.1:1", "AWS_ENDPOINT_URL_S3=" + f.aws.srv.URL + "/"}
	r := f.run(t, env, "get-object", "s3://my-bucket/"+key, out)
	r.mustSucceed(t)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, obj) {
		t.Fatalf("object: %d bytes, want %d (%v)", len(got), len(obj), err)
	}
	if m := fileMode(t, out); m != 0o600 {
		t.Errorf("mode %o, want 0600", m)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left beside the file: %v", entries)
	}
	calls := f.aws.Calls()
	if len(calls) != 1 || calls[0].Path != "/my-bucket/"+key || calls[0].Service != "s3" {
		t.Errorf("calls = %+v", calls)
	}
	if !strings.Contains(r.stdout, fmt.Sprintf("(%d bytes)", len(obj))) {
		t.Errorf("stdout: %s", r.stdout)
	}

	r = f.run(t, nil, "get-object", "s3://my-bucket/missing", filepath.Join(dir, "missing"))
	r.mustFail(t, 1, "wsgi-aws: get-object s3://my-bucket/missing: NoSuchKey (HTTP 404): The specified key does not exist.")
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("a failed fetch left files: %v", entries)
	}
}

func TestAWSHelperRetries(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		args   func(dir string) []string
		action string
		faults []awsFault // answers of the first calls of action, in order
		calls  int
		code   int
		stderr string
	}{
		{"500 twice then served", ssmArgs, "GetParameter",
			[]awsFault{{Status: 500, Code: "InternalServerError", Message: "boom"}, {Status: 502, Code: "BadGateway"}}, 3, 0, ""},
		{"Secrets Manager throttling", smArgs, "GetSecretValue",
			[]awsFault{{Status: 400, Code: "ThrottlingException", Message: "Rate exceeded"}}, 2, 0, ""},
		{"S3 SlowDown", s3Args, "GetObject",
			[]awsFault{{Status: 503, Code: "SlowDown", Message: "Please reduce your request rate."}}, 2, 0, ""},
		{"Auto Scaling Throttling", lifecycleArgs, "DescribeAutoScalingInstances",
			[]awsFault{{Status: 400, Code: "Throttling", Message: "Rate exceeded"}}, 2, 0, ""},
		{"TooManyRequestsException", smArgs, "GetSecretValue",
			[]awsFault{{Status: 429, Code: "TooManyRequestsException"}}, 2, 0, ""},
		{"RequestLimitExceeded", ssmArgs, "GetParameter",
			[]awsFault{{Status: 400, Code: "RequestLimitExceeded", Message: "slow down"}}, 2, 0, ""},
		{"access denied is not retried", ssmArgs, "GetParameter",
			[]awsFault{{Status: 400, Code: "AccessDeniedException", Message: "User: arn:aws:sts::1:assumed-role/wsgi-role/i-0 is not authorized to perform: ssm:GetParameter"}}, 1, 1,
			"wsgi-aws: secrets-env DB (ssm:/shop/db): AccessDeniedException (HTTP 400): User: arn:aws:sts::1:assumed-role/wsgi-role/i-0 is not authorized to perform: ssm:GetParameter"},
		{"S3 AccessDenied is not retried", s3Args, "GetObject",
			[]awsFault{{Status: 403, Code: "AccessDenied", Message: "Access Denied"}}, 1, 1,
			"wsgi-aws: get-object s3://b/k: AccessDenied (HTTP 403): Access Denied"},
		{"gives up after --retries", func(dir string) []string { return append([]string{"--retries", "2"}, ssmArgs(dir)...) }, "GetParameter",
			[]awsFault{{Status: 503, Code: "ServiceUnavailable", Message: "down"}, {Status: 503, Code: "ServiceUnavailable", Message: "down"}, {Status: 503, Code: "ServiceUnavailable", Message: "down"}, {}}, 3, 1,
			"wsgi-aws: secrets-env DB (ssm:/shop/db): ServiceUnavailable (HTTP 503): down (gave up after 3 attempts)"},
		{"a timeout is retried", func(dir string) []string { return append([]string{"--timeout", "0.5"}, smArgs(dir)...) }, "GetSecretValue",
			[]awsFault{{Delay: 1500 * time.Millisecond}}, 2, 0, ""},
		// Each piece comes within the timeout, the whole download does not.
		{"a download slower than --timeout is retried", func(dir string) []string { return append([]string{"--timeout", "1"}, s3Args(dir)...) }, "GetObject",
			[]awsFault{{Trickle: 250 * time.Millisecond}}, 2, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAWSFakes(t)
			f.aws.params["/shop/db"] = "S3CR3T-db"
			f.aws.secrets["shop/api"] = "S3CR3T-api"
			f.aws.objects["b/k"] = bytes.Repeat([]byte("archive "), 100_000)
			f.aws.instances[f.imds.instanceID] = [2]string{"web", "InService"}
			f.aws.setFault(func(c awsCall, n int) *awsFault {
				if c.Action != tc.action || n > len(tc.faults) {
					return nil
				}
				return &tc.faults[n-1]
			})
			dir := t.TempDir()
			r := f.run(t, nil, append([]string{"--backoff", "0.01"}, tc.args(dir)...)...)
			if tc.code == 0 {
				r.mustSucceed(t)
			} else {
				r.mustFail(t, tc.code, tc.stderr)
			}
			n := 0
			for _, c := range f.aws.Calls() {
				if c.Action == tc.action {
					n++
				}
			}
			if n != tc.calls {
				t.Errorf("%d calls of %s, want %d (%v)", n, tc.action, tc.calls, f.aws.Actions())
			}
			if strings.Contains(r.stdout+r.stderr, "S3CR3T") {
				t.Errorf("a secret in the output:\n%s%s", r.stdout, r.stderr)
			}
		})
	}
}

func ssmArgs(dir string) []string {
	return []string{"secrets-env", filepath.Join(dir, "env"), "DB=ssm:/shop/db"}
}
func smArgs(dir string) []string {
	return []string{"secrets-env", filepath.Join(dir, "env"), "API=secretsmanager:shop/api"}
}
func s3Args(dir string) []string {
	return []string{"get-object", "s3://b/k", filepath.Join(dir, "out")}
}
func lifecycleArgs(string) []string {
	return []string{"complete-lifecycle-action", "--hook", "launch", "--result", "CONTINUE"}
}

func TestAWSHelperConnectionRefused(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	r := f.run(t, []string{"AWS_ENDPOINT_URL_SSM=http://" + dead}, "--retries", "1", "--backoff", "0.01",
		"secrets-env", filepath.Join(t.TempDir(), "env"), "DB=ssm:/shop/db")
	r.mustFail(t, 1, "wsgi-aws: secrets-env DB (ssm:/shop/db): POST "+dead+": Connection refused (gave up after 2 attempts)")
	if !strings.Contains(r.stdout, "retry 1 of 1") {
		t.Errorf("the retry is not reported on stdout: %q", r.stdout)
	}
}

// TestAWSHelperExpiredCredentials: after ExpiredToken the helper reads the role's credentials
// again (and a refused IMDS session token makes it take a new one).
func TestAWSHelperExpiredCredentials(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	f.aws.params["/a"] = "S3CR3T-a"
	f.aws.expired["session-token-1"] = true
	f.aws.setFault(func(c awsCall, n int) *awsFault {
		if c.Token == "session-token-1" {
			f.imds.expireToken()
			f.imds.rotate()
		}
		return nil
	})
	out := filepath.Join(t.TempDir(), "env")
	r := f.run(t, nil, "--retries", "1", "secrets-env", out, "A=ssm:/a")
	r.mustSucceed(t)
	if !strings.Contains(r.stdout, "ExpiredTokenException; reading the role's credentials again") {
		t.Errorf("stdout: %q", r.stdout)
	}
	calls := f.aws.Calls()
	if len(calls) != 2 || calls[0].Token != "session-token-1" || calls[1].Token != "session-token-2" {
		t.Errorf("calls = %+v", calls)
	}
	if f.imds.credReads != 2 {
		t.Errorf("credentials read %d times, want 2", f.imds.credReads)
	}
	if b, _ := os.ReadFile(out); string(b) != "A=\"S3CR3T-a\"\n" {
		t.Errorf("file: %q", b)
	}
}

// TestAWSHelperSignatureChecked proves the stand-in's signature check can fail: the server
// believes another secret key than IMDS handed out.
func TestAWSHelperSignatureChecked(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	f.aws.params["/a"] = "v"
	f.aws.secretFor["AKIDTEST1"] = "another secret"
	r := f.run(t, nil, "secrets-env", filepath.Join(t.TempDir(), "env"), "A=ssm:/a")
	r.mustFail(t, 1, "wsgi-aws: secrets-env A (ssm:/a): SignatureDoesNotMatch (HTTP 403): The request signature we calculated does not match the signature you provided.")
	f.aws.mu.Lock()
	if len(f.aws.badSig) != 1 || !strings.Contains(f.aws.badSig[0], "signature mismatch") {
		t.Errorf("bad signatures = %q", f.aws.badSig)
	}
	f.aws.badSig = nil
	f.aws.mu.Unlock()
}

func TestAWSHelperRegion(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		env      []string
		args     []string
		noRegion bool
		want     string
	}{
		{"from IMDS", nil, nil, false, "eu-west-3"},
		{"from the identity document", nil, nil, true, "eu-west-3"},
		{"AWS_DEFAULT_REGION", []string{"AWS_DEFAULT_REGION=ap-south-1"}, nil, false, "ap-south-1"},
		{"AWS_REGION before AWS_DEFAULT_REGION", []string{"AWS_DEFAULT_REGION=ap-south-1", "AWS_REGION=us-east-2"}, nil, false, "us-east-2"},
		{"--region first", []string{"AWS_REGION=us-east-2"}, []string{"--region", "sa-east-1"}, false, "sa-east-1"},
		{"--region after the command", nil, []string{"secrets-env", "--region", "ca-central-1"}, false, "ca-central-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAWSFakes(t)
			f.imds.noRegion = tc.noRegion
			f.aws.params["/a"] = "v"
			args := append(slices.Clone(tc.args), "secrets-env", filepath.Join(t.TempDir(), "env"), "A=ssm:/a")
			if len(tc.args) > 0 && tc.args[0] == "secrets-env" {
				args = append(slices.Clone(tc.args), filepath.Join(t.TempDir(), "env"), "A=ssm:/a")
			}
			f.run(t, tc.env, args...).mustSucceed(t)
			if c := f.aws.Calls(); len(c) != 1 || c[0].Region != tc.want {
				t.Errorf("calls = %+v, want region %s", c, tc.want)
			}
		})
	}
}

func TestAWSHelperNoRole(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	f.imds.noRole = true
	r := f.run(t, nil, "secrets-env", filepath.Join(t.TempDir(), "env"), "A=ssm:/a")
	r.mustFail(t, 1, "wsgi-aws: instance metadata (IMDSv2) at "+f.imds.srv.URL+": no IAM role is attached to this instance (nothing at /latest/meta-data/iam/security-credentials/): attach an instance profile")
}

func TestAWSHelperCompleteLifecycleAction(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		instance [2]string // group, state; empty: not in a group
		result   string
		complete bool
		stdout   string
	}{
		{"waiting", [2]string{"web-blue", "Pending:Wait"}, "CONTINUE", true,
			"wsgi-aws: completed lifecycle hook wsgi-launch of instance i-0123456789abcdef0 in Auto Scaling group web-blue with CONTINUE\n"},
		{"waiting to enter the warm pool", [2]string{"web", "Warmed:Pending:Wait"}, "ABANDON", true,
			"wsgi-aws: completed lifecycle hook wsgi-launch of instance i-0123456789abcdef0 in Auto Scaling group web with ABANDON\n"},
		{"in service", [2]string{"web", "InService"}, "CONTINUE", false,
			"wsgi-aws: instance i-0123456789abcdef0 in Auto Scaling group web is InService, not waiting on a lifecycle hook: nothing to complete\n"},
		{"not in a group", [2]string{}, "CONTINUE", false,
			"wsgi-aws: instance i-0123456789abcdef0 is not in an Auto Scaling group: no lifecycle action to complete\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAWSFakes(t)
			if tc.instance[0] != "" {
				f.aws.instances[f.imds.instanceID] = tc.instance
			}
			r := f.run(t, nil, "complete-lifecycle-action", "--hook", "wsgi-launch", "--result", tc.result)
			r.mustSucceed(t)
			if r.stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.stdout, tc.stdout)
			}
			f.aws.mu.Lock()
			defer f.aws.mu.Unlock()
			if !tc.complete {
				if len(f.aws.completed) != 0 {
					t.Errorf("completed %v", f.aws.completed)
				}
				return
			}
			want := url.Values{"Action": {"CompleteLifecycleAction"}, "Version": {"2011-01-01"},
				"AutoScalingGroupName": {tc.instance[0]}, "LifecycleHookName": {"wsgi-launch"},
				"InstanceId": {"i-0123456789abcdef0"}, "LifecycleActionResult": {tc.result}}
			if len(f.aws.completed) != 1 || f.aws.completed[0].Encode() != want.Encode() {
				t.Errorf("completed %v, want %v", f.aws.completed, want)
			}
			if c := f.aws.calls; c[0].Form.Get("InstanceIds.member.1") != "i-0123456789abcdef0" || c[0].Service != "autoscaling" {
				t.Errorf("describe call %+v", c[0])
			}
		})
	}
}

func TestAWSHelperUsage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"secrets-env", "/tmp/x", "1BAD=ssm:/a"},
			"wsgi-aws: 1BAD=ssm:/a: must be NAME=ssm:/parameter/name or NAME=secretsmanager:name-or-arn, with NAME a variable name (letters, digits, _; not starting with a digit)"},
		{[]string{"secrets-env", "/tmp/x", "A=vault:/a"},
			"wsgi-aws: A: the reference must be ssm:/parameter/name or secretsmanager:name-or-arn, not vault:/a"},
		{[]string{"secrets-env", "/tmp/x", "A=ssm:/a", "A=ssm:/b"}, "wsgi-aws: A: named twice"},
		{[]string{"get-object", "https://b/k", "/tmp/x"}, "wsgi-aws: https://b/k: must be s3://BUCKET/KEY"},
		{[]string{"get-object", "s3://bucket-only", "/tmp/x"}, "wsgi-aws: s3://bucket-only: must be s3://BUCKET/KEY with both a bucket and a key"},
		{[]string{"complete-lifecycle-action", "--hook", "h", "--result", "continue"},
			"wsgi-aws: usage: argument --result: invalid choice: 'continue' (choose from 'CONTINUE', 'ABANDON') (see wsgi-aws complete-lifecycle-action --help)"},
		{[]string{"--retries", "x", "secrets-env"}, "wsgi-aws: usage: argument --retries: must be a whole number, got 'x' (see wsgi-aws --help)"},
		{[]string{"secrets-env", "/tmp/x"}, "wsgi-aws: usage: the following arguments are required: NAME=REF (see wsgi-aws secrets-env --help)"},
		{nil, "wsgi-aws: usage: the following arguments are required: COMMAND (see wsgi-aws --help)"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			f := newAWSFakes(t)
			f.run(t, nil, tc.args...).mustFail(t, 2, tc.want)
			if len(f.imds.requests)+len(f.aws.Calls()) != 0 {
				t.Errorf("a usage error made requests: %v %v", f.imds.requests, f.aws.Actions())
			}
		})
	}
}

func TestAWSHelperHelp(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	r := f.run(t, nil, "--help")
	r.mustSucceed(t)
	for _, want := range []string{"get-object", "secrets-env", "complete-lifecycle-action", "AWS_ENDPOINT_URL_SECRETS_MANAGER",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT", "--retries N", "--timeout SECONDS"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help does not mention %s:\n%s", want, r.stdout)
		}
	}
}

// TestAWSHelperEndpoints checks the URLs the helper builds for AWS's own regional endpoints,
// which no test here can reach, by calling its functions.
func TestAWSHelperEndpoints(t *testing.T) {
	t.Parallel()
	py := helperPython(t)
	const prog = `
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("wsgiaws", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
out = []
for c in json.loads(sys.stdin.read()):
    try:
        if c["service"] == "s3":
            out.append(m.s3_object_url(c["bucket"], c["key"], c["region"], c["env"]))
        else:
            out.append(m.service_endpoint(c["service"], c["region"], c["env"]))
    except m.Failure as e:
        out.append("error: " + str(e))
print(json.dumps(out))
`
	type tcase struct {
		Service string            `json:"service"`
		Bucket  string            `json:"bucket"`
		Key     string            `json:"key"`
		Region  string            `json:"region"`
		Env     map[string]string `json:"env"`
		want    string
	}
	vpce := "https://bucket.vpce-1a2b3c4d-5e6f.s3.eu-west-1.vpce.amazonaws.com"
	cases := []tcase{
		{Service: "s3", Bucket: "my-bucket", Key: "a b/ü+x~y", Region: "eu-west-1",
			want: "https://my-bucket.s3.eu-west-1.amazonaws.com/a%20b/%C3%BC%2Bx~y"},
		{Service: "s3", Bucket: "my.dotted.bucket", Key: "k", Region: "eu-west-1",
			want: "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/k"},
		{Service: "s3", Bucket: "b-1", Key: "k", Region: "cn-north-1", want: "https://b-1.s3.cn-north-1.amazonaws.com.cn/k"},
		{Service: "s3", Bucket: "my-bucket", Key: "k", Region: "eu-west-1", Env: map[string]string{"AWS_ENDPOINT_URL_S3": vpce + "/"},
			want: vpce + "/my-bucket/k"},
		{Service: "s3", Bucket: "my-bucket", Key: "k", Region: "eu-west-1", Env: map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"},
			want: "http://127.0.0.1:5000/my-bucket/k"},
		{Service: "ssm", Region: "eu-west-1", want: "https://ssm.eu-west-1.amazonaws.com"},
		{Service: "secretsmanager", Region: "us-gov-west-1", want: "https://secretsmanager.us-gov-west-1.amazonaws.com"},
		{Service: "autoscaling", Region: "ap-southeast-2", want: "https://autoscaling.ap-southeast-2.amazonaws.com"},
		{Service: "ssm", Region: "eu-west-1", Env: map[string]string{"AWS_ENDPOINT_URL": "http://all", "AWS_ENDPOINT_URL_SSM": "https://vpce-ssm.example"},
			want: "https://vpce-ssm.example"},
		{Service: "secretsmanager", Region: "eu-west-1", Env: map[string]string{"AWS_ENDPOINT_URL": "http://all", "AWS_ENDPOINT_URL_SECRETS_MANAGER": "https://sm"},
			want: "https://sm"},
		{Service: "autoscaling", Region: "eu-west-1", Env: map[string]string{"AWS_ENDPOINT_URL_AUTO_SCALING": "https://asg"}, want: "https://asg"},
		{Service: "ssm", Region: "eu-west-1", Env: map[string]string{"AWS_ENDPOINT_URL": "http://all", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
			want: "https://ssm.eu-west-1.amazonaws.com"},
		{Service: "ssm", Region: "eu-west-1", Env: map[string]string{"AWS_ENDPOINT_URL_SSM": "ssm.eu-west-1.amazonaws.com"},
			want: "error: AWS_ENDPOINT_URL_SSM=ssm.eu-west-1.amazonaws.com: must be an http:// or https:// URL with a host and no query"},
	}
	for i := range cases {
		if cases[i].Env == nil {
			cases[i].Env = map[string]string{}
		}
	}
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-ISB", "-c", prog, awsHelperFile)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// -B: loading the helper as a module must not leave files/__pycache__ in the source tree.
	if _, err := os.Stat(filepath.Join(filepath.Dir(awsHelperFile), "__pycache__")); err == nil {
		t.Error("files/__pycache__ was written")
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(cases) {
		t.Fatalf("%v: %s", err, out)
	}
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("%s %s %q in %s with %v:\n got %s\nwant %s", c.Service, c.Bucket, c.Key, c.Region, c.Env, got[i], c.want)
		}
	}
}

// TestAWSHelperPython39 parses the helper with Python 3.9's grammar, the oldest the images carry
// (Amazon Linux 2023). Library calls newer than 3.9 are not caught here: run the tests with
// WSGI_AWS_PYTHON=python3.9 for that.
func TestAWSHelperPython39(t *testing.T) {
	t.Parallel()
	py := helperPython(t)
	src, err := os.ReadFile(awsHelperFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(src, []byte("#!/usr/bin/python3 -IS\n")) {
		t.Errorf("first line %q: want #!/usr/bin/python3 -IS", bytes.SplitN(src, []byte("\n"), 2)[0])
	}
	cmd := exec.Command(py, "-ISB", "-c", `import ast, sys; ast.parse(open(sys.argv[1]).read(), feature_version=(3, 9))`, awsHelperFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("not Python 3.9 syntax: %v\n%s", err, out)
	}
	for _, imp := range []string{"boto", "requests", "botocore"} {
		if bytes.Contains(src, []byte("import "+imp)) {
			t.Errorf("imports %s: the helper uses the standard library only", imp)
		}
	}
}

// TestAWSHelperClockSkew: a clock two hours behind AWS's is corrected from the answer's Date.
func TestAWSHelperClockSkew(t *testing.T) {
	t.Parallel()
	f := newAWSFakes(t)
	f.aws.clockAhead = 2 * time.Hour
	f.aws.objects["b/k"] = []byte("archive")
	out := filepath.Join(t.TempDir(), "out")
	r := f.run(t, nil, "--retries", "1", "get-object", "s3://b/k", out)
	r.mustSucceed(t)
	if !strings.Contains(r.stdout, "RequestTimeTooSkewed; the clock is 7") {
		t.Errorf("stdout: %q", r.stdout)
	}
	if got, _ := os.ReadFile(out); string(got) != "archive" {
		t.Errorf("object %q", got)
	}
	if f.aws.skewed != 1 || len(f.aws.Calls()) != 1 {
		t.Errorf("refused as skewed %d times, served %d", f.aws.skewed, len(f.aws.Calls()))
	}
	for _, ua := range f.aws.userAgents {
		if ua != "wsgi-aws (packer-plugin-wsgi)" {
			t.Errorf("User-Agent %q", ua)
		}
	}
}

// TestAWSHelperS3OtherRegion: a bucket in another region than the instance answers with its
// region (x-amz-bucket-region); on AWS's endpoints the helper asks again there. The request is
// stubbed: no test here reaches AWS's own endpoints.
func TestAWSHelperS3OtherRegion(t *testing.T) {
	t.Parallel()
	py := helperPython(t)
	const prog = `
import importlib.util, sys, types
spec = importlib.util.spec_from_file_location("wsgiaws", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
seen = []
class Resp:
    headers = {"Content-Length": "2"}
    def __init__(self): self.data = [b"ok", b""]
    def read(self, n): return self.data.pop(0)
def request(service, what, method, url, headers=None, body=b"", sink=None, region=None):
    seen.append((url, region))
    if len(seen) == 1:
        raise m.AWSError(301, "PermanentRedirect", "use the right endpoint", {"x-amz-bucket-region": "us-west-2"})
    return sink(Resp(), float("inf"))
client = types.SimpleNamespace(region="eu-west-1", timeout=10, env=dict(e.split("=", 1) for e in sys.argv[3:]), request=request)
try:
    m.cmd_get_object(client, types.SimpleNamespace(uri="s3://art-bucket/app.tgz", outfile=sys.argv[2]))
except m.Failure as e:
    seen.append(str(e))
print(seen)
`
	out := filepath.Join(t.TempDir(), "app.tgz")
	for _, tc := range []struct{ env, want string }{
		{"", "[('https://art-bucket.s3.eu-west-1.amazonaws.com/app.tgz', None), ('https://art-bucket.s3.us-west-2.amazonaws.com/app.tgz', 'us-west-2')]\n"},
		// A custom endpoint is the user's choice: not second-guessed.
		{"AWS_ENDPOINT_URL_S3=https://vpce", "[('https://vpce/art-bucket/app.tgz', None), 'PermanentRedirect (HTTP 301): use the right endpoint']\n"},
	} {
		args := []string{"-ISB", "-c", prog, awsHelperFile, out}
		if tc.env != "" {
			args = append(args, tc.env)
		}
		got, err := exec.Command(py, args...).Output()
		if err != nil {
			t.Fatalf("%v: %s", err, got)
		}
		lines := strings.SplitAfter(strings.TrimSuffix(string(got), "\n"), "\n")
		if last := lines[len(lines)-1] + "\n"; last != tc.want {
			t.Errorf("with %q:\n got %s\nwant %s", tc.env, got, tc.want)
		}
	}
}
