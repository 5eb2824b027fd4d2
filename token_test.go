package stsauth

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holder keeps a Token where fmt reaches it only by reflection.
type holder struct {
	name string
	tok  Token
	ptr  *Token
	list []Token
}

// Holder keeps a Token in exported fields, where encoders look.
type Holder struct {
	Name string
	Tok  Token
	Ptr  *Token
	List []Token
	Map  map[string]Token
}

type xmlHolder struct{ Tok, Other Token }

func TestTokenJWTUnreachableByPrintingAndEncoding(t *testing.T) {
	ts, _, _ := newTestSource(t)
	tok, err := ts.Token(context.Background(), apiAudience)
	require.NoError(t, err)
	jwt := tok.Value()
	require.NotEmpty(t, jwt)
	// Pieces that would betray any part of the JWT, in any encoding fmt knows.
	header, payload, _ := strings.Cut(jwt, ".")
	payload, sig, _ := strings.Cut(payload, ".")
	needles := []string{header, payload, sig, fmt.Sprintf("%x", jwt), fmt.Sprintf("%X", jwt), fmt.Sprint([]byte(jwt))}

	inner := holder{name: "h", tok: tok, ptr: &tok, list: []Token{tok}}
	outer := Holder{Name: "h", Tok: tok, Ptr: &tok, List: []Token{tok}, Map: map[string]Token{"k": tok}}
	nested := struct {
		in  holder
		In  holder
		Out *Holder
		any any
	}{inner, inner, &outer, tok}
	values := map[string]any{
		"Token": tok, "*Token": &tok, "[]Token": []Token{tok}, "map": map[Token]int{tok: 1},
		"holder": inner, "*holder": &inner, "Holder": outer, "nested": nested, "anyslice": []any{tok, inner},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%b", "%o", "%O", "%e", "%E", "%f", "%F", "%g", "%G", "%c", "%U", "%p", "%T", "%8.3v", "%-20s", "% x", "%#x", "%+q", "%#q", "%z"}

	var outputs []string
	for name, v := range values {
		for _, verb := range verbs {
			outputs = append(outputs, name+" "+verb+": "+fmt.Sprintf(verb, v))
		}
		outputs = append(outputs, fmt.Sprint(v), fmt.Sprintln(v))

		var text, js bytes.Buffer
		slog.New(slog.NewTextHandler(&text, nil)).Info("m", "v", v, slog.Any("any", v))
		slog.New(slog.NewJSONHandler(&js, nil)).Info("m", "v", v, slog.Any("any", v))
		outputs = append(outputs, text.String(), js.String())

		if b, err := json.Marshal(v); err == nil {
			outputs = append(outputs, string(b))
		}
		if b, err := xml.Marshal(v); err == nil {
			outputs = append(outputs, string(b))
		}
		var g bytes.Buffer
		if err := gob.NewEncoder(&g).Encode(v); err == nil {
			outputs = append(outputs, g.String())
		}
	}
	// The encoders must succeed where the type allows, not just fail. gob
	// refuses a Token itself (Audience has no exported fields; gob ignores
	// MarshalText), which is as safe, and skips it in an unexported field.
	for _, v := range []any{tok, outer} {
		_, err := json.Marshal(v)
		require.NoError(t, err)
	}
	for _, v := range []any{tok, &tok, []Token{tok}, xmlHolder{tok, tok}} {
		b, err := xml.Marshal(v)
		require.NoError(t, err)
		require.Contains(t, string(b), "REDACTED")
	}
	require.NoError(t, gob.NewEncoder(io.Discard).Encode(struct {
		Name string
		tok  Token
	}{"h", tok}))
	for _, out := range outputs {
		for _, n := range needles {
			require.NotContains(t, out, n)
		}
	}
	assert.Contains(t, fmt.Sprintf("%v", tok), "https://api.example.com")
	assert.Contains(t, fmt.Sprintf("%d", tok), "REDACTED")
	assert.Equal(t, "", Token{}.Value(), "the zero Token has no JWT")
	assert.Contains(t, Token{}.String(), "JWT: none")
}

func TestTokenThatIsNotACompactJWSIsAFetchError(t *testing.T) {
	good := testJWT(1, newFakeClock().Now(), newFakeClock().Now().Add(time.Hour))
	for _, tc := range []struct{ name, jwt string }{
		{"CRLF inside", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIi\r\nOiJ4In0.c2ln"},
		{"trailing newline", good + "\n"},
		{"header injection", good + "\r\nX-Evil: 1"},
		{"space", "eyJhbGciOiJSUzI1NiJ9 .eyJzdWIiOiJ4In0.c2ln"},
		{"two segments", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0"},
		{"four segments", good + ".c2ln"},
		{"empty signature", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0."},
		{"empty header", ".eyJzdWIiOiJ4In0.c2ln"},
		{"padding", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln=="},
		{"standard base64", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2+ln/"},
		{"JSON serialization", `{"payload":"eyJzdWIiOiJ4In0","signatures":[]}`},
		{"too large", "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("A", MaxTokenSize) + ".c2ln"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			calls := 0
			client := clientFunc(func(context.Context, *sts.GetWebIdentityTokenInput, ...func(*sts.Options)) (*sts.GetWebIdentityTokenOutput, error) {
				calls++
				jwt := tc.jwt
				if calls > 1 {
					jwt = good
				}
				exp := clock.Now().Add(time.Hour)
				return &sts.GetWebIdentityTokenOutput{WebIdentityToken: &jwt, Expiration: &exp}, nil
			})
			ts, err := NewTokenSource(client)
			require.NoError(t, err)
			t.Cleanup(func() { ts.Close() })
			useClock(ts, clock)
			_, err = ts.Token(context.Background(), apiAudience)
			var te *TokenError
			require.ErrorAs(t, err, &te)
			assert.NotContains(t, err.Error(), "eyJ", "the error never quotes the token")
			// Not cached: once the backoff ends the next call fetches again.
			clock.Advance(backoffMax)
			tok, err := ts.Token(context.Background(), apiAudience)
			require.NoError(t, err)
			assert.Equal(t, good, tok.Value())
			assert.Equal(t, 2, calls)
		})
	}
	require.NoError(t, checkCompactJWS(good))
	require.NoError(t, checkCompactJWS("eyJhbGciOiJSUzI1NiJ9."+strings.Repeat("A", MaxTokenSize-26)+".c2ln"), "exactly MaxTokenSize is accepted")
}

// endlessBody is an STS answer that never ends: the start of a token, then
// "A" for ever (up to 64 MiB, so a reader without a cap fails rather than
// hangs). It counts the bytes read from it.
type endlessBody struct {
	head io.Reader
	read atomic.Int64
}

func (b *endlessBody) Read(p []byte) (int, error) {
	if b.read.Load() >= 64<<20 {
		return 0, io.EOF
	}
	n, err := b.head.Read(p)
	if err == io.EOF {
		n, err = copy(p, bytes.Repeat([]byte("A"), len(p))), nil
	}
	b.read.Add(int64(n))
	return n, err
}

func (b *endlessBody) Close() error { return nil }

// httpClientFunc adapts a function to the SDK's HTTPClient.
type httpClientFunc func(*http.Request) (*http.Response, error)

func (f httpClientFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// TestSTSResponseBodyIsCapped answers GetWebIdentityToken with a body that
// never ends: the SDK must stop reading at the cap, not buffer it all, and
// the fetch fails with the size error. The answer comes from an in-memory
// HTTP client, not a socket: the cap wraps whatever HTTP client the STS
// client has, and a connection torn down under load (it once failed with
// "use of closed network connection" on a cold, loaded run) is not what
// this test is about.
func TestSTSResponseBodyIsCapped(t *testing.T) {
	body := &endlessBody{head: strings.NewReader(`<GetWebIdentityTokenResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetWebIdentityTokenResult><WebIdentityToken>eyJhbGciOiJSUzI1NiJ9.`)}
	var calls atomic.Int32
	client := sts.New(sts.Options{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		BaseEndpoint: aws.String("http://127.0.0.1:1"),
		HTTPClient: httpClientFunc(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/xml"}},
				Body: body, ContentLength: -1, Request: r}, nil
		}),
		RetryMaxAttempts: 1,
	})
	ts, err := NewTokenSource(client)
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	_, err = ts.Token(context.Background(), apiAudience)
	require.ErrorIs(t, err, errResponseTooLarge)
	assert.EqualValues(t, 1, calls.Load())
	// The cap, and one byte for each read that finds it passed (the SDK
	// drains the body before closing it).
	assert.LessOrEqual(t, body.read.Load(), int64(maxResponseSize+8), "read past the cap")
}
