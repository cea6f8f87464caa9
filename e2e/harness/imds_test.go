package harness

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestIMDS(t *testing.T) {
	s, err := startIMDS(Metadata{Region: "eu-west-1"}, "i-0abc", []byte("#cloud-config\n"), func() string { return "10.213.7.2" })
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	base := "http://" + s.Addr()
	do := func(method, path string, hdr map[string]string) (int, string, http.Header) {
		t.Helper()
		req := httptest.NewRequest(method, base+path, nil)
		req.RequestURI = ""
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	for _, tc := range []struct {
		name   string
		method string
		hdr    map[string]string
		want   int
	}{
		{"no TTL", http.MethodPut, nil, 400},
		{"TTL 0", http.MethodPut, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "0"}, 400},
		{"TTL over 6 h", http.MethodPut, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21601"}, 400},
		{"through a proxy", http.MethodPut, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.1"}, 403},
		{"GET", http.MethodGet, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}, 405},
	} {
		if code, _, _ := do(tc.method, "/latest/api/token", tc.hdr); code != tc.want {
			t.Errorf("token %s: %d, want %d", tc.name, code, tc.want)
		}
	}
	if code, _, _ := do(http.MethodGet, "/latest/meta-data/instance-id", nil); code != 401 {
		t.Errorf("GET without a token: %d, want 401", code)
	}
	if code, _, _ := do(http.MethodGet, "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": "made-up"}); code != 401 {
		t.Errorf("GET with a made-up token: %d, want 401", code)
	}
	code, token, hdr := do(http.MethodPut, "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "120"})
	if code != 200 || token == "" || hdr.Get("X-aws-ec2-metadata-token-ttl-seconds") != "120" {
		t.Fatalf("token: %d %q ttl %q", code, token, hdr.Get("X-aws-ec2-metadata-token-ttl-seconds"))
	}
	auth := map[string]string{"X-aws-ec2-metadata-token": token}
	md := s.Metadata()
	for path, want := range map[string]string{
		"/latest/meta-data/instance-id":                 "i-0abc",
		"/latest/meta-data/placement/region":            "eu-west-1",
		"/latest/meta-data/placement/availability-zone": "eu-west-1a",
		"/latest/meta-data/local-ipv4":                  "10.213.7.2",
		"/latest/meta-data/iam/security-credentials/":   "wsgi-e2e-instance",
		"/latest/user-data":                             "#cloud-config\n",
	} {
		if code, body, _ := do(http.MethodGet, path, auth); code != 200 || body != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, code, body, want)
		}
	}
	_, body, _ := do(http.MethodGet, "/latest/meta-data/iam/security-credentials/wsgi-e2e-instance", auth)
	var c map[string]string
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	if c["Code"] != "Success" || c["AccessKeyId"] != md.Credentials.AccessKeyID || c["SecretAccessKey"] != md.Credentials.SecretAccessKey ||
		c["Token"] != md.Credentials.Token || c["Expiration"] == "" || !strings.HasPrefix(c["AccessKeyId"], "ASIA") {
		t.Errorf("credentials: %v", c)
	}
	_, body, _ = do(http.MethodGet, "/latest/dynamic/instance-identity/document", auth)
	var doc map[string]string
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["instanceId"] != "i-0abc" || doc["region"] != "eu-west-1" || doc["availabilityZone"] != "eu-west-1a" || doc["privateIp"] != "10.213.7.2" {
		t.Errorf("identity document: %v", doc)
	}
	if code, _, _ := do(http.MethodGet, "/latest/meta-data/iam/security-credentials/other-role", auth); code != 404 {
		t.Errorf("another role: %d, want 404", code)
	}
	calls := s.Calls()
	if len(calls) == 0 || calls[len(calls)-1].String() != "GET /latest/meta-data/iam/security-credentials/other-role token=true -> 404" {
		t.Errorf("last call: %v", calls)
	}

	noRole, err := startIMDS(Metadata{NoRole: true}, "i-0def", nil, func() string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer noRole.close()
	base = "http://" + noRole.Addr()
	_, token, _ = do(http.MethodPut, "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
	for _, p := range []string{"/latest/meta-data/iam/security-credentials/", "/latest/user-data"} {
		if code, _, _ := do(http.MethodGet, p, map[string]string{"X-aws-ec2-metadata-token": token}); code != 404 {
			t.Errorf("no role, GET %s: %d, want 404", p, code)
		}
	}
}

func TestRules(t *testing.T) {
	h := &hostNet{ifname: "ve-wsgi-a", table: "wsgi_e2e_wsgi_a", imdsPort: 40001}
	h.subnet = mustPrefix("10.213.5.0/24")
	got := h.rules([]int{41000, 41001})
	for _, want := range []string{
		`iifname "ve-wsgi-a" ip daddr 169.254.169.254 tcp dport 80 dnat to 127.0.0.1:40001`,
		`iifname "ve-wsgi-a" ip daddr 10.213.0.1 tcp dport 41000 dnat to 127.0.0.1:41000`,
		`iifname "ve-wsgi-a" ip daddr 10.213.0.1 tcp dport 41001 dnat to 127.0.0.1:41001`,
		`iifname "ve-wsgi-a" ip daddr { ` + privateDests + ` } reject`,
		`ip saddr 10.213.5.0/24 ip daddr != 10.213.5.0/24 masquerade`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rules lack %q:\n%s", want, got)
		}
	}
}

func TestPublishRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://10.0.0.5:80", "host must be an IPv4 loopback address"},
		{"http://localhost:80", "host must be an IPv4 loopback address"},
		{"http://127.0.0.1", "needs an explicit port"},
		{"http://127.0.0.2:80", "the DNAT goes to 127.0.0.1"},
	} {
		if _, err := Publish(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Publish(%q): %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	got, err := Publish("http://127.0.0.1:45678/base")
	if err != nil || got != "http://10.213.0.1:45678/base" {
		t.Errorf("Publish: %q %v", got, err)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
