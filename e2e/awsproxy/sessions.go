package awsproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
)

// Sessions answers the Session Manager actions StartSession and
// TerminateSession, which moto does not implement. A started session is
// open until TerminateSession names it; nothing carries its stream: a test
// stands in for session-manager-plugin itself.
type Sessions struct {
	mu      sync.Mutex
	seq     int
	started []StartedSession
	open    map[string]bool
}

// StartedSession is one StartSession request.
type StartedSession struct {
	ID           string
	Target       string
	DocumentName string
	Parameters   map[string][]string
}

// Register makes p answer both actions from s.
func (s *Sessions) Register(p *Proxy) {
	p.Handle("ssm", "StartSession", s.start)
	p.Handle("ssm", "TerminateSession", s.terminate)
}

// Reset forgets every session.
func (s *Sessions) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started, s.open = nil, nil
}

// Started returns the sessions started so far.
func (s *Sessions) Started() []StartedSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]StartedSession(nil), s.started...)
}

// Open returns the ids of the sessions not terminated.
func (s *Sessions) Open() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.open {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (s *Sessions) start(w http.ResponseWriter, c *Call) {
	var in StartedSession
	if err := json.Unmarshal(c.Body, &in); err != nil || in.Target == "" {
		WriteError(w, c, http.StatusBadRequest, "ValidationException", "StartSession needs a Target")
		return
	}
	s.mu.Lock()
	s.seq++
	in.ID = fmt.Sprintf("e2e-%012d", s.seq)
	s.started = append(s.started, in)
	if s.open == nil {
		s.open = map[string]bool{}
	}
	s.open[in.ID] = true
	s.mu.Unlock()
	writeJSON(w, map[string]string{
		"SessionId":  in.ID,
		"StreamUrl":  "wss://ssmmessages." + c.Region + ".amazonaws.com/v1/data-channel/" + in.ID,
		"TokenValue": "e2e-token-" + in.ID,
	})
}

func (s *Sessions) terminate(w http.ResponseWriter, c *Call) {
	var in struct{ SessionId string }
	if err := json.Unmarshal(c.Body, &in); err != nil || in.SessionId == "" {
		WriteError(w, c, http.StatusBadRequest, "ValidationException", "TerminateSession needs a SessionId")
		return
	}
	s.mu.Lock()
	delete(s.open, in.SessionId)
	s.mu.Unlock()
	writeJSON(w, map[string]string{"SessionId": in.SessionId})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(v)
}

// CreateInstanceProfile makes an IAM instance profile, which moto's
// RunInstances requires to exist before it is named.
func (m *Moto) CreateInstanceProfile(ctx context.Context, name string) error {
	form := url.Values{"Action": {"CreateInstanceProfile"}, "Version": {"2010-05-08"}, "InstanceProfileName": {name}}
	_, err := m.Call(ctx, "us-east-1", "iam", http.MethodPost, "/", http.Header{
		"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}}, []byte(form.Encode()))
	return err
}
