package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	regMu sync.Mutex
	live  = map[*Machine]struct{}{} // booted and not yet closed
	ever  []*Machine                // every machine of this process, for Leftovers

	sigOnce sync.Once

	exitMu    sync.Mutex
	exitFuncs = map[int]func(){}
	exitNext  int
)

func liveMachines() []*Machine {
	regMu.Lock()
	defer regMu.Unlock()
	ms := make([]*Machine, 0, len(live))
	for m := range live {
		ms = append(ms, m)
	}
	return ms
}

// AtInterrupt registers f to run when SIGINT, SIGTERM or SIGHUP stops the
// process, after every machine is closed: for what a test or the demo runs
// beside its machines (moto, a scratch folder), which the signal would
// otherwise leave behind. The returned function unregisters f; call it
// from the normal cleanup. Later registrations run first.
func AtInterrupt(f func()) (remove func()) {
	installSignalHandler()
	exitMu.Lock()
	id := exitNext
	exitNext++
	exitFuncs[id] = f
	exitMu.Unlock()
	return func() {
		exitMu.Lock()
		delete(exitFuncs, id)
		exitMu.Unlock()
	}
}

func runExitFuncs() {
	exitMu.Lock()
	ids := make([]int, 0, len(exitFuncs))
	for id := range exitFuncs {
		ids = append(ids, id)
	}
	fs := exitFuncs
	exitFuncs = map[int]func(){}
	exitMu.Unlock()
	slices.Sort(ids)
	for i := len(ids) - 1; i >= 0; i-- {
		fs[ids[i]]()
	}
}

func register(m *Machine) {
	regMu.Lock()
	defer regMu.Unlock()
	live[m] = struct{}{}
	ever = append(ever, m)
}

func unregister(m *Machine) {
	regMu.Lock()
	defer regMu.Unlock()
	delete(live, m)
}

// CloseAll closes every machine of this process that is not closed yet.
// The signal handler calls it; a TestMain may too.
func CloseAll() {
	ms := liveMachines()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() { defer wg.Done(); m.Close() }()
	}
	wg.Wait()
}

// installSignalHandler closes all machines on SIGINT, SIGTERM or SIGHUP,
// runs the AtInterrupt functions, and then lets the signal do what it
// would have done.
func installSignalHandler() {
	sigOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		go func() {
			sig := <-ch
			fmt.Fprintf(os.Stderr, "harness: %v: closing machines\n", sig)
			CloseAll()
			runExitFuncs()
			signal.Reset(sig)
			_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
			time.Sleep(2 * time.Second)
			os.Exit(2)
		}()
	})
}

// machineState is what a later run needs to undo a machine whose process
// died without closing it.
type machineState struct {
	Name       string `json:"name"`
	Owner      int    `json:"owner"`
	OwnerStart string `json:"owner_start"` // guards against PID reuse
	Nspawn     int    `json:"nspawn,omitempty"`
	Dnsmasq    int    `json:"dnsmasq,omitempty"`
	Link       string `json:"link"`
	Table      string `json:"table"`
	Dir        string `json:"dir"`
}

func stateFile(name string) string { return filepath.Join(StateDir, "machines", name+".json") }

func saveState(m *Machine) {
	m.mu.Lock()
	s := machineState{
		Name: m.name, Owner: os.Getpid(), OwnerStart: procStart(os.Getpid()),
		Link: ifName(m.name), Table: nftTable(m.name), Dir: m.dir,
	}
	if m.nspawn != nil && m.nspawn.Process != nil {
		s.Nspawn = m.nspawn.Process.Pid
	}
	if m.net != nil && m.net.dnsmasq != nil && m.net.dnsmasq.Process != nil {
		s.Dnsmasq = m.net.dnsmasq.Process.Pid
	}
	m.mu.Unlock()
	b, _ := json.Marshal(s)
	_ = os.MkdirAll(filepath.Dir(stateFile(m.name)), 0o755)
	_ = os.WriteFile(stateFile(m.name), b, 0o644)
}

func removeState(name string) { _ = os.Remove(stateFile(name)) }

// claimName creates the machine's state file, failing if a live machine,
// in this process or another, already has the name: the ve-NAME link and
// the nft table are named after it.
func claimName(name string) error {
	if err := os.MkdirAll(filepath.Dir(stateFile(name)), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(stateFile(name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		var s machineState
		if b, rerr := os.ReadFile(stateFile(name)); rerr == nil && json.Unmarshal(b, &s) == nil {
			return fmt.Errorf("name %s: in use by the machine of process %d", name, s.Owner)
		}
		return fmt.Errorf("name %s: %w", name, err)
	}
	defer f.Close()
	if _, err := net.InterfaceByName(ifName(name)); err == nil {
		_ = os.Remove(stateFile(name))
		return fmt.Errorf("name %s: link %s already exists", name, ifName(name))
	}
	b, _ := json.Marshal(machineState{Name: name, Owner: os.Getpid(), OwnerStart: procStart(os.Getpid())})
	_, err = f.Write(b)
	return err
}

// procStart is field 22 of /proc/PID/stat, the process's start time.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		if f := strings.Fields(s[i+1:]); len(f) > 19 {
			return f[19]
		}
	}
	return ""
}

// reapStale undoes machines whose owning process is gone. nspawn gets
// SIGTERM when its parent dies, but dnsmasq does not: it changes
// credentials at start, which clears the parent-death signal.
func reapStale(log io.Writer) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		logf(log, "reaping: %v", err)
		return
	}
	unlock, err := lockFile(context.Background(), filepath.Join(StateDir, "reap.lock"))
	if err != nil {
		logf(log, "reaping: %v", err)
		return
	}
	defer unlock()
	files, _ := filepath.Glob(filepath.Join(StateDir, "machines", "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var s machineState
		if json.Unmarshal(b, &s) != nil {
			continue
		}
		if s.Owner > 0 && procStart(s.Owner) == s.OwnerStart {
			continue // its process is alive and will clean up itself
		}
		logf(log, "reaping %s left by dead process %d", s.Name, s.Owner)
		killIf(s.Nspawn, "systemd-nspawn", 30*time.Second)
		killIf(s.Dnsmasq, "dnsmasq", 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if tableExists(ctx, s.Table) {
			_, _ = run(ctx, "nft", "delete", "table", "ip", s.Table)
		}
		if _, err := net.InterfaceByName(s.Link); err == nil {
			_, _ = run(ctx, "ip", "link", "del", s.Link)
		}
		cancel()
		if strings.Contains(filepath.Base(s.Dir), "wsgi-e2e-") {
			if err := unmountUnder(s.Dir); err != nil {
				logf(log, "reaping %s: %v", s.Name, err)
			}
			if err := removeTree(s.Dir); err != nil {
				logf(log, "reaping %s: %v", s.Name, err)
			}
		}
		_ = os.Remove(f)
	}
	_ = restoreForward(0)
}

// killIf sends SIGTERM to pid if it is still the named program, then
// SIGKILL if it has not gone after wait.
func killIf(pid int, comm string, wait time.Duration) {
	if pid <= 0 || procComm(pid) != comm {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(wait)
	for procComm(pid) == comm && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if procComm(pid) == comm {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Leftovers lists whatever survived of the machines this process booted
// and closed: processes, links, nft tables, folders, state files. Empty
// means Close undid everything. Machines not closed yet are skipped.
func Leftovers() []string {
	regMu.Lock()
	var ms []*Machine
	for _, m := range ever {
		if _, open := live[m]; !open {
			ms = append(ms, m)
		}
	}
	regMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var left []string
	for _, m := range ms {
		if reusedElsewhere(m.name) {
			// Another process has a machine of the same name now: its link,
			// table and state file are that machine's, not leftovers of ours.
			continue
		}
		m.mu.Lock()
		var pids []int
		if m.nspawn != nil && m.nspawn.Process != nil {
			pids = append(pids, m.nspawn.Process.Pid)
		}
		if m.leader > 0 {
			pids = append(pids, m.leader)
		}
		if m.net != nil && m.net.dnsmasq != nil && m.net.dnsmasq.Process != nil {
			pids = append(pids, m.net.dnsmasq.Process.Pid)
		}
		m.mu.Unlock()
		for _, pid := range pids {
			if c := procComm(pid); c == "systemd-nspawn" || c == "systemd" || c == "dnsmasq" {
				left = append(left, fmt.Sprintf("%s: process %d (%s)", m.name, pid, c))
			}
		}
		if _, err := net.InterfaceByName(ifName(m.name)); err == nil {
			left = append(left, m.name+": link "+ifName(m.name))
		}
		if tableExists(ctx, nftTable(m.name)) {
			left = append(left, m.name+": nft table ip "+nftTable(m.name))
		}
		if _, err := os.Stat(m.dir); err == nil {
			left = append(left, m.name+": folder "+m.dir)
		}
		if _, err := os.Stat(stateFile(m.name)); err == nil {
			left = append(left, m.name+": state file "+stateFile(m.name))
		}
	}
	return left
}

// reusedElsewhere reports whether a live machine of another process holds
// the name now.
func reusedElsewhere(name string) bool {
	b, err := os.ReadFile(stateFile(name))
	if err != nil {
		return false
	}
	var s machineState
	if json.Unmarshal(b, &s) != nil {
		return false
	}
	return s.Owner != os.Getpid() && s.Owner > 0 && procStart(s.Owner) == s.OwnerStart
}
