//go:build e2e

package harness_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/awsproxy"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

const childEnv = "WSGI_E2E_INTERRUPT_CHILD"

// childReport is what the child prints once everything is up.
type childReport struct {
	Machine harness.HostResources
	Moto    int
	MotoURL string
	Work    string
}

// TestInterruptChild is the child process of TestInterruptLeavesNothing:
// a machine (with its IMDS, dnsmasq and nft table), moto published to it
// and a scratch folder removed at interrupt, then it waits to be stopped.
func TestInterruptChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("the child of TestInterruptLeavesNothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rs, err := harness.Releases()
	if err != nil {
		t.Fatal(err)
	}
	img, err := harness.BaseImage(ctx, rs[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	work, err := os.MkdirTemp("", "wsgi-e2e-interrupt-")
	if err != nil {
		t.Fatal(err)
	}
	harness.AtInterrupt(func() { os.RemoveAll(work) })
	moto, err := awsproxy.StartMoto(ctx, filepath.Join(work, "moto.log"))
	if err != nil {
		t.Fatal(err)
	}
	motoURL, err := harness.Publish(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	m, err := harness.Boot(ctx, harness.BootOptions{Image: img, Name: "hm-intr", WorkDir: work})
	if err != nil {
		t.Fatal(err)
	}
	// Proof that it all works before the interrupt: moto through the published address.
	if out, _, err := m.Exec(ctx, "curl", "-sSf", "-o", "/dev/null", motoURL+"/moto-api/"); err != nil {
		t.Fatalf("moto from inside: %v %s", err, out)
	}
	b, _ := json.Marshal(childReport{Machine: m.Resources(), Moto: moto.PID(), MotoURL: moto.URL, Work: work})
	fmt.Printf("READY %s\n", b)
	<-ctx.Done()
}

// TestInterruptLeavesNothing runs TestInterruptChild in a child process,
// sends it SIGINT (what Ctrl-C of `make demo KEEP=1` does) once its machine,
// IMDS and moto are up, and checks that nothing of it is left on the host:
// no nspawn, dnsmasq or moto process, no veth link, no nft table, no state
// file or folder, nothing listening on the IMDS port, and no metadata
// address on a host interface.
func TestInterruptLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestInterruptChild$", "-test.v", "-test.timeout", "11m")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = logWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var rep *childReport
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "READY "); ok {
			rep = &childReport{}
			if err := json.Unmarshal([]byte(s), rep); err != nil {
				t.Fatal(err)
			}
			break
		}
		t.Log("child: " + line)
	}
	if rep == nil {
		_ = cmd.Wait()
		t.Fatal("the child ended before it was ready")
	}
	go func() {
		for sc.Scan() {
			t.Log("child: " + sc.Text())
		}
	}()
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	took := time.Since(start)
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("child: %v, want it to end by SIGINT once cleaned up", err)
	}

	var left []string
	for what, pid := range map[string]int{"systemd-nspawn": rep.Machine.Nspawn, "dnsmasq": rep.Machine.Dnsmasq, "moto": rep.Moto} {
		if pid <= 0 {
			left = append(left, what+": no pid reported")
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			left = append(left, fmt.Sprintf("%s: process %d still runs (%s)", what, pid, strings.TrimSpace(string(comm))))
		}
	}
	if _, err := net.InterfaceByName(rep.Machine.Link); err == nil {
		left = append(left, "link "+rep.Machine.Link)
	}
	if exec.Command("nft", "list", "table", "ip", rep.Machine.Table).Run() == nil {
		left = append(left, "nft table ip "+rep.Machine.Table)
	}
	for _, p := range []string{rep.Machine.Dir, rep.Machine.StateFile, rep.Work} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, "file "+p)
		}
	}
	for _, addr := range []string{rep.Machine.IMDSAddr, strings.TrimPrefix(rep.MotoURL, "http://")} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			left = append(left, "still listening: "+addr)
		}
	}
	if len(left) > 0 {
		t.Errorf("left behind after SIGINT:\n%s", strings.Join(left, "\n"))
	}
	assertNoMetadataAddr(t)
	t.Logf("CHECK SIGINT to a process with a machine, its IMDS and moto: all gone %.1fs after the signal", took.Seconds())
}
