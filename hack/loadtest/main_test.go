package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"minimal", []string{"-url", "http://127.0.0.1:1/", "-n", "1"}, ""},
		{"duration", []string{"-url", "http://127.0.0.1:1/", "-d", "1s", "-c", "8"}, ""},
		{"headers", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "-H", "X-A: 1", "-H", "X-A: 2"}, ""},
		{"hosts", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "-hosts-from", "127.0.0.0/8", "-hosts-count", "10", "-hosts-port", "9"}, ""},
		{"no bound", []string{"-url", "http://127.0.0.1:1/"}, "unbounded"},
		{"no url", []string{"-n", "1"}, "URL is required"},
		{"remote url", []string{"-url", "http://192.0.2.1/", "-n", "1"}, "loopback"},
		{"bad header", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "-H", "nocolon"}, "Name: value"},
		{"hosts count without from", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "-hosts-count", "3"}, "need -hosts-from"},
		{"hosts outside loopback", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "-hosts-from", "10.0.0.0/8", "-hosts-count", "3", "-hosts-port", "1"}, "127.0.0.0/8"},
		{"hosts without port", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "-hosts-from", "127.0.0.0/8", "-hosts-count", "3"}, "port"},
		{"too long", []string{"-url", "http://127.0.0.1:1/", "-d", "1h"}, "Duration"},
		{"too many", []string{"-url", "http://127.0.0.1:1/", "-n", "999999999"}, "Requests"},
		{"tiny timeline", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "-timeline", "1us"}, "timeline"},
		{"stray arg", []string{"-url", "http://127.0.0.1:1/", "-n", "1", "extra"}, "unexpected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o, err := parseArgs(tc.args, &bytes.Buffer{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseArgs(%q) = %v, want nil", tc.args, err)
				}
				if o.cfg.Conns < 1 {
					t.Errorf("parseArgs(%q): Conns = %d, want >= 1", tc.args, o.cfg.Conns)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseArgs(%q) = %v, want error containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}

func TestParseArgsHeaders(t *testing.T) {
	t.Parallel()
	o, err := parseArgs([]string{"-url", "http://127.0.0.1:1/", "-n", "1", "-H", "x-a: 1", "-H", "X-A:2", "-H", "Host: api.internal"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	if got := o.cfg.Header.Values("X-A"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("X-A = %q, want [1 2]", got)
	}
	if got := o.cfg.Header.Get("Host"); got != "api.internal" {
		t.Errorf("Host = %q, want api.internal", got)
	}
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"-url", "http://192.0.2.1/", "-n", "1"}, &out, &errb); code != 2 {
		t.Errorf("run(remote) = %d, want 2", code)
	}
	if code := run(ctx, []string{"-h"}, &out, &errb); code != 0 {
		t.Errorf("run(-h) = %d, want 0", code)
	}
}
