package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// fileClock is a fake clock for tokenFile: its timers fire only when the
// test advances it, and each timer armed is announced on armed, so a test
// knows when the writer has acted and waits.
type fileClock struct {
	mu     sync.Mutex
	t      time.Time
	timers map[*fileTimer]bool
	armed  chan time.Time
}

type fileTimer struct {
	at time.Time
	ch chan time.Time
}

func newFileClock(start time.Time) *fileClock {
	return &fileClock{t: start, timers: map[*fileTimer]bool{}, armed: make(chan time.Time, 100)}
}

func (c *fileClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fileClock) timerAt(at time.Time) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	ft := &fileTimer{at: at, ch: make(chan time.Time, 1)}
	c.timers[ft] = true
	c.mu.Unlock()
	c.armed <- at
	return ft.ch, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		ok := c.timers[ft]
		delete(c.timers, ft)
		return ok
	}
}

// advanceTo moves the clock to t and fires the timers due by then.
func (c *fileClock) advanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
	for ft := range c.timers {
		if !ft.at.After(t) {
			ft.ch <- t
			delete(c.timers, ft)
		}
	}
}

// nextArmed waits for the writer to arm a timer and returns its moment.
func (c *fileClock) nextArmed(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-c.armed:
		return at
	case <-time.After(waitTimeout):
		t.Fatal("the token file writer armed no timer")
		return time.Time{}
	}
}

// tokenFileSource returns a token source over a fresh emulator whose hook
// signals changed, as stsproxy token --refresh wires it; a nil changed is
// made.
func tokenFileSource(t *testing.T, aud stsauth.Audience, changed chan struct{}) (*stsauth.TokenSource, chan struct{}) {
	t.Helper()
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	ts, changed := hookedSource(t, sts, aud, changed)
	return ts, changed
}

// tokenFileSourceWith is tokenFileSource that returns the emulator too.
func tokenFileSourceWith(t *testing.T, aud stsauth.Audience) (*stsauth.TokenSource, *ststest.Server, chan struct{}) {
	t.Helper()
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	ts, changed := hookedSource(t, sts, aud, nil)
	return ts, sts, changed
}

// hookedSource returns a token source over sts whose hook signals changed
// (made if nil).
func hookedSource(t *testing.T, sts *ststest.Server, aud stsauth.Audience, changed chan struct{}) (*stsauth.TokenSource, chan struct{}) {
	t.Helper()
	if changed == nil {
		changed = make(chan struct{}, 1)
	}
	ts, err := stsauth.NewTokenSource(sts.Client(), stsauth.WithTokenHook(func(tok stsauth.Token) {
		if tok.Audience == aud {
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}))
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	return ts, changed
}

// swapGetter asks next, which a test may swap, or fails while err is set.
type swapGetter struct {
	mu   sync.Mutex // guards next and err
	next tokenGetter
	err  error
}

func (g *swapGetter) set(next tokenGetter, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.next, g.err = next, err
}

func (g *swapGetter) Token(ctx context.Context, aud stsauth.Audience) (stsauth.Token, error) {
	g.mu.Lock()
	next, err := g.next, g.err
	g.mu.Unlock()
	if err != nil {
		return stsauth.Token{}, err
	}
	return next.Token(ctx, aud)
}

// startKeep runs a writer of path on clock in a goroutine, logging to logs;
// stop ends it and waits for it (and may be called again).
func startKeep(t *testing.T, path string, clock *fileClock, src tokenGetter, aud stsauth.Audience, changed chan struct{}) (f *tokenFile, logs *syncBuffer, ctx context.Context, stop func()) {
	t.Helper()
	logs = &syncBuffer{}
	f = newTokenFile(path, outputJWT, slog.New(slog.NewTextHandler(logs, nil)))
	f.now, f.timerAt = clock.now, clock.timerAt
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.keep(ctx, src, aud, changed)
	}()
	return f, logs, ctx, func() { cancel(); <-done }
}

func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func requireMode0600(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
}

// TestTokenFileKeep drives the writer on a fake clock: the file holds the
// first token, is replaced when the source fetches a new one, is removed
// before its token expires when no new token came, comes back with the next
// token (never with the one removed), and is removed when the writer stops.
func TestTokenFileKeep(t *testing.T) {
	t.Parallel()
	aud := stsauth.MustAudience("https://api.example.com")
	// A second source stands for the first once its replacement token
	// too is gone, since a replacement cannot be invalidated again.
	ts, changed := tokenFileSource(t, aud, nil)
	ts2, _ := tokenFileSource(t, aud, changed)
	src := &swapGetter{next: ts}
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	clock := newFileClock(time.Now())
	f, logs, ctx, stop := startKeep(t, path, clock, src, aud, changed)
	defer stop()

	// The first token, with its removal armed 10 s before it expires.
	at := clock.nextArmed(t)
	first, err := ts.Token(ctx, aud)
	require.NoError(t, err)
	assert.Equal(t, first.Value(), readToken(t, path))
	assert.Equal(t, first.Expiry.Add(-tokenFileMargin), at)
	requireMode0600(t, path)
	assert.True(t, f.holds.Load())

	// The source fetches a new token (here because the first was
	// rejected): the file is replaced at once.
	require.True(t, ts.Invalidate(first))
	second, err := ts.Token(ctx, aud)
	require.NoError(t, err)
	at = clock.nextArmed(t)
	assert.Equal(t, second.Value(), readToken(t, path))
	assert.Equal(t, second.Expiry.Add(-tokenFileMargin), at)
	requireMode0600(t, path)

	// No new token by the removal moment: the file is removed, and not
	// written again with the token the source still serves.
	clock.advanceTo(at)
	retryAt := clock.nextArmed(t)
	assert.Equal(t, at.Add(primeBackoffMin), retryAt)
	_, err = os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.False(t, f.holds.Load())
	assert.Contains(t, logs.String(), "token file removed: no new token before its token expires")
	clock.advanceTo(retryAt)
	assert.Equal(t, retryAt.Add(2*primeBackoffMin), clock.nextArmed(t), "retries back off")
	_, err = os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist)

	// The next token brings the file back.
	src.set(ts2, nil)
	third, err := ts2.Token(ctx, aud)
	require.NoError(t, err)
	// The fake clock is ahead of the source's real one, so the token has
	// only seconds left by it: a quarter of them is the margin.
	assert.Equal(t, removeAt(third, clock.now()), clock.nextArmed(t))
	assert.Equal(t, third.Value(), readToken(t, path))
	assert.True(t, f.holds.Load())

	stop()
	_, err = os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist, "the file outlived its writer")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "temporary files left behind")
	assert.Empty(t, jwtPattern.FindAllString(logs.String(), -1), "a token was logged")
}

// TestTokenFileRefreshedByTheSource runs the writer on real time against
// tokens of 12 s, which the source refreshes half way through (6 s) and
// the writer would remove at 9 s: the file is replaced by the source's own
// scheduled refresh, with no request but the writer's, and never removed.
// The scheduler refreshes only tokens used since they were minted, so this
// fails if the writer never asks for its first token again.
func TestTokenFileRefreshedByTheSource(t *testing.T) {
	t.Parallel()
	aud := stsauth.MustAudience("https://api.example.com")
	ts, sts, changed := tokenFileSourceWith(t, aud)
	sts.SetTokenLifetime(12 * time.Second)
	path := filepath.Join(t.TempDir(), "token")
	logs := &syncBuffer{}
	f := newTokenFile(path, outputJWT, slog.New(slog.NewTextHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.keep(ctx, ts, aud, changed)
	}()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(waitTimeout)
	first := ""
	for {
		got, err := os.ReadFile(path)
		switch {
		case err == nil && first == "":
			first = string(got)
		case err == nil && string(got) != first:
			require.NotContains(t, logs.String(), "token file removed")
			assert.Equal(t, 2, sts.Calls(), "one refresh, by the source's scheduler")
			return
		}
		require.NotContains(t, logs.String(), "token file removed", "the file was removed instead of refreshed")
		require.True(t, time.Now().Before(deadline), "the file was not replaced; logs:\n%s", logs.String())
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
	}
}

// TestTokenFileKeepSignalKeepsRetry: once the file is removed, a signal
// that brings no new token (the source's hook fires for a token the writer
// has already taken from the cache) keeps the retry pending: the retry
// comes when due and the next one backs off from it. It used to cancel the
// pending retry and arm a new one from the signal's moment with the doubled
// wait, so the retries depended on when such a signal was read (the
// flake of TestTokenFileKeep at "retries back off").
func TestTokenFileKeepSignalKeepsRetry(t *testing.T) {
	t.Parallel()
	aud := stsauth.MustAudience("https://api.example.com")
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	ts, err := stsauth.NewTokenSource(sts.Client())
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	// Unbuffered and sent to by the test alone: a send returns once the
	// writer has read it, so the test knows when each signal was seen.
	changed := make(chan struct{})
	path := filepath.Join(t.TempDir(), "token")
	clock := newFileClock(time.Now())
	_, _, _, stop := startKeep(t, path, clock, ts, aud, changed)
	defer stop()

	at := clock.nextArmed(t) // the removal of the first token
	clock.advanceTo(at)
	retryAt := clock.nextArmed(t)
	require.Equal(t, at.Add(primeBackoffMin), retryAt)

	// Two signals with no new token behind them: once the second is read,
	// the writer has acted on the first.
	changed <- struct{}{}
	changed <- struct{}{}
	clock.advanceTo(retryAt)
	assert.Equal(t, retryAt.Add(2*primeBackoffMin), clock.nextArmed(t),
		"a signal with no new token moved the pending retry")
	_, err = os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Equal(t, 1, sts.Calls())
}

// TestTokenFileKeepRetriesFailures: with no token to be had from the start
// there is no file, and the writer asks again with backoff until a token
// comes.
func TestTokenFileKeepRetriesFailures(t *testing.T) {
	t.Parallel()
	aud := stsauth.MustAudience("https://api.example.com")
	ts, changed := tokenFileSource(t, aud, nil)
	src := &swapGetter{}
	src.set(ts, errors.New("stsauth: get web identity token: AccessDenied"))
	path := filepath.Join(t.TempDir(), "token")
	start := time.Now()
	clock := newFileClock(start)
	f, logs, ctx, stop := startKeep(t, path, clock, src, aud, changed)
	defer stop()

	retryAt := clock.nextArmed(t)
	assert.Equal(t, start.Add(primeBackoffMin), retryAt)
	clock.advanceTo(retryAt)
	retryAt = clock.nextArmed(t)
	assert.Equal(t, start.Add(3*primeBackoffMin), retryAt, "retries back off")
	_, err := os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.False(t, f.holds.Load())
	assert.Contains(t, logs.String(), "token fetch failed; retrying")
	assert.Contains(t, logs.String(), "AccessDenied")

	src.set(ts, nil)
	clock.advanceTo(retryAt)
	tok, err := ts.Token(ctx, aud)
	require.NoError(t, err)
	assert.Equal(t, tok.Expiry.Add(-tokenFileMargin), clock.nextArmed(t))
	assert.Equal(t, tok.Value(), readToken(t, path))
	assert.True(t, f.holds.Load())
}

// TestTokenFileReadersNeverSeeAPart rewrites the file many times while
// readers read it: each read is one whole token, never a part or a mix,
// and the file keeps mode 0600 even if it had another.
func TestTokenFileReadersNeverSeeAPart(t *testing.T) {
	t.Parallel()
	ts, _ := tokenFileSource(t, stsauth.MustAudience("https://a.example.com"), nil)
	ctx := context.Background()
	a, err := ts.Token(ctx, stsauth.MustAudience("https://a.example.com"))
	require.NoError(t, err)
	b, err := ts.Token(ctx, stsauth.MustAudience("https://b.example.com"))
	require.NoError(t, err)

	for _, format := range []string{outputJWT, outputJSON} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "token")
			require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
			f := newTokenFile(path, format, slog.New(slog.DiscardHandler))
			wantA, err := encodeToken(a, format)
			require.NoError(t, err)
			wantB, err := encodeToken(b, format)
			require.NoError(t, err)
			require.NoError(t, f.write(a))

			stop := make(chan struct{})
			var wg sync.WaitGroup
			bad := make(chan string, 4)
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						got, err := os.ReadFile(path)
						if err != nil || !bytes.Equal(got, wantA) && !bytes.Equal(got, wantB) {
							select {
							case bad <- fmt.Sprintf("read %d bytes (error %v), not a whole token", len(got), err):
							default:
							}
							return
						}
					}
				})
			}
			for i := range 60 {
				tok := a
				if i%2 == 0 {
					tok = b
				}
				require.NoError(t, f.write(tok))
			}
			close(stop)
			wg.Wait()
			close(bad)
			for msg := range bad {
				t.Error(msg)
			}
			requireMode0600(t, path)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, entries, 1, "temporary files left behind")
		})
	}
}

func TestEncodeTokenJSON(t *testing.T) {
	t.Parallel()
	aud := stsauth.MustAudience("https://api.example.com")
	ts, _ := tokenFileSource(t, aud, nil)
	tok, err := ts.Token(context.Background(), aud)
	require.NoError(t, err)
	b, err := encodeToken(tok, outputJSON)
	require.NoError(t, err)
	var got struct {
		Token      string `json:"token"`
		Expiration string `json:"expiration"`
	}
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, tok.Value(), got.Token)
	exp, err := time.Parse(time.RFC3339, got.Expiration)
	require.NoError(t, err)
	assert.Equal(t, tok.Expiry.Truncate(time.Second).UTC(), exp.UTC())

	jwt, err := encodeToken(tok, outputJWT)
	require.NoError(t, err)
	assert.Equal(t, tok.Value(), string(jwt), "the jwt format is the token alone, no newline")
}

// TestTokenCommandFileOnce: without --refresh, the token is written to
// --output-file once, as JSON with TOKEN_OUTPUT_FORMAT, and nothing is
// printed.
func TestTokenCommandFileOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "token.json")
	var stdout, stderr syncBuffer
	env := envOf(map[string]string{"TOKEN_OUTPUT_FILE": path, "TOKEN_OUTPUT_FORMAT": "JSON"})
	code := run(context.Background(), []string{"token", "--local-sts", "--token-audience", "https://api.example.com"}, env, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Empty(t, stdout.String())
	var got map[string]string
	require.NoError(t, json.Unmarshal([]byte(readToken(t, path)), &got))
	assert.Regexp(t, `^eyJ`, got["token"])
	assert.NotEmpty(t, got["expiration"])
	requireMode0600(t, path)
}

func TestTokenCommandFileFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"refresh without a file", []string{"--refresh"}, nil, "invalid --refresh/TOKEN_REFRESH \"true\": want --output-file/TOKEN_OUTPUT_FILE too"},
		{"refresh from env without a file", nil, map[string]string{"TOKEN_REFRESH": "true"}, "invalid --refresh/TOKEN_REFRESH"},
		{"bad format", []string{"--output-format", "xml"}, nil, "invalid --output-format/TOKEN_OUTPUT_FORMAT \"xml\": want jwt or json"},
		{"no directory", []string{"--output-file", filepath.Join(dir, "missing", "token")}, nil, "invalid --output-file/TOKEN_OUTPUT_FILE"},
		{"a directory", []string{"--output-file", dir}, nil, "want a regular file or a new one"},
		{"bad admin address", []string{"--output-file", filepath.Join(dir, "t"), "--refresh", "--metrics-listen-addr", "nope"}, nil, "invalid --metrics-listen-addr/METRICS_LISTEN_ADDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			args := append([]string{"token", "--local-sts", "--token-audience", "https://api.example.com"}, tc.args...)
			code := run(context.Background(), args, envOf(tc.env), &stdout, &stderr)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr.String(), tc.want)
		})
	}

	// The proxy does not take the token file's flags.
	var stdout, stderr syncBuffer
	code := run(context.Background(), []string{"--output-file", filepath.Join(dir, "t")}, envOf(nil), &stdout, &stderr)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr.String(), "stsproxy: unknown flag --output-file: stsproxy does not take it")
}

// TestTokenCommandRefreshBinary runs "stsproxy token --refresh" as a
// process: the file appears with mode 0600, /readyz turns ready, and
// SIGTERM ends it with exit 0, removing the file.
func TestTokenCommandRefreshBinary(t *testing.T) {
	t.Parallel()
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	path := filepath.Join(t.TempDir(), "token")
	p := startBinary(t, awsEnv(t, sts), "token", "--token-audience", "https://api.example.com",
		"--output-file", path, "--refresh", "--metrics-listen-addr", "127.0.0.1:0")
	p.waitLog(t, `"msg":"token file written"`)
	_, metricsAddr, ok := listeningAddrs(p.logs.String())
	require.True(t, ok, "no listening record; logs:\n%s", p.logs.String())

	requireMode0600(t, path)
	assert.Regexp(t, `^eyJ[^\n]*$`, readToken(t, path))
	client := &http.Client{Transport: &http.Transport{}} // no forward proxy from the environment
	defer client.CloseIdleConnections()
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := client.Get("http://" + metricsAddr + path)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, p.wait(t), "logs:\n%s", p.logs.String())
	_, err := os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Empty(t, jwtPattern.FindAllString(p.logs.String(), -1), "a token was logged")
	assert.Equal(t, 1, sts.Calls())
}
