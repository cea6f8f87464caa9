package awsproxy

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Instance refresh states, as Auto Scaling spells them.
const (
	RefreshPending            = "Pending"
	RefreshInProgress         = "InProgress"
	RefreshSuccessful         = "Successful"
	RefreshFailed             = "Failed"
	RefreshCancelled          = "Cancelled"
	RefreshRollbackSuccessful = "RollbackSuccessful"
)

// InstanceRefreshes answers the Auto Scaling actions StartInstanceRefresh
// and DescribeInstanceRefreshes, which moto does not implement. Every
// refresh walks through Statuses, one step per DescribeInstanceRefreshes
// call, and then stays in the last one.
type InstanceRefreshes struct {
	// Statuses defaults to Pending, InProgress, InProgress, Successful.
	Statuses []string
	// StatusReason is reported with a final status other than Successful.
	StatusReason string

	mu        sync.Mutex
	started   []StartedRefresh
	refreshes map[string]*refreshState
}

// StartedRefresh is one StartInstanceRefresh request.
type StartedRefresh struct {
	ID    string
	Group string
	// Params are the request's Query parameters, e.g.
	// DesiredConfiguration.LaunchTemplate.Version.
	Params url.Values
}

type refreshState struct {
	group string
	step  int
	start time.Time
}

// Register makes p answer both actions from r.
func (r *InstanceRefreshes) Register(p *Proxy) {
	p.Handle("autoscaling", "StartInstanceRefresh", r.start)
	p.Handle("autoscaling", "DescribeInstanceRefreshes", r.describe)
}

// Started returns the refreshes started so far.
func (r *InstanceRefreshes) Started() []StartedRefresh {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]StartedRefresh(nil), r.started...)
}

func (r *InstanceRefreshes) statuses() []string {
	if len(r.Statuses) == 0 {
		return []string{RefreshPending, RefreshInProgress, RefreshInProgress, RefreshSuccessful}
	}
	return r.Statuses
}

func (r *InstanceRefreshes) start(w http.ResponseWriter, c *Call) {
	group := c.Form.Get("AutoScalingGroupName")
	if group == "" {
		WriteError(w, c, http.StatusBadRequest, "ValidationError", "AutoScalingGroupName is required")
		return
	}
	r.mu.Lock()
	if r.refreshes == nil {
		r.refreshes = map[string]*refreshState{}
	}
	for id, s := range r.refreshes {
		if s.group == group && !final(r.statuses()[min(s.step, len(r.statuses())-1)]) {
			r.mu.Unlock()
			WriteError(w, c, http.StatusBadRequest, "InstanceRefreshInProgress",
				fmt.Sprintf("An Instance Refresh is already in progress and blocks the execution of this Instance Refresh (%s).", id))
			return
		}
	}
	id := fmt.Sprintf("%08x-0000-4000-8000-%012x", len(r.started)+1, time.Now().UnixNano()&0xffffffffffff)
	r.refreshes[id] = &refreshState{group: group, start: time.Now().UTC()}
	r.started = append(r.started, StartedRefresh{ID: id, Group: group, Params: c.Form})
	r.mu.Unlock()
	_ = WriteQueryResult(w, c, struct {
		XMLName xml.Name `xml:"InstanceRefreshId"`
		ID      string   `xml:",chardata"`
	}{ID: id})
}

type refreshXML struct {
	InstanceRefreshID    string `xml:"InstanceRefreshId"`
	AutoScalingGroupName string
	Status               string
	StatusReason         string `xml:",omitempty"`
	StartTime            string
	EndTime              string `xml:",omitempty"`
	PercentageComplete   int
	InstancesToUpdate    int
}

func (r *InstanceRefreshes) describe(w http.ResponseWriter, c *Call) {
	group := c.Form.Get("AutoScalingGroupName")
	want := map[string]bool{}
	for k, v := range c.Form {
		if len(k) > len("InstanceRefreshIds.member.") && k[:len("InstanceRefreshIds.member.")] == "InstanceRefreshIds.member." {
			want[v[0]] = true
		}
	}
	statuses := r.statuses()
	var members []refreshXML
	r.mu.Lock()
	for _, st := range r.started {
		s := r.refreshes[st.ID]
		if s.group != group || (len(want) > 0 && !want[st.ID]) {
			continue
		}
		i := min(s.step, len(statuses)-1)
		s.step++
		status := statuses[i]
		m := refreshXML{
			InstanceRefreshID:    st.ID,
			AutoScalingGroupName: group,
			Status:               status,
			StartTime:            s.start.Format(time.RFC3339),
			PercentageComplete:   100 * i / max(len(statuses)-1, 1),
			InstancesToUpdate:    len(statuses) - 1 - i,
		}
		if final(status) {
			m.EndTime = time.Now().UTC().Format(time.RFC3339)
			if status != RefreshSuccessful {
				m.StatusReason = r.StatusReason
			}
		}
		members = append(members, m)
	}
	r.mu.Unlock()
	_ = WriteQueryResult(w, c, struct {
		XMLName xml.Name     `xml:"InstanceRefreshes"`
		Members []refreshXML `xml:"member"`
	}{Members: members})
}

func final(status string) bool {
	switch status {
	case RefreshSuccessful, RefreshFailed, RefreshCancelled, RefreshRollbackSuccessful, "RollbackFailed":
		return true
	}
	return false
}
