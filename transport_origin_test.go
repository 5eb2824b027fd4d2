package stsauth

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// redirector is a base RoundTripper that answers 302 to the next URL of a
// chain and records the token header each hop received.
type redirector struct {
	next map[string]string // URL → Location
	got  []string          // "URL token?" per hop
	// noRequest leaves Response.Request unset, as RoundTrippers that build
	// their own responses (httptest.ResponseRecorder.Result, caches) do.
	noRequest bool
}

func (r *redirector) RoundTrip(req *http.Request) (*http.Response, error) {
	u := req.URL.String()
	r.got = append(r.got, u+" "+strconv.FormatBool(strings.HasPrefix(req.Header.Get("Authorization"), "Bearer ")))
	res := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}
	if r.noRequest {
		res.Request = nil
	}
	if loc, ok := r.next[u]; ok {
		res.StatusCode = http.StatusFound
		res.Header.Set("Location", loc)
	}
	return res, nil
}

func TestTransportRedirectKeepsTokenOnlyWithinOrigin(t *testing.T) {
	allowH, err := ParseAllowedHosts("h.example", "other.example")
	require.NoError(t, err)
	tests := []struct {
		name    string
		allowed *AllowedHosts
		chain   []string
		want    []bool // token at each hop
	}{
		{"same origin", nil, []string{"https://h.example/a", "https://h.example/b"}, []bool{true, true}},
		{"default port spelled out", nil, []string{"https://h.example/", "https://H.example:443/x"}, []bool{true, true}},
		{"downgrade, same host", nil, []string{"https://h.example/", "http://h.example/"}, []bool{true, false}},
		{"downgrade, port spelled out", nil, []string{"https://h.example:443/", "http://h.example:443/"}, []bool{true, false}},
		{"downgrade to an allowed host", allowH, []string{"https://h.example/", "http://h.example/"}, []bool{true, false}},
		{"downgrade later in the chain", allowH, []string{"http://h.example/", "https://other.example/", "http://h.example/x"}, []bool{true, true, false}},
		{"other port", nil, []string{"https://h.example/", "https://h.example:8443/"}, []bool{true, false}},
		{"other port, allowed host", allowH, []string{"https://h.example/", "https://h.example:8443/"}, []bool{true, true}},
		{"upgrade is another origin", nil, []string{"http://h.example/", "https://h.example/"}, []bool{true, false}},
		{"upgrade to an allowed host", allowH, []string{"http://h.example/", "https://h.example/"}, []bool{true, true}},
		{"other host", nil, []string{"https://h.example/", "https://other.example/"}, []bool{true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts, _, _ := newTestSource(t)
			base := &redirector{next: map[string]string{}}
			var want []string
			for i, u := range tc.chain {
				if i+1 < len(tc.chain) {
					base.next[u] = tc.chain[i+1]
				}
				want = append(want, u+" "+strconv.FormatBool(tc.want[i]))
			}
			client := &http.Client{Transport: &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base, AllowedHosts: tc.allowed}}
			resp, err := client.Get(tc.chain[0])
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, want, base.got)
		})
	}
}

// A redirect whose chain cannot be walked back to the first request, because
// the base left Response.Request unset, may have left the origin: it goes
// without the token.
func TestTransportRedirectWithoutResponseRequestDropsToken(t *testing.T) {
	allowH, err := ParseAllowedHosts("h.example")
	require.NoError(t, err)
	for _, allowed := range []*AllowedHosts{nil, allowH} {
		ts, _, _ := newTestSource(t)
		base := &redirector{noRequest: true, next: map[string]string{
			"https://h.example/":  "https://evil.example/",
			"https://h.example/a": "http://h.example/b",
		}}
		tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base}
		if allowed != nil {
			tr.AllowedHosts = allowed
			delete(base.next, "https://h.example/")
		} else {
			resp, err := (&http.Client{Transport: tr}).Get("https://h.example/")
			require.NoError(t, err)
			resp.Body.Close()
		}
		resp, err := (&http.Client{Transport: tr}).Get("https://h.example/a")
		require.NoError(t, err)
		resp.Body.Close()
		want := []string{"https://h.example/ true", "https://evil.example/ false", "https://h.example/a true", "http://h.example/b false"}
		if allowed != nil {
			want = want[2:]
		}
		assert.Equal(t, want, base.got, "AllowedHosts %v", allowed != nil)
	}
}

func TestTransportRequireTLS(t *testing.T) {
	ts, _, _ := newTestSource(t)
	base := &recorder{}
	tr := &Transport{Source: ts, Audience: FixedAudience(apiAudience), Base: base, RequireTLS: true}
	for _, u := range []string{"https://api.example.com/", "http://127.0.0.1:8080/", "http://127.9.9.9/", "http://[::1]:80/", "http://localhost/", "HTTP://LOCALHOST/"} {
		_, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, u, nil))
		require.NoError(t, err, u)
	}
	for _, u := range []string{"http://api.example.com/", "http://10.0.0.7/", "http://[2001:db8::1]/", "http://localhost.example.com/", "ws://api.example.com/",
		// Names Go's resolver looks up in DNS, however loopback they look.
		"http://127.1/", "http://2130706433/", "http://localhost./"} {
		body := newBody()
		_, err := tr.RoundTrip(httptest.NewRequest(http.MethodPost, u, body))
		require.ErrorIs(t, err, ErrCleartext, u)
		assert.True(t, body.closed.Load(), u)
	}
	assert.EqualValues(t, 6, base.sent.Load())

	tr.RequireTLS = false
	_, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil))
	require.NoError(t, err, "plain http is allowed by default")
}
