package stsauth

import (
	"context"
	"io"
	"log/slog"
	"net/http"
)

// A rejected token is replaced once. When the upstream answers 401 to a
// request that carried a token, the token may have been revoked, or minted
// for a verifier that has since rotated its view of the issuer's keys:
// Transport drops exactly that token from the cache and sends the request
// again, once, with a fresh one.

// maxDrain bounds how much of a 401 body is read so that its connection
// can be reused.
const maxDrain = 4 << 10

// sendRetrying sends out with Base. If the answer is 401, out carried tok
// and req's body can be replayed (GetBody, or no body), it replaces tok in
// the source and sends a copy of req once more with the new token;
// otherwise it returns the 401 as it came.
func (t *Transport) sendRetrying(req, out *http.Request, name string, tok Token) (*http.Response, error) {
	resp, err := t.base().RoundTrip(out)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || tok.b == nil {
		return resp, err
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !replayable {
		return resp, nil
	}
	fresh, ok := t.Source.replace(req.Context(), tok)
	if !ok {
		return resp, nil
	}
	again := new(http.Request)
	*again = *out
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		again.Body = body
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	resp.Body.Close()
	again.Header = cloneHeaderWith(req.Header, name, t.headerValue(fresh))
	t.Source.countRetry(req.Context(), tok.Audience)
	return t.base().RoundTrip(again)
}

// countRetry counts a request or call sent again, with a new token, after
// the upstream rejected the token of aud.
func (ts *TokenSource) countRetry(ctx context.Context, aud Audience) {
	if e := ts.cache.get(aud.key); e != nil {
		ts.lifecycle.retries.Add(ctx, 1, e.attrs.add...)
	}
}

// Invalidate drops tok from the cache, if it is still the token cached for
// its audience set, so that the next Token call fetches a new one; a newer
// token that another caller already fetched stays. It reports whether it
// dropped tok. A token fetched to replace an invalidated one is not
// invalidated again: an upstream that rejects every token costs one extra
// STS call per token lifetime, not one per request. Use it with a transport
// of your own when the upstream rejects a token ([Transport] does it for
// 401 answers).
func (ts *TokenSource) Invalidate(tok Token) bool {
	if tok.b == nil {
		return false
	}
	e := ts.cache.get(tok.Audience.key)
	if e == nil {
		return false
	}
	c := e.state.Load()
	if c == nil || c.tok.b != tok.b || c.replacement {
		return false
	}
	if !e.state.CompareAndSwap(c, dropped) {
		return false
	}
	ts.cfg.logger.Info("stsauth: token invalidated after the upstream rejected it", slog.String("audience", tok.Audience.String()))
	return true
}

// replace invalidates tok and returns the token to use instead: a new one,
// or one that another caller fetched since. It reports false when there is
// none to try: tok is a replacement already, or no new token can be had.
func (ts *TokenSource) replace(ctx context.Context, tok Token) (Token, bool) {
	if !ts.Invalidate(tok) {
		e := ts.cache.get(tok.Audience.key)
		if e == nil {
			return Token{}, false
		}
		c := e.state.Load()
		if c == nil || c.tok.b == tok.b || !ts.now().Before(c.expireAt) {
			return Token{}, false
		}
		return c.tok, true
	}
	fresh, err := ts.Token(ctx, tok.Audience)
	return fresh, err == nil
}
