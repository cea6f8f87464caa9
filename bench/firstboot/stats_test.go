package main

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	s := time.Second
	cases := []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{7 * s}, 7 * s},
		{[]time.Duration{9 * s, 1 * s, 5 * s}, 5 * s},
		{[]time.Duration{4 * s, 1 * s, 3 * s, 2 * s}, 2500 * time.Millisecond},
	}
	for _, c := range cases {
		in := fmt.Sprint(c.in)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%s) = %v, want %v", in, got, c.want)
		}
		if fmt.Sprint(c.in) != in {
			t.Errorf("median reordered its input: %s, was %s", fmt.Sprint(c.in), in)
		}
	}
}

func TestFormat(t *testing.T) {
	if got := ratio(9*time.Second, 3*time.Second); got != "3.00x" {
		t.Errorf("ratio = %q, want 3.00x", got)
	}
	if got := ratio(time.Second, 0); got != "-" {
		t.Errorf("ratio by zero = %q, want -", got)
	}
	if got := secs(12340 * time.Millisecond); got != "12.3 s" {
		t.Errorf("secs = %q", got)
	}
	if got := runsList([]time.Duration{1500 * time.Millisecond, 2 * time.Second}); got != "1.5, 2.0" {
		t.Errorf("runsList = %q", got)
	}
}

func TestIPWatcher(t *testing.T) {
	var out bytes.Buffer
	w := newIPWatcher("fbb-pay1", &out)
	// Split across writes, another machine's line first, then ours twice.
	for _, s := range []string{
		"harness: fbb-pay10: address 10.213.9.5 after 1s\nharness: fbb-pa",
		"y1: address 10.213.4.77 after 1.3s\n",
		"harness: fbb-pay1: address 10.213.4.78 after 2s\n",
	} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ip := <-w.ip:
		if ip != "10.213.4.77" {
			t.Errorf("ip = %q, want 10.213.4.77", ip)
		}
	default:
		t.Fatal("no address handed over")
	}
	select {
	case ip := <-w.ip:
		t.Errorf("a second address was handed over: %q", ip)
	default:
	}
	if !bytes.Contains(out.Bytes(), []byte("fbb-pay10: address 10.213.9.5")) {
		t.Errorf("log not passed through: %q", out.String())
	}
}

func TestParseBlame(t *testing.T) {
	out := `-- Boot Record 01 --
     09.00000s (modules-final/config-scripts-user)

-- Boot Record 02 --
     07.12300s (modules-final/config-package-update-upgrade-install)
     02.51300s (modules-final/config-scripts-user)
     00.00100s (init-network/config-ssh)

2 boot records analyzed
`
	got := parseBlame(out)
	want := map[string]time.Duration{
		"modules-final/config-package-update-upgrade-install": 7123 * time.Millisecond,
		"modules-final/config-scripts-user":                   2513 * time.Millisecond,
		"init-network/config-ssh":                             time.Millisecond,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if d := got[k] - w; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
}

func TestParseDeploySteps(t *testing.T) {
	out := `1795829044.100000 fbb-pay1 wsgi-deploy[301]: deploy of app starts
1795829044.600000 fbb-pay1 wsgi-deploy[301]: release /srv/wsgi/releases/20261128T012800Z-abc
1795829047.600000 fbb-pay1 wsgi-deploy[301]: no requirements.txt in the release: nothing to install
1795829052.100000 fbb-pay1 wsgi-deploy[301]: deployed /srv/wsgi/releases/20261128T012800Z-abc: 3 units healthy behind NGINX
`
	got, err := parseDeploySteps(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{500 * time.Millisecond, 3 * time.Second, 4500 * time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("step %d = %v, want %v", i, got[i], want[i])
		}
	}
	if _, err := parseDeploySteps("1795829044.1 h wsgi-deploy[1]: deploy of app starts\n"); err == nil {
		t.Error("a journal without the later lines was accepted")
	}
}
