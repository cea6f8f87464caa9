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
