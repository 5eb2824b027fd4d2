package verify

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzVerify feeds arbitrary input to Verify with warm keys: it must never
// panic, must return claims or an *Error of a known kind, never both, and
// its error must not contain the input.
//
//	go test ./verify -run '^$' -fuzz FuzzVerify -fuzztime 60s
func FuzzVerify(f *testing.F) {
	clock := newClock()
	s := startSTS(f, clock, nil)
	v := newTestVerifier(f, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, ReplayCacheSize: 100})
	require.NoError(f, v.Prime(f.Context()))
	rs, es := mint(f, s, "RS256", aud), mint(f, s, "ES384", aud, "b")
	f.Add(rs)
	f.Add(es)
	f.Add(strings.Replace(rs, ".", "..", 1))
	p := strings.Split(es, ".")
	f.Add(p[0] + "." + p[1] + ".")
	f.Add("eyJhbGciOiJub25lIn0." + p[1] + ".")
	f.Add("")
	f.Add("...")
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := v.Verify(t.Context(), raw)
		if err == nil {
			if c == nil || c.Issuer != s.URL {
				t.Fatalf("Verify = %+v, nil; want claims from %s", c, s.URL)
			}
			var m map[string]any
			if json.Unmarshal(c.Raw, &m) != nil {
				t.Fatalf("Raw claims are not a JSON object")
			}
			return
		}
		if c != nil {
			t.Fatalf("Verify returned claims and %v", err)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("Verify error %T %v is not an *Error", err, err)
		}
		if _, ok := kinds[e.Kind]; !ok {
			t.Fatalf("Verify error kind %v is not a sentinel", e.Kind)
		}
		if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
			t.Fatalf("the error contains the input")
		}
	})
}
