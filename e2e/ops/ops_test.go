package ops

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 10s test @ http://10.0.0.2/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.01ms    3.10ms  80.22ms   91.00%
    Req/Sec     2.67k   210.11     3.01k    70.00%
  Latency Distribution
     50%   11.50ms
     75%   12.80ms
     90%   14.00ms
     99%    1.20s
  53210 requests in 10.01s, 8.12MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   5315.68
Transfer/sec:    830.20KB
`
	r, err := ParseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Requests: 53210, RPS: 5315.68, P50: 11500 * time.Microsecond, P99: 1200 * time.Millisecond,
		Max: 80220 * time.Microsecond, Non2xx: 7, Read: 3, Write: 1, Tmo: 2}
	if r != want {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	if r.Failed() != 13 || r.SocketErrors() != 6 {
		t.Errorf("Failed %d, SocketErrors %d; want 13 and 6", r.Failed(), r.SocketErrors())
	}
	if _, err := ParseWrk("Requests/sec: 10\n"); err == nil {
		t.Error("a report without a latency distribution was accepted")
	}
	none, err := ParseWrk("  Latency Distribution\n     50%    0.00us\n     99%    0.00us\n  0 requests in 6.08s, 0.00B read\nRequests/sec:      0.00\n")
	if err != nil || none.Requests != 0 || none.RPS != 0 {
		t.Errorf("a run where nothing completed: %+v, %v; want 0 requests and no error", none, err)
	}
	if _, err := ParseWrk("garbage"); err == nil {
		t.Error("garbage was accepted")
	}
}

func TestFailedFor(t *testing.T) {
	r := Result{Non2xx: 1, Read: 3, Tmo: 1}
	if got := r.FailedFor(Op{}); got != 5 {
		t.Errorf("FailedFor(plain op) = %d, want 5", got)
	}
	if got := r.FailedFor(Op{ClosesIdleClients: true}); got != 2 {
		t.Errorf("FailedFor(NGINX reload) = %d, want 2: read errors are not counted, HTTP errors and time-outs are", got)
	}
}
