// Package awsproxy is a reverse proxy for end-to-end tests that stands in
// front of an AWS API emulator (moto). It forwards every request, except
// that a test can answer chosen actions itself (calls the emulator lacks)
// or intercept any call (fault injection). It records every call it sees.
//
//	p, _ := awsproxy.Start(motoURL)
//	defer p.Close()
//	p.Handle("autoscaling", "StartInstanceRefresh", fn)
//	p.Intercept(func(w http.ResponseWriter, c *awsproxy.Call) bool { ... })
//
// Point the SDK's custom endpoints at p.URL. It serves loopback only.
//
// Built in, after the interceptors (which may fail such a call first) and
// before the handlers: EC2's CreateImage and CopyImage take their tag
// specifications, image and snapshot, as EC2 does (ImageTagSpecs), which
// moto does not.
package awsproxy

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
)

// Call is one request as the proxy saw it.
type Call struct {
	// Service is the signing name from the Authorization header: ec2,
	// autoscaling, ssm, sts, ...
	Service string
	// Region is the signing region.
	Region string
	// Action is the Query API Action, or the operation of a JSON API
	// (the part of X-Amz-Target after the dot).
	Action string
	// Form holds the Query API parameters (empty for JSON APIs).
	Form url.Values
	// Body is the raw request body.
	Body []byte
	// Answered is true when a handler or interceptor answered instead of
	// the emulator.
	Answered bool
}

// HandlerFunc answers one action in place of the emulator.
type HandlerFunc func(w http.ResponseWriter, c *Call)

// Interceptor sees every call before it is forwarded; it returns true when
// it has written the answer itself.
type Interceptor func(w http.ResponseWriter, c *Call) bool

// Proxy forwards to the emulator unless a handler or interceptor answers.
type Proxy struct {
	// URL is the base URL to use as the custom endpoint.
	URL string

	upstream *url.URL
	rp       *httputil.ReverseProxy
	srv      *http.Server
	ln       net.Listener

	builtin Interceptor // what moto lacks and every test needs

	mu           sync.Mutex
	handlers     map[string]HandlerFunc
	interceptors []Interceptor
	observers    []Observer
	calls        []Call
}

// Observer sees every call after it has been answered, by the emulator or
// by the proxy: a test acts on "right after action X" there.
type Observer func(c *Call)

// Start listens on a free loopback port and forwards to upstream.
func Start(upstream string) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		URL:      "http://" + ln.Addr().String(),
		upstream: u,
		rp:       httputil.NewSingleHostReverseProxy(u),
		ln:       ln,
		handlers: map[string]HandlerFunc{},
		builtin:  ImageTagSpecs(&Moto{URL: strings.TrimSuffix(upstream, "/")}),
	}
	p.srv = &http.Server{Handler: p}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

// Handle answers service's action (e.g. "autoscaling", "StartInstanceRefresh")
// with fn instead of forwarding it. An empty service matches any.
func (p *Proxy) Handle(service, action string, fn HandlerFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handlers[service+"/"+action] = fn
}

// Intercept adds an interceptor; interceptors run in order, before handlers.
func (p *Proxy) Intercept(fn Interceptor) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.interceptors = append(p.interceptors, fn)
}

// Observe adds an observer; observers run in order once a call is answered.
func (p *Proxy) Observe(fn Observer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.observers = append(p.observers, fn)
}

// Reset drops the recorded calls, handlers, interceptors and observers.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = nil
	p.handlers = map[string]HandlerFunc{}
	p.interceptors = nil
	p.observers = nil
}

// Calls returns a copy of the calls seen so far.
func (p *Proxy) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Call(nil), p.calls...)
}

// Actions lists "service:Action" of every call so far, in order.
func (p *Proxy) Actions() []string {
	var out []string
	for _, c := range p.Calls() {
		out = append(out, c.Service+":"+c.Action)
	}
	return out
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	c := parseCall(r, body)

	p.mu.Lock()
	interceptors := append([]Interceptor(nil), p.interceptors...)
	observers := append([]Observer(nil), p.observers...)
	h := p.handlers[c.Service+"/"+c.Action]
	if h == nil {
		h = p.handlers["/"+c.Action]
	}
	p.mu.Unlock()

	answered := false
	for _, ic := range interceptors {
		if ic(w, &c) {
			answered = true
			break
		}
	}
	if !answered && p.builtin(w, &c) {
		answered = true
	}
	if !answered && h != nil {
		h(w, &c)
		answered = true
	}
	c.Answered = answered
	p.mu.Lock()
	p.calls = append(p.calls, c)
	p.mu.Unlock()
	if !answered {
		p.rp.ServeHTTP(w, r)
	}
	for _, o := range observers {
		o(&c)
	}
}

func parseCall(r *http.Request, body []byte) Call {
	c := Call{Body: body, Form: url.Values{}}
	// AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, ...
	if auth := r.Header.Get("Authorization"); auth != "" {
		if i := strings.Index(auth, "Credential="); i >= 0 {
			cred := auth[i+len("Credential="):]
			cred, _, _ = strings.Cut(cred, ",")
			parts := strings.Split(cred, "/")
			if len(parts) >= 5 {
				c.Region, c.Service = parts[2], parts[3]
			}
		}
	}
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		_, op, _ := strings.Cut(target, ".")
		c.Action = op
		return c
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if form, err := url.ParseQuery(string(body)); err == nil {
			c.Form = form
		}
	}
	if len(c.Form) == 0 {
		c.Form = r.URL.Query()
	}
	c.Action = c.Form.Get("Action")
	return c
}

// WriteError answers with an AWS error in the format of c's protocol: EC2's
// <Response><Errors> for ec2, <ErrorResponse> for the other Query APIs,
// and a JSON body for JSON APIs.
func WriteError(w http.ResponseWriter, c *Call, status int, code, message string) {
	switch {
	case c.Service == "ec2":
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>awsproxy</RequestID></Response>`,
			escape(code), escape(message))
	case len(c.Form) > 0:
		kind := "Sender"
		if status >= 500 {
			kind = "Receiver"
		}
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<ErrorResponse><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>awsproxy</RequestId></ErrorResponse>`,
			kind, escape(code), escape(message))
	default:
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("X-Amzn-Errortype", code)
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"__type":%q,"message":%q}`, code, message)
	}
}

// WriteQueryResult answers a Query API action (not EC2) with result, which
// is marshalled inside <ActionResponse><ActionResult>.
func WriteQueryResult(w http.ResponseWriter, c *Call, result any) error {
	inner, err := xml.Marshal(result)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/xml")
	_, err = fmt.Fprintf(w, `<%[1]sResponse><%[1]sResult>%[2]s</%[1]sResult><ResponseMetadata><RequestId>awsproxy</RequestId></ResponseMetadata></%[1]sResponse>`,
		c.Action, inner)
	return err
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// FailNth returns an interceptor that answers the nth call (1-based) of
// service's action, and the times-1 calls after it, with an AWS error;
// every other call goes on. An empty service matches any.
func FailNth(service, action string, n, times, status int, code string) Interceptor {
	var mu sync.Mutex
	seen := 0
	return func(w http.ResponseWriter, c *Call) bool {
		if c.Action != action || (service != "" && c.Service != service) {
			return false
		}
		mu.Lock()
		seen++
		hit := seen >= n && seen < n+times
		mu.Unlock()
		if hit {
			WriteError(w, c, status, code, fmt.Sprintf("injected by awsproxy (call %d of %s)", seen, action))
		}
		return hit
	}
}
