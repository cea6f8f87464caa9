package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MetadataAddr is the instance metadata address as a machine sees it. The
// harness never puts it on a host interface (on an EC2 host that would hide
// the host's own metadata service); each machine's nft table sends the
// machine's traffic to MetadataAddr:80 to that machine's IMDS on loopback.
const MetadataAddr = "169.254.169.254"

// Metadata is what a machine's instance metadata service tells about it.
// Zero fields get the defaults named.
type Metadata struct {
	// Region, default "us-east-1".
	Region string
	// AvailabilityZone, default Region + "a".
	AvailabilityZone string
	// AccountID in the identity document, default "123456789012".
	AccountID string
	// ImageID in the identity document, default "ami-0e2e0000000000000".
	ImageID string
	// InstanceType, default "t3.small".
	InstanceType string
	// Role is the instance profile's role, served under
	// iam/security-credentials/. Default "wsgi-e2e-instance"; NoRole
	// serves none (iam/ is then 404, as on an instance without a profile).
	Role   string
	NoRole bool
	// Credentials of the role; the default is a made-up temporary key pair
	// that moto accepts.
	Credentials Credentials
}

// Credentials are role credentials as IMDS hands them out.
type Credentials struct {
	AccessKeyID, SecretAccessKey, Token string
}

func (md Metadata) withDefaults() Metadata {
	if md.Region == "" {
		md.Region = "us-east-1"
	}
	if md.AvailabilityZone == "" {
		md.AvailabilityZone = md.Region + "a"
	}
	if md.AccountID == "" {
		md.AccountID = "123456789012"
	}
	if md.ImageID == "" {
		md.ImageID = "ami-0e2e0000000000000"
	}
	if md.InstanceType == "" {
		md.InstanceType = "t3.small"
	}
	if md.Role == "" {
		md.Role = "wsgi-e2e-instance"
	}
	if md.Credentials == (Credentials{}) {
		md.Credentials = Credentials{
			AccessKeyID:     "ASIAE2E" + strings.ToUpper(randomHex(7)),
			SecretAccessKey: "e2e-secret-" + randomHex(12),
			Token:           "e2e-session-" + randomHex(24),
		}
	}
	return md
}

// IMDS is one machine's instance metadata service: IMDSv2 only (a GET
// without a valid session token is 401, as on an instance launched with
// HttpTokens=required), on a loopback port of the test process.
type IMDS struct {
	md         Metadata
	instanceID string
	userData   []byte
	ip         func() string
	ln         net.Listener
	srv        *http.Server

	mu     sync.Mutex
	tokens map[string]time.Time // token -> expiry
	calls  []IMDSCall
}

// IMDSCall is one request the service answered.
type IMDSCall struct {
	Method, Path string
	// Token says the request carried a valid session token.
	Token bool
	// Status is the HTTP status of the answer.
	Status int
}

func (c IMDSCall) String() string {
	return fmt.Sprintf("%s %s token=%v -> %d", c.Method, c.Path, c.Token, c.Status)
}

// startIMDS serves md on 127.0.0.1 on a free port.
func startIMDS(md Metadata, instanceID string, userData []byte, ip func() string) (*IMDS, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("imds: %w", err)
	}
	s := &IMDS{md: md.withDefaults(), instanceID: instanceID, userData: userData, ip: ip, ln: ln, tokens: map[string]time.Time{}}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the loopback address the service listens on (host:port).
func (s *IMDS) Addr() string { return s.ln.Addr().String() }

// Port is its loopback port.
func (s *IMDS) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Metadata is what it serves, defaults filled in (the role's credentials,
// for example, to check what a signed request carried).
func (s *IMDS) Metadata() Metadata { return s.md }

// Calls returns the requests answered so far, oldest first.
func (s *IMDS) Calls() []IMDSCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]IMDSCall(nil), s.calls...)
}

func (s *IMDS) close() { _ = s.srv.Close() }

const (
	tokenHeader    = "X-Aws-Ec2-Metadata-Token"
	tokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

func (s *IMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	valid := s.validToken(r.Header.Get(tokenHeader))
	s.serve(rec, r, valid)
	s.mu.Lock()
	s.calls = append(s.calls, IMDSCall{Method: r.Method, Path: r.URL.Path, Token: valid, Status: rec.status})
	s.mu.Unlock()
}

func (s *IMDS) serve(w http.ResponseWriter, r *http.Request, valid bool) {
	if r.URL.Path == "/latest/api/token" {
		s.token(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !valid {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	body, ctype, ok := s.lookup(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ctype)
	_, _ = w.Write(body)
}

// token answers PUT /latest/api/token as IMDS does: the TTL header is
// required (1 to 21600 seconds), and a request that went through a proxy
// (X-Forwarded-For) is refused.
func (s *IMDS) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(tokenTTLHeader))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	tok := "e2e-" + randomHex(24)
	s.mu.Lock()
	s.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
	s.mu.Unlock()
	w.Header().Set(tokenTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(tok))
}

func (s *IMDS) validToken(tok string) bool {
	if tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	return ok && time.Now().Before(exp)
}

// lookup returns the document at path: the categories EC2 serves that the
// stack and its tests read.
func (s *IMDS) lookup(path string) ([]byte, string, bool) {
	text := func(v string) ([]byte, string, bool) { return []byte(v), "text/plain", true }
	md := s.md
	ip := s.ip()
	switch strings.TrimPrefix(path, "/latest") {
	case "/meta-data", "/meta-data/":
		list := "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-ipv4\nplacement/\n"
		if !md.NoRole {
			list += "iam/\n"
		}
		return text(list)
	case "/meta-data/ami-id":
		return text(md.ImageID)
	case "/meta-data/instance-id":
		return text(s.instanceID)
	case "/meta-data/instance-type":
		return text(md.InstanceType)
	case "/meta-data/local-ipv4":
		return text(ip)
	case "/meta-data/hostname":
		return text("ip-" + strings.ReplaceAll(ip, ".", "-") + ".ec2.internal")
	case "/meta-data/placement", "/meta-data/placement/":
		return text("availability-zone\nregion\n")
	case "/meta-data/placement/region":
		return text(md.Region)
	case "/meta-data/placement/availability-zone":
		return text(md.AvailabilityZone)
	case "/user-data":
		if len(s.userData) == 0 {
			return nil, "", false
		}
		return s.userData, "application/octet-stream", true
	case "/dynamic/instance-identity/document":
		b, _ := json.MarshalIndent(map[string]any{
			"accountId": md.AccountID, "architecture": "x86_64", "availabilityZone": md.AvailabilityZone,
			"imageId": md.ImageID, "instanceId": s.instanceID, "instanceType": md.InstanceType,
			"pendingTime": time.Now().UTC().Format(time.RFC3339), "privateIp": ip, "region": md.Region,
			"version": "2017-09-30",
		}, "", "  ")
		return b, "application/json", true
	}
	if md.NoRole {
		return nil, "", false
	}
	switch strings.TrimPrefix(path, "/latest") {
	case "/meta-data/iam", "/meta-data/iam/":
		return text("info\nsecurity-credentials/\n")
	case "/meta-data/iam/info":
		b, _ := json.MarshalIndent(map[string]any{
			"Code": "Success", "LastUpdated": time.Now().UTC().Format(time.RFC3339),
			"InstanceProfileArn": "arn:aws:iam::" + md.AccountID + ":instance-profile/" + md.Role,
			"InstanceProfileId":  "AIPAE2E" + strings.ToUpper(randomHex(6)),
		}, "", "  ")
		return b, "application/json", true
	case "/meta-data/iam/security-credentials", "/meta-data/iam/security-credentials/":
		return text(md.Role)
	case "/meta-data/iam/security-credentials/" + md.Role:
		now := time.Now().UTC()
		b, _ := json.MarshalIndent(map[string]any{
			"Code": "Success", "LastUpdated": now.Format(time.RFC3339), "Type": "AWS-HMAC",
			"AccessKeyId": md.Credentials.AccessKeyID, "SecretAccessKey": md.Credentials.SecretAccessKey,
			"Token": md.Credentials.Token, "Expiration": now.Add(6 * time.Hour).Format(time.RFC3339),
		}, "", "  ")
		return b, "application/json", true
	}
	return nil, "", false
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
