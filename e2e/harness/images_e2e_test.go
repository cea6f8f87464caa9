//go:build e2e

package harness

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// testLog sends the harness's progress lines to the test log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the harness's e2e tests need root (mmdebstrap, systemd-nspawn, ip, nft)")
	}
}

// TestBaseImages builds (or finds cached) the base image of every release
// of $WSGI_E2E_RELEASES at the same time, and reports each one's time. CI
// runs it first so the other packages find the images cached.
func TestBaseImages(t *testing.T) {
	needRoot(t)
	rs, err := Releases()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	took := make([]time.Duration, len(rs))
	errs := make([]error, len(rs))
	paths := make([]string, len(rs))
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			paths[i], errs[i] = BaseImage(ctx, r, testLog{t})
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, r := range rs {
		if errs[i] != nil {
			t.Errorf("%s: %v", r, errs[i])
			continue
		}
		st, _ := os.Stat(paths[i])
		t.Logf("CHECK base image %-8s %6.1fs  %4.0f MB  %s", r, took[i].Seconds(), float64(st.Size())/1e6, paths[i])
	}
}
