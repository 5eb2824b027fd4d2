package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/stsauth/stsauth"
)

// The token file that "stsproxy token --output-file PATH --refresh" keeps:
// for clients that read a token from a file (grpc's credentials/jwt, Kafka
// OAUTHBEARER callbacks, database drivers, scripts, other languages).
//
// The file is only ever replaced whole: each token is written to a
// temporary file in the same directory, with mode 0600, synced, and renamed
// over PATH, so a reader sees the old token or the new one, never a part.
// It is rewritten when the token source fetches a new token (its refresh
// moments, through stsauth.WithTokenHook), not on a timer of its own. If no
// new token can be had, the file is removed tokenFileMargin before its
// token expires (and the failure logged), so it never holds an expired
// token; a reader then finds no file rather than a token its API will
// refuse, and the file comes back with the next token. It is removed on
// exit too, since nothing keeps it fresh any more.

// tokenFileMargin is how long before its token expires the file is removed
// when no new token has replaced it: time for a reader to use the token it
// read, and for clocks to differ a little. A token with less time than
// 4·tokenFileMargin left when written keeps a quarter of it instead.
const tokenFileMargin = 10 * time.Second

// tokenGetter is the one method of *stsauth.TokenSource the writer uses.
type tokenGetter interface {
	Token(ctx context.Context, aud stsauth.Audience) (stsauth.Token, error)
}

// tokenFile keeps path holding a valid token of one audience set.
type tokenFile struct {
	path   string
	format string // outputJWT or outputJSON
	log    *slog.Logger

	// now and timerAt are time; tests replace them. timerAt returns a
	// channel that receives at (or soon after) at, and a stop function.
	now     func() time.Time
	timerAt func(at time.Time) (<-chan time.Time, func() bool)

	holds atomic.Bool // the file holds a token; /readyz reads it
}

func newTokenFile(path, format string, log *slog.Logger) *tokenFile {
	return &tokenFile{path: path, format: format, log: log, now: time.Now, timerAt: realTimerAt}
}

// realTimerAt is the production timerAt.
func realTimerAt(at time.Time) (<-chan time.Time, func() bool) {
	t := time.NewTimer(time.Until(at))
	return t.C, t.Stop
}

// encodeToken returns the file's contents for tok in format: the JWT
// alone, or a JSON object with the JWT and its expiry.
func encodeToken(tok stsauth.Token, format string) ([]byte, error) {
	if format == outputJSON {
		b, err := json.Marshal(struct {
			Token      string `json:"token"`
			Expiration string `json:"expiration"`
		}{tok.Value(), tok.Expiry.UTC().Format(time.RFC3339)})
		return append(b, '\n'), err
	}
	return []byte(tok.Value()), nil
}

// write replaces the file with tok, atomically: a temporary file in the
// same directory, mode 0600, synced, renamed over path.
func (f *tokenFile) write(tok stsauth.Token) error {
	data, err := encodeToken(tok, f.format)
	if err != nil {
		return err
	}
	dir, base := filepath.Split(f.path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("stsproxy: write token file: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("stsproxy: write token file: %w", err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err != nil {
		return fmt.Errorf("stsproxy: write token file: %w", err)
	}
	return nil
}

// remove removes the file, if it is there.
func (f *tokenFile) remove() error {
	f.holds.Store(false)
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stsproxy: remove token file: %w", err)
	}
	return nil
}

// removeAt returns when a token written at now is removed unless replaced.
func removeAt(tok stsauth.Token, now time.Time) time.Time {
	return tok.Expiry.Add(-min(tokenFileMargin, tok.Expiry.Sub(now)/4))
}

// keep keeps the file holding the current token of aud from src until ctx
// is done, then removes it. changed receives when src has a new token (its
// token hook). A token is written only if it is newer than the one last
// written, so a token whose file was removed is never written again. When
// src fails, keep tries again with capped exponential backoff; while the
// token on file is still good, src's own refreshes retry too. A wakeup that
// brings nothing new (a signal for a token already taken from the cache)
// keeps the retry already pending, so the retries follow the backoff
// whenever such signals arrive.
func (f *tokenFile) keep(ctx context.Context, src tokenGetter, aud stsauth.Audience, changed <-chan struct{}) {
	var written stsauth.Token // the last token written, on file or removed
	var expire <-chan time.Time
	stopExpire := func() bool { return false }
	var retry <-chan time.Time // nil: no retry pending
	var retryAt time.Time
	stopRetry := func() bool { return false }
	wait := primeBackoffMin
	// armRetry arms the next retry, unless one is pending, and returns
	// how long until it is due.
	armRetry := func() time.Duration {
		now := f.now()
		if retry == nil {
			retryAt = now.Add(wait)
			retry, stopRetry = f.timerAt(retryAt)
			wait = min(2*wait, primeBackoffMax)
		}
		return retryAt.Sub(now)
	}
	cancelRetry := func() {
		stopRetry()
		retry, stopRetry = nil, func() bool { return false }
	}
	defer func() {
		stopExpire()
		cancelRetry()
		if err := f.remove(); err != nil {
			f.log.Error("token file not removed on exit", "path", f.path, "error", err.Error())
		}
	}()
	for {
		tok, err := src.Token(ctx, aud)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			in := armRetry()
			f.log.Warn("token fetch failed; retrying", "path", f.path, "error", err.Error(), "retry_in", in.String())
		case tok.Expiry.After(written.Expiry) && tok.Expiry.After(f.now()):
			if err := f.write(tok); err != nil {
				in := armRetry()
				f.log.Error("token file not written; retrying", "path", f.path, "error", err.Error(), "retry_in", in.String())
				break
			}
			cancelRetry()
			written, wait = tok, primeBackoffMin
			f.holds.Store(true)
			stopExpire()
			until := removeAt(tok, f.now())
			expire, stopExpire = f.timerAt(until)
			f.log.Info("token file written", "path", f.path, "audience", aud.String(),
				"expiry", tok.Expiry.UTC().Format(time.RFC3339), "remove_at", until.UTC().Format(time.RFC3339))
		case !f.holds.Load():
			// The token the file held was removed and src still serves
			// it: wait for a new one, asking again with backoff.
			armRetry()
		default:
			// The file holds the token src serves: nothing to retry.
			cancelRetry()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// The source's scheduler refreshes only tokens used since they
			// were minted, and a token that this loop's own call fetched
			// is not yet: the signal its fetch sent brings the loop back at
			// once, and that Token call, a cache hit, marks it used.
		case <-retry:
			retry, stopRetry = nil, func() bool { return false }
		case <-expire:
			expire, stopExpire = nil, func() bool { return false }
			if err := f.remove(); err != nil {
				f.log.Error("token file about to expire and not removed", "path", f.path, "error", err.Error())
			} else {
				f.log.Error("token file removed: no new token before its token expires; a new one is written once STS answers",
					"path", f.path, "audience", aud.String(), "expiry", written.Expiry.UTC().Format(time.RFC3339))
			}
		}
	}
}
