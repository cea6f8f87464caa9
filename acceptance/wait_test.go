package acceptance

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWaitForUnits runs the boot check's HTTP part against a local server that plays an instance
// during and after first boot.
func TestWaitForUnits(t *testing.T) {
	tests := []struct {
		name      string
		responses []string // status:unit per request; the last one repeats
		wantUnits []string
		wantErr   string
	}{
		{name: "maintenance page, then the units in turn", responses: []string{"503:", "503:", "200:1", "200:2", "200:1", "200:3"}, wantUnits: []string{"1", "2", "3"}},
		{name: "one unit only", responses: []string{"200:2"}, wantErr: "no 200 from all 3 units within 500ms (units seen [2]"},
		{name: "never past the maintenance page", responses: []string{"503:"}, wantErr: "last: 503 (first boot not finished)"},
		{name: "a 502 is a failure at once", responses: []string{"200:1", "502:"}, wantErr: "502 Bad Gateway"},
		{name: "200 without a unit", responses: []string{"200:"}, wantErr: "200 without a unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				resp := tt.responses[min(n, len(tt.responses)-1)]
				n++
				mu.Unlock()
				code, unit, _ := strings.Cut(resp, ":")
				var status int
				fmt.Sscan(code, &status)
				w.WriteHeader(status)
				if unit != "" {
					fmt.Fprintf(w, `{"app": "shop", "unit": "%s"}`, unit)
				}
			}))
			defer srv.Close()

			got, err := waitForUnits(context.Background(), srv.URL+"/", 500*time.Millisecond, 10*time.Millisecond)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.wantUnits) {
				t.Errorf("units: want %v, got %v", tt.wantUnits, got)
			}
		})
	}
}
