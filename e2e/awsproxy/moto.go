package awsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

// Moto is a moto server on a free loopback port, started by the test.
type Moto struct {
	// URL is its base URL, e.g. http://127.0.0.1:41234.
	URL  string
	cmd  *exec.Cmd
	done chan struct{}

	closeOnce sync.Once
	untrack   func()
}

// StartMoto runs `python3 -m moto.server` on a free loopback port and
// waits until GET /moto-api/ answers 200. Its output goes to logPath. One
// process serves EC2, S3, SSM, Secrets Manager and Auto Scaling. A machine
// reaches it at harness.Publish(m.URL). It stops with Close, when a signal
// stops the process (harness.AtInterrupt) and when the process dies.
func StartMoto(ctx context.Context, logPath string) (*Moto, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so Close stops the server and its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting moto: %w", err)
	}
	m := &Moto{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(m.done) }()
	m.untrack = harness.AtInterrupt(m.Close)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := m.ping(ctx); err == nil {
			return m, nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			m.Close()
			return nil, fmt.Errorf("moto did not answer on %s within 60s (log: %s): %w", m.URL, logPath, errors.Join(err, ctx.Err()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (m *Moto) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/moto-api/", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /moto-api/: %s", resp.Status)
	}
	return nil
}

// Reset clears all of moto's state.
func (m *Moto) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+"/moto-api/reset", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /moto-api/reset: %s", resp.Status)
	}
	return nil
}

// PID is the server's process id (and its process group's).
func (m *Moto) PID() int { return m.cmd.Process.Pid }

// Close stops the server (its whole process group). Safe to call twice.
func (m *Moto) Close() {
	m.closeOnce.Do(func() {
		m.untrack()
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.done
		}
	})
}
