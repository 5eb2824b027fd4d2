package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHandlerEchoesAndNeverLogsSignature(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	v, err := newVerifier("", loopbackTransport())
	require.NoError(t, err)
	srv := httptest.NewServer(handler(slog.New(slog.NewJSONHandler(&logs, nil)), v))
	t.Cleanup(srv.Close)

	b64 := base64.RawURLEncoding.EncodeToString
	signature := b64([]byte("SIGNATUREPART"))
	jwt := b64([]byte(`{"alg":"RS256"}`)) + "." + b64([]byte(`{"aud":"x"}`)) + "." + signature
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/a/b?q=1", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("X-Test", "v")
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()

	var got echo
	require.NoError(t, json.NewDecoder(res.Body).Decode(&got))
	assert.Equal(t, "POST", got.Method)
	assert.Equal(t, "/a/b", got.Path)
	assert.Equal(t, "q=1", got.Query)
	assert.Equal(t, []string{"v"}, got.Headers["X-Test"])
	assert.Equal(t, []string{fmt.Sprintf("Bearer [redacted, %d bytes]", len("Bearer "+jwt))}, got.Headers["Authorization"],
		"the answer goes back to the client: never the token")
	assert.Contains(t, logs.String(), `"authorization":true`)
	assert.Contains(t, logs.String(), `"aud":"x"`)
	assert.False(t, strings.Contains(logs.String(), signature), "log has the signature: %s", logs.String())
}

func TestDecodeBearer(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "Basic abc", "Bearer a.b", "Bearer !!.!!.x", "Bearer e30.bm90anNvbg.x"} {
		_, _, ok := decodeBearer(in)
		assert.False(t, ok, "decodeBearer(%q)", in)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want options
	}{
		{nil, options{addr: "127.0.0.1:8081"}},
		{[]string{"-addr", ":9000"}, options{addr: ":9000"}},
		{[]string{"-addr=127.0.0.1:1"}, options{addr: "127.0.0.1:1"}},
		{[]string{"--listen-addr", ":9001"}, options{addr: ":9001"}},
		{[]string{"-addr", ":1", "--listen-addr", ":2"}, options{addr: ":2"}},
		{[]string{"-issuer", "http://127.0.0.1:9"}, options{addr: "127.0.0.1:8081", issuer: "http://127.0.0.1:9"}},
	} {
		got, err := parseFlags(tc.args, io.Discard)
		require.NoError(t, err, "args %v", tc.args)
		assert.Equal(t, tc.want, got, "args %v", tc.args)
	}
	_, err := parseFlags([]string{"serve"}, io.Discard)
	assert.Error(t, err)
	_, err = parseFlags([]string{"-port", "1"}, io.Discard)
	assert.Error(t, err)
}

// TestRunRefusesIssuerOffLoopback checks that -issuer is validated before
// listening: only a loopback issuer's keys can be fetched.
func TestRunRefusesIssuerOffLoopback(t *testing.T) {
	t.Parallel()
	for _, iss := range []string{"https://abcd.tokens.sts.global.api.aws", "http://169.254.169.254", "http://user@127.0.0.1", "ftp://127.0.0.1", "http://[fe80::1%25lo]"} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"-addr", "127.0.0.1:0", "-issuer", iss}, &stdout, &stderr)
		assert.Equal(t, 2, code, iss)
		assert.Contains(t, stderr.String(), "invalid -issuer", iss)
		assert.Contains(t, stderr.String(), "only a loopback issuer can be verified", iss)
		assert.Empty(t, stdout.String(), "listened with a bad issuer")
	}
}

// TestRunAddr starts the server with the original's -addr flag and stops it.
func TestRunAddr(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, &stdout, &stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stdout.String(), `"msg":"listening","addr":"127.0.0.1:`) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by the deadline
	}
	assert.Contains(t, stdout.String(), `"msg":"listening","addr":"127.0.0.1:`)
	cancel()
	assert.Equal(t, 0, <-done, stderr.String())
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHandlerNeverEchoesATokenInAnotherHeader: stsproxy --token-header puts
// the token in a header of the operator's choice, such as X-Api-Token, with
// --token-format around it; the answer goes back to the client through the
// proxy, so no header may carry it back, whatever its name.
func TestHandlerNeverEchoesATokenInAnotherHeader(t *testing.T) {
	t.Parallel()
	v, err := newVerifier("", loopbackTransport())
	require.NoError(t, err)
	srv := httptest.NewServer(handler(slog.New(slog.DiscardHandler), v))
	t.Cleanup(srv.Close)

	b64 := base64.RawURLEncoding.EncodeToString
	signature := b64([]byte("SIGNATUREPART"))
	jwt := b64([]byte(`{"alg":"RS256"}`)) + "." + b64([]byte(`{"aud":"x"}`)) + "." + signature
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	require.NoError(t, err)
	req.Header.Set("X-Api-Token", "tenant-a:"+jwt+";v=1")
	req.Header.Add("Cookie", "session="+jwt)
	req.Header.Set("X-Forwarded-Host", "127.0.0.1:8443")
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)

	assert.NotContains(t, string(body), signature, "the answer carries the token back to the client: %s", body)
	var got echo
	require.NoError(t, json.Unmarshal(body, &got))
	assert.Equal(t, []string{fmt.Sprintf("tenant-a:[redacted JWT, %d bytes];v=1", len(jwt))}, got.Headers["X-Api-Token"])
	assert.Equal(t, []string{fmt.Sprintf("session=[redacted JWT, %d bytes]", len(jwt))}, got.Headers["Cookie"])
	assert.Equal(t, []string{"127.0.0.1:8443"}, got.Headers["X-Forwarded-Host"], "a dotted value is no token")
}
