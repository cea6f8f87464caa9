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

// Sessions answers the Session Manager actions StartSession,
// TerminateSession and DescribeSessions, which moto does not implement. A
// started session is open until TerminateSession names it; nothing carries
// its stream: a test stands in for session-manager-plugin itself.
type Sessions struct {
	mu      sync.Mutex
	seq     int
	started []StartedSession
	open    map[string]bool
	// lose: how many of the next StartSession calls lose their answer.
	lose int
}

// StartedSession is one StartSession request.
type StartedSession struct {
	ID           string
	Target       string
	DocumentName string
	Parameters   map[string][]string
}

// Register makes p answer the three actions from s.
func (s *Sessions) Register(p *Proxy) {
	p.Handle("ssm", "StartSession", s.start)
	p.Handle("ssm", "TerminateSession", s.terminate)
	p.Handle("ssm", "DescribeSessions", s.describe)
}

// Reset forgets every session.
func (s *Sessions) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started, s.open, s.lose = nil, nil, 0
}

// LoseAnswers makes the next n StartSession calls make their session and
// then close the connection without an answer, as when AWS made a session
// and its answer never reached the caller.
func (s *Sessions) LoseAnswers(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lose = n
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
	lose := s.lose > 0
	if lose {
		s.lose--
	}
	s.mu.Unlock()
	if lose {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		WriteError(w, c, http.StatusInternalServerError, "InternalServerError", "answer lost (awsproxy)")
		return
	}
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

// describe answers DescribeSessions with State Active and at most a
// Target filter: the open sessions, to that target.
func (s *Sessions) describe(w http.ResponseWriter, c *Call) {
	var in struct {
		State   string
		Filters []struct{ Key, Value string }
	}
	if err := json.Unmarshal(c.Body, &in); err != nil || in.State != "Active" {
		WriteError(w, c, http.StatusBadRequest, "ValidationException", "the proxy answers DescribeSessions with State Active only")
		return
	}
	target := ""
	for _, f := range in.Filters {
		if f.Key != "Target" {
			WriteError(w, c, http.StatusBadRequest, "InvalidFilterKey", "the proxy filters sessions by Target only")
			return
		}
		target = f.Value
	}
	type session struct{ SessionId, Target, Status string }
	out := struct{ Sessions []session }{Sessions: []session{}}
	s.mu.Lock()
	for _, st := range s.started {
		if s.open[st.ID] && (target == "" || st.Target == target) {
			out.Sessions = append(out.Sessions, session{st.ID, st.Target, "Connected"})
		}
	}
	s.mu.Unlock()
	writeJSON(w, out)
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
