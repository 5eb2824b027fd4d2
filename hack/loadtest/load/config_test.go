package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Config{URL: "http://127.0.0.1:8080/", Conns: 1, Requests: 1}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; empty means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"valid duration only", func(c *Config) { c.Requests, c.Duration = 0, time.Second }, ""},
		{"valid localhost", func(c *Config) { c.URL = "http://localhost:1/" }, ""},
		{"valid ipv6 loopback", func(c *Config) { c.URL = "http://[::1]:1/" }, ""},
		{"valid 127/8", func(c *Config) { c.URL = "http://127.3.2.1:1/" }, ""},
		{"no url", func(c *Config) { c.URL = "" }, "URL is required"},
		{"non-loopback url", func(c *Config) { c.URL = "http://192.0.2.1/" }, "loopback"},
		{"hostname url", func(c *Config) { c.URL = "http://example.com/" }, "loopback"},
		{"unspecified url", func(c *Config) { c.URL = "http://0.0.0.0:1/" }, "loopback"},
		{"bad scheme", func(c *Config) { c.URL = "ftp://127.0.0.1/" }, "scheme"},
		{"zero conns", func(c *Config) { c.Conns = 0 }, "Conns"},
		{"too many conns", func(c *Config) { c.Conns = MaxConns + 1 }, "Conns"},
		{"unbounded", func(c *Config) { c.Requests = 0 }, "unbounded"},
		{"negative duration", func(c *Config) { c.Duration = -1 }, "Duration"},
		{"duration over cap", func(c *Config) { c.Duration = MaxDuration + 1 }, "Duration"},
		{"requests over cap", func(c *Config) { c.Requests = MaxRequests + 1 }, "Requests"},
		{"negative requests", func(c *Config) { c.Requests = -1; c.Duration = time.Second }, "Requests"},
		{"negative interval", func(c *Config) { c.Interval = -1 }, "Interval"},
		{"hosts without header", func(c *Config) { c.Hosts = []string{"127.0.0.2:1"} }, "HostHeader"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoopbackHosts(t *testing.T) {
	t.Parallel()
	hosts, err := LoopbackHosts("127.0.0.0/8", 3, 8080)
	if err != nil {
		t.Fatalf("LoopbackHosts: %v", err)
	}
	want := []string{"127.0.0.1:8080", "127.0.0.2:8080", "127.0.0.3:8080"}
	if strings.Join(hosts, ",") != strings.Join(want, ",") {
		t.Errorf("LoopbackHosts = %v, want %v", hosts, want)
	}
	big, err := LoopbackHosts("127.0.0.0/8", 100_000, 1)
	if err != nil {
		t.Fatalf("LoopbackHosts(100000): %v", err)
	}
	seen := make(map[string]bool, len(big))
	for _, h := range big {
		seen[h] = true
	}
	if len(seen) != 100_000 || big[len(big)-1] != "127.1.134.160:1" {
		t.Errorf("LoopbackHosts(100000): %d distinct, last %s, want 100000 and 127.1.134.160:1", len(seen), big[len(big)-1])
	}
	for _, bad := range []struct {
		prefix string
		n      int
		port   int
	}{
		{"10.0.0.0/8", 1, 1},
		{"0.0.0.0/0", 1, 1},
		{"127.0.0.0/7", 1, 1},
		{"::1/128", 1, 1},
		{"127.0.0.0/30", 4, 1}, // 3 usable
		{"127.0.0.0/8", 0, 1},
		{"127.0.0.0/8", 1, 0},
		{"nonsense", 1, 1},
	} {
		if _, err := LoopbackHosts(bad.prefix, bad.n, bad.port); err == nil {
			t.Errorf("LoopbackHosts(%q, %d, %d) = nil error, want error", bad.prefix, bad.n, bad.port)
		}
	}
}

// TestRunBounded runs a tiny load against an httptest server: 50 requests on
// 4 connections, with a per-request host header.
func TestRunBounded(t *testing.T) {
	t.Parallel()
	var got = make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Upstream-Host")
		if r.Header.Get("X-Test") != "yes" {
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	t.Cleanup(srv.Close)
	res, err := Run(context.Background(), Config{
		URL: srv.URL, Conns: 4, Requests: 50, Interval: 10 * time.Millisecond,
		Header: http.Header{"X-Test": {"yes"}}, HostHeader: "X-Upstream-Host",
		Hosts: []string{"127.0.0.2:1", "127.0.0.3:1"},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Total != 50 || res.Status[200] != 50 || res.Errors() != 0 {
		t.Errorf("Run: total %d, status %v, errors %d, want 50 x 200", res.Total, res.Status, res.Errors())
	}
	close(got)
	counts := map[string]int{}
	for h := range got {
		counts[h]++
	}
	if counts["127.0.0.2:1"] != 25 || counts["127.0.0.3:1"] != 25 {
		t.Errorf("host header counts = %v, want 25 each", counts)
	}
}

func TestRunDurationBound(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	start := time.Now()
	res, err := Run(context.Background(), Config{URL: srv.URL, Conns: 2, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Run took %v, want about 100ms", el)
	}
	if res.Total == 0 {
		t.Errorf("Run: no requests sent")
	}
}
