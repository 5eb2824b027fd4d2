package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth/ststest"
)

// binDir holds the stsproxy binary; TestMain creates and removes it.
var binDir string

// buildBinary builds the stsproxy binary once, on first use, so test runs
// without end-to-end tests (fuzz workers, -run filters) do not pay for it.
var buildBinary = sync.OnceValues(func() (string, error) {
	path := filepath.Join(binDir, "stsproxy")
	out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build stsproxy: %v\n%s", err, out)
	}
	return path, nil
})

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stsproxy-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdir temp:", err)
		os.Exit(1)
	}
	binDir = dir
	// No test may reach the real instance metadata service: one that asks
	// it without pointing the SDK at a fake (ststest.IMDS) is refused on
	// loopback at once. Child processes get their own environment.
	if os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT") == "" {
		os.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitTimeout bounds every wait in the end-to-end tests.
const waitTimeout = 15 * time.Second

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

// listening returns the addresses of the "listening" log record, if logged.
func listeningAddrs(logs string) (addr, metricsAddr string, ok bool) {
	for line := range strings.Lines(logs) {
		var rec struct {
			Msg         string `json:"msg"`
			Addr        string `json:"addr"`
			MetricsAddr string `json:"metrics_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
			return rec.Addr, rec.MetricsAddr, true
		}
	}
	return "", "", false
}

// proc is a running stsproxy binary.
type proc struct {
	cmd         *exec.Cmd
	logs        *syncBuffer
	stdout      *syncBuffer
	addr        string
	metricsAddr string
	done        chan struct{} // closed when the process has exited
	exitCode    int           // valid after done
}

// awsEnv returns the environment that points the SDK at the emulator.
func awsEnv(t *testing.T, sts *ststest.Server) []string {
	home := t.TempDir()
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"AWS_ENDPOINT_URL_STS=" + sts.URL,
		"AWS_ACCESS_KEY_ID=AKIDEXAMPLE",
		"AWS_SECRET_ACCESS_KEY=secret",
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
	}
}

// startBinary starts stsproxy with args and env without waiting for it.
func startBinary(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	binPath, err := buildBinary()
	require.NoError(t, err)
	p := &proc{logs: &syncBuffer{}, stdout: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.logs
	require.NoError(t, p.cmd.Start())
	go func() {
		err := p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		_ = err
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(waitTimeout):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// startProxy starts stsproxy on loopback against the emulator and waits
// for its "listening" record.
func startProxy(t *testing.T, sts *ststest.Server, args ...string) *proc {
	t.Helper()
	return startProxyEnv(t, awsEnv(t, sts), args...)
}

// startProxyEnv is startProxy with the environment env.
func startProxyEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	args = append([]string{"--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0", "--upstream-scheme", "http"}, args...)
	p := startBinary(t, env, args...)
	deadline := time.Now().Add(waitTimeout)
	for {
		if a, m, ok := listeningAddrs(p.logs.String()); ok {
			p.addr, p.metricsAddr = a, m
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("stsproxy exited with %d before listening; logs:\n%s", p.exitCode, p.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("stsproxy did not log listening; logs:\n%s", p.logs.String())
		}
	}
}

// waitLog waits until the process has logged a line containing substr. The
// child's stderr is copied asynchronously, so a record written before a
// response was sent may still be in flight when the response arrives.
func (p *proc) waitLog(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(p.logs.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("no log containing %q; logs:\n%s", substr, p.logs.String())
		}
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by the deadline
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(waitTimeout):
		t.Fatalf("stsproxy did not exit; logs:\n%s", p.logs.String())
		return -1
	}
}

// newSTS starts an emulator for one test.
func newSTS(t *testing.T) *ststest.Server {
	s := ststest.NewServer()
	t.Cleanup(s.Close)
	return s
}

// testClient returns an HTTP client with a bounded timeout, closed at cleanup.
func testClient(t *testing.T) *http.Client {
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// get sends a GET through the proxy at addr with the given headers and
// returns the status and body.
func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, string) {
	t.Helper()
	return getWithHost(t, c, url, "", hdr)
}

// verifyJWT checks a token's signature against the emulator's JWKS and
// returns its claims.
func verifyJWT(t *testing.T, sts *ststest.Server, token string) (aud jwt.Audience, exp time.Time) {
	t.Helper()
	res, err := http.Get(sts.JWKSURL())
	require.NoError(t, err)
	defer res.Body.Close()
	var jwks jose.JSONWebKeySet
	require.NoError(t, json.NewDecoder(res.Body).Decode(&jwks))
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES384})
	require.NoError(t, err)
	var c jwt.Claims
	require.NoError(t, tok.Claims(jwks, &c))
	require.NoError(t, c.ValidateWithLeeway(jwt.Expected{Issuer: sts.Issuer(), Time: time.Now()}, time.Minute))
	return c.Audience, c.Expiry.Time()
}

// recordingUpstream is an httptest upstream that records the last request.
type recordingUpstream struct {
	*httptest.Server
	mu   sync.Mutex // guards last and hits
	last *http.Request
	hits int
}

func newRecordingUpstream(t *testing.T, h http.HandlerFunc) *recordingUpstream {
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last, u.hits = r.Clone(context.Background()), u.hits+1
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprint(w, "upstream ok")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) lastRequest() (*http.Request, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.hits
}

func (u *recordingUpstream) host() string { return strings.TrimPrefix(u.URL, "http://") }

// serveTestUpgrade switches an "Upgrade: test-proto" request to that
// protocol: it reads one line and answers reply(line) on the hijacked
// connection.
func serveTestUpgrade(w http.ResponseWriter, r *http.Request, reply func(line string) string) {
	if r.Header.Get("Upgrade") != "test-proto" {
		http.Error(w, "no upgrade", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test-proto\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	line, err := brw.ReadString('\n')
	if err != nil {
		return
	}
	fmt.Fprint(brw, reply(line))
	brw.Flush()
}

func TestE2EProxy(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := newRecordingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			select { // hold the response open until the client saw the first event
			case <-release:
			case <-r.Context().Done():
			case <-time.After(waitTimeout):
			}
			fmt.Fprint(w, "data: two\n\n")
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(waitTimeout):
			}
		case "/upgrade":
			serveTestUpgrade(w, r, func(line string) string { return "echo: " + line })
		default:
			fmt.Fprintf(w, "path=%s query=%s", r.URL.Path, r.URL.RawQuery)
		}
	})
	p := startProxy(t, sts, "--upstream-timeout", "1s", "--log-level", "debug")
	c := testClient(t)
	base := "http://" + p.addr
	route := map[string]string{"X-Upstream-Host": up.host()}
	var jwts []string

	t.Run("token injected and verifiable", func(t *testing.T) {
		status, body := get(t, c, base+"/a/b?x=1&y=2", map[string]string{
			"X-Upstream-Host": up.host(), "Authorization": "Bearer inbound-secret", "X-Forwarded-For": "10.0.0.1",
		})
		require.Equal(t, http.StatusOK, status, body)
		assert.Equal(t, "path=/a/b query=x=1&y=2", body)
		r, _ := up.lastRequest()
		auth := r.Header.Get("Authorization")
		require.True(t, strings.HasPrefix(auth, "Bearer "), "Authorization = %q", auth)
		token := strings.TrimPrefix(auth, "Bearer ")
		require.NotEqual(t, "inbound-secret", token)
		jwts = append(jwts, token)
		aud, exp := verifyJWT(t, sts, token)
		assert.Equal(t, jwt.Audience{"http://127.0.0.1"}, aud)
		assert.WithinDuration(t, time.Now().Add(time.Hour), exp, 2*time.Minute)
		assert.Empty(t, r.Header.Get("X-Upstream-Host"), "host header forwarded")
		assert.Equal(t, up.host(), r.Host)
		assert.Equal(t, "10.0.0.1, 127.0.0.1", r.Header.Get("X-Forwarded-For"))
	})
	t.Run("missing host header", func(t *testing.T) {
		status, body := get(t, c, base+"/", nil)
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "missing X-Upstream-Host header\n", body)
	})
	t.Run("bad host header", func(t *testing.T) {
		for _, h := range []string{"http://x.example", "x.example/path", "user@x.example", "x.example:99999", "[::1", strings.Repeat("a", 256)} {
			status, body := get(t, c, base+"/", map[string]string{"X-Upstream-Host": h})
			assert.Equal(t, http.StatusBadRequest, status, h)
			assert.True(t, strings.HasPrefix(body, "invalid X-Upstream-Host header: "), body)
		}
	})
	t.Run("metadata host forbidden", func(t *testing.T) {
		for _, h := range []string{"169.254.169.254", "[fd00:ec2::254]:80", "instance-data.ec2.internal"} {
			status, _ := get(t, c, base+"/latest/meta-data/", map[string]string{"X-Upstream-Host": h})
			assert.Equal(t, http.StatusForbidden, status, h)
		}
	})
	t.Run("upstream refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		closed := ln.Addr().String()
		ln.Close()
		status, body := get(t, c, base+"/", map[string]string{"X-Upstream-Host": closed})
		assert.Equal(t, http.StatusBadGateway, status)
		assert.Equal(t, "bad gateway\n", body)
	})
	t.Run("upstream timeout", func(t *testing.T) {
		start := time.Now()
		status, body := get(t, c, base+"/slow", route)
		assert.Equal(t, http.StatusGatewayTimeout, status)
		assert.Equal(t, "gateway timeout\n", body)
		assert.Less(t, time.Since(start), waitTimeout)
	})
	t.Run("streaming", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, base+"/sse", nil)
		require.NoError(t, err)
		req.Header.Set("X-Upstream-Host", up.host())
		res, err := c.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		br := bufio.NewReader(res.Body)
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "data: one\n", line) // arrived while the upstream still holds the response open
		release <- struct{}{}
		rest, err := io.ReadAll(br)
		require.NoError(t, err)
		assert.Equal(t, "\ndata: two\n\n", string(rest))
	})
	t.Run("upgrade", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", p.addr, waitTimeout)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(waitTimeout)))
		fmt.Fprintf(conn, "GET /upgrade HTTP/1.1\r\nHost: proxy\r\nX-Upstream-Host: %s\r\nConnection: Upgrade\r\nUpgrade: test-proto\r\n\r\n", up.host())
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
		fmt.Fprint(conn, "ping\n")
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "echo: ping\n", line)
	})
	t.Run("admin endpoints", func(t *testing.T) {
		admin := "http://" + p.metricsAddr
		status, _ := get(t, c, admin+"/healthz", nil)
		assert.Equal(t, http.StatusOK, status)
		status, _ = get(t, c, admin+"/readyz", nil)
		assert.Equal(t, http.StatusOK, status)
		status, body := get(t, c, admin+"/metrics", nil)
		require.Equal(t, http.StatusOK, status)
		for _, name := range []string{
			"http_server_request_duration_seconds_bucket",
			"http_server_active_requests",
			`http_client_request_duration_seconds_count{`,
			"token_fetch_count_total",
			"token_cache_hit_count_total",
			"token_cache_miss_count_total",
			"token_cached_audiences",
			"go_goroutines",
			"process_cpu_seconds_total",
		} {
			assert.Contains(t, body, name)
		}
		assert.Contains(t, body, `otel_scope_name="`+meterName+`"`)
		for _, j := range jwts {
			assert.NotContains(t, body, j)
		}
	})
	t.Run("logs hold no token", func(t *testing.T) {
		p.waitLog(t, `"msg":"request","method":"GET","path":"/a/b","target":"`+up.host()+`","status":200`)
		logs := p.logs.String()
		require.NotEmpty(t, jwts)
		for _, j := range jwts {
			assert.NotContains(t, logs, j)
		}
		assert.NotContains(t, logs, "inbound-secret")
		assert.Contains(t, logs, `"msg":"removing an inbound token header","header":"Authorization"`)
		assert.Contains(t, logs, `"msg":"request","method":"GET","path":"/a/b","target":"`+up.host()+`","status":200`)
		assert.Contains(t, logs, `clients can direct tokens to any host`)
	})
}

func TestE2ETokenUnavailable(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	sts.FailAll("AccessDenied")
	up := newRecordingUpstream(t, nil)
	p := startProxy(t, sts, "--token-audience", "https://api.example", "--upstream-host", up.host())
	c := testClient(t)

	status, body := get(t, c, "http://"+p.addr+"/x", map[string]string{"Authorization": "Bearer inbound"})
	assert.Equal(t, http.StatusBadGateway, status)
	assert.Equal(t, "token unavailable\n", body)
	_, hits := up.lastRequest()
	assert.Zero(t, hits, "upstream was called")
	p.waitLog(t, `"level":"ERROR","msg":"token unavailable"`)
	assert.Contains(t, p.logs.String(), "AccessDenied")
	for line := range strings.Lines(p.logs.String()) {
		if strings.Contains(line, `"msg":"token unavailable"`) {
			assert.Contains(t, line, `"code":"AccessDenied","fix":"attach an identity policy`, "the library's fix, in the proxy's record")
		}
	}

	status, _ = get(t, c, "http://"+p.metricsAddr+"/readyz", nil)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	status, metrics := get(t, c, "http://"+p.metricsAddr+"/metrics", nil)
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, metrics, `token_result="fetch_error"`)

	// Once STS recovers, the prefetch retry makes the proxy ready.
	sts.Reset()
	deadline := time.Now().Add(waitTimeout)
	for {
		status, _ = get(t, c, "http://"+p.metricsAddr+"/readyz", nil)
		if status == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
	}
	assert.Equal(t, http.StatusOK, status)
	status, _ = get(t, c, "http://"+p.addr+"/x", nil)
	assert.Equal(t, http.StatusOK, status)
	r, _ := up.lastRequest()
	aud, _ := verifyJWT(t, sts, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	assert.Equal(t, jwt.Audience{"https://api.example"}, aud)
}

func TestE2EGracefulShutdown(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	arrived, release := make(chan struct{}), make(chan struct{})
	up := newRecordingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-release:
		case <-time.After(waitTimeout):
		}
		fmt.Fprint(w, "finished")
	})
	p := startProxy(t, sts, "--upstream-host", up.host(), "--shutdown-timeout", "10s")
	c := testClient(t)

	type result struct {
		status int
		body   string
		err    error
	}
	resc := make(chan result, 1)
	go func() {
		res, err := c.Get("http://" + p.addr + "/inflight")
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		resc <- result{res.StatusCode, string(b), err}
	}()
	select {
	case <-arrived:
	case <-time.After(waitTimeout):
		t.Fatal("request did not reach the upstream")
	}
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitLog(t, `"msg":"shutting down"`)
	close(release)
	var r result
	select {
	case r = <-resc:
	case <-time.After(waitTimeout):
		t.Fatal("in-flight request did not complete")
	}
	require.NoError(t, r.err)
	assert.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "finished", r.body)
	assert.Equal(t, 0, p.wait(t), "logs:\n%s", p.logs.String())
	_, err := net.DialTimeout("tcp", p.addr, time.Second)
	assert.Error(t, err, "proxy still accepting after shutdown")
}

func TestE2ETLS(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	up := newRecordingUpstream(t, nil)
	certFile, keyFile := writeSelfSigned(t, t.TempDir())
	p := startProxy(t, sts, "--upstream-host", up.host(), "--tls-cert", certFile, "--tls-key", keyFile)

	pemBytes, err := os.ReadFile(certFile)
	require.NoError(t, err)
	block, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(c.CloseIdleConnections)
	status, body := get(t, c, "https://"+p.addr+"/tls", nil)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "upstream ok", body)
	r, _ := up.lastRequest()
	assert.True(t, strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "))
}

func TestE2ETokenCommand(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	p := startBinary(t, awsEnv(t, sts), "token", "--token-audience", "https://b.example", "--token-audience", "https://a.example",
		"--token-signing-algorithm", "ES384", "--token-duration", "10m")
	require.Equal(t, 0, p.wait(t), "logs:\n%s", p.logs.String())
	token := strings.TrimSpace(p.stdout.String())
	aud, exp := verifyJWT(t, sts, token)
	assert.ElementsMatch(t, jwt.Audience{"https://a.example", "https://b.example"}, aud)
	assert.WithinDuration(t, time.Now().Add(10*time.Minute), exp, 2*time.Minute)
	assert.NotContains(t, p.logs.String(), token)
}

func TestE2ETokenCommandLocalSTS(t *testing.T) {
	t.Parallel()
	p := startBinary(t, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TOKEN_AUDIENCE=https://local.example"}, "token", "--local-sts")
	require.Equal(t, 0, p.wait(t), "logs:\n%s", p.logs.String())
	token := strings.TrimSpace(p.stdout.String())
	assert.Len(t, strings.Split(token, "."), 3, "not a JWT")
	assert.Contains(t, p.logs.String(), "local development only")
	assert.NotContains(t, p.logs.String(), token)
}

func TestE2EMissingRegion(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	var env []string
	for _, kv := range awsEnv(t, sts) {
		if !strings.HasPrefix(kv, "AWS_REGION=") {
			env = append(env, kv)
		}
	}
	p := startBinary(t, env, "--listen-addr", "127.0.0.1:0", "--metrics-listen-addr", "127.0.0.1:0")
	assert.Equal(t, 1, p.wait(t))
	p.waitLog(t, "no AWS Region: tried --region, AWS_REGION, AWS_DEFAULT_REGION, the shared config and the EC2 instance metadata service")
	assert.Contains(t, p.logs.String(), "set --region or AWS_REGION (for example us-east-1), or add --local-sts to try stsproxy without AWS")
}

// echoUpgrade is an upstream handler that switches protocols and echoes
// lines until the connection closes.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test-proto\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	for {
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		fmt.Fprint(brw, "echo: "+line)
		brw.Flush()
	}
}

// openUpgrade opens an upgraded connection through the proxy and returns it
// with a function that sends a line and reads the echo.
func openUpgrade(t *testing.T, addr string) (net.Conn, func(string) (string, error)) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(waitTimeout)))
	fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: proxy\r\nConnection: Upgrade\r\nUpgrade: test-proto\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
	return conn, func(s string) (string, error) {
		if _, err := fmt.Fprint(conn, s+"\n"); err != nil {
			return "", err
		}
		return br.ReadString('\n')
	}
}

func TestE2EShutdownWaitsForUpgradedConnections(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	up := newRecordingUpstream(t, echoUpgrade)
	p := startProxy(t, sts, "--upstream-host", up.host(), "--shutdown-timeout", "20s")
	conn, echo := openUpgrade(t, p.addr)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitLog(t, `"msg":"shutting down"`)
	line, err := echo("still here")
	require.NoError(t, err)
	assert.Equal(t, "echo: still here\n", line, "the upgraded connection keeps working while draining")
	select {
	case <-p.done:
		t.Fatal("stsproxy exited with an upgraded connection open")
	default:
	}

	conn.Close() // the client ends the session: shutdown completes
	assert.Equal(t, 0, p.wait(t))
	assert.NotContains(t, p.logs.String(), "upgraded connections still open")
}

func TestE2EShutdownClosesUpgradedConnectionsAtTheDeadline(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	up := newRecordingUpstream(t, echoUpgrade)
	p := startProxy(t, sts, "--upstream-host", up.host(), "--shutdown-timeout", "500ms")
	_, echo := openUpgrade(t, p.addr)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, p.wait(t))
	assert.Contains(t, p.logs.String(), "upgraded connections still open at --shutdown-timeout")
	_, err := echo("gone")
	assert.Error(t, err, "the connection was closed")
}
