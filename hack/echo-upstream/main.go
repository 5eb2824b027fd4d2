// Command echo-upstream is a development upstream for stsproxy: it logs each
// request's Host and whether it carries an Authorization header, with the
// decoded JWT header and claims when it is a bearer token (never the
// signature), and answers with the request's method, path and headers as
// JSON (an Authorization value only as its scheme and length, a JWT in any
// other header, as stsproxy --token-header puts it, only as its length).
//
// With -issuer URL, a loopback issuer such as the one stsproxy --local-sts
// logs at startup, it also verifies each token with package verify: it
// fetches that issuer's OpenID discovery document and JWKS (on loopback
// only; nothing else is ever fetched), checks the RS256 or ES384 signature,
// exp and iat (not the audience), and reports "jwt_verified" with
// "jwt_claims" (and "jwt_error" when not verified) in the answer and the
// log. A token naming any other issuer is not verified. Without -issuer no
// token is verified.
//
// It listens on loopback unless told otherwise: the answers show which
// headers arrived, which is for the developer's eyes only.
//
//	go run ./hack/echo-upstream              # listens on 127.0.0.1:8081
//	go run ./hack/echo-upstream -addr :9000  # or --listen-addr :9000
//	go run ./hack/echo-upstream -issuer http://127.0.0.1:PORT
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// main is a thin shell around run, which tests can drive.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses flags and serves until ctx is done. It returns the exit code:
// 0 on success, 1 on a runtime failure, 2 on a bad flag.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	v, err := newVerifier(opts.issuer, loopbackTransport())
	if err != nil {
		fmt.Fprintf(stderr, "echo-upstream: invalid -issuer: %v\n", err)
		return 2
	}
	defer v.client.CloseIdleConnections()
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", opts.addr)
	if err != nil {
		fmt.Fprintf(stderr, "echo-upstream: listen: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: handler(log, v), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	log.Info("listening", "addr", ln.Addr().String(), "issuer", opts.issuer)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "echo-upstream: serve: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return 0
}

// defaultAddr is the port of aws-outbound-jwt-proxy's echo upstream, so that
// proxy's quick start works as written, on loopback: the answers echo the
// request's headers and are not for other hosts to read.
const defaultAddr = "127.0.0.1:8081"

// options are echo-upstream's flags.
type options struct {
	addr   string // host:port to listen on
	issuer string // the one issuer whose tokens are verified; empty: none
}

// parseFlags returns the options: the address to listen on (-addr, as in
// aws-outbound-jwt-proxy's echo upstream, or its synonym --listen-addr,
// stsproxy's spelling; the last one given wins) and the trusted issuer.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("echo-upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.addr, "addr", defaultAddr, "address to listen on, host:port")
	fs.StringVar(&o.addr, "listen-addr", defaultAddr, "the same as -addr")
	fs.StringVar(&o.issuer, "issuer", "", "verify tokens from this loopback issuer URL (stsproxy --local-sts logs it); empty verifies none")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "echo-upstream: unexpected argument %q\n", fs.Arg(0))
		return options{}, errors.New("unexpected argument")
	}
	return o, nil
}

// echo is the JSON body echo-upstream answers with.
type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   string              `json:"query,omitempty"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`

	// JWTVerified is set when the request carries a bearer JWT: whether it
	// comes from the -issuer and its signature and exp check out against
	// that issuer's keys.
	JWTVerified *bool `json:"jwt_verified,omitempty"`
	// JWTError says why the token is not verified.
	JWTError string `json:"jwt_error,omitempty"`
	// JWTClaims are the token's decoded claims; never the token itself or
	// its signature.
	JWTClaims json.RawMessage `json:"jwt_claims,omitempty"`
}

// handler logs and echoes each request, verifying a bearer JWT with v.
func handler(log *slog.Logger, v *verifier) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := echo{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host, Headers: redactTokens(r.Header)}
		attrs := []any{"method", r.Method, "host", r.Host, "path", r.URL.Path}
		auth := r.Header.Get("Authorization")
		attrs = append(attrs, "authorization", auth != "")
		if jwtHeader, claims, ok := decodeBearer(auth); ok {
			err := v.verify(r.Context(), strings.TrimPrefix(auth, "Bearer "))
			verified := err == nil
			e.JWTVerified, e.JWTClaims = &verified, json.RawMessage(claims)
			attrs = append(attrs, "jwt_header", json.RawMessage(jwtHeader), "jwt_claims", e.JWTClaims, "jwt_verified", verified)
			if err != nil {
				e.JWTError = err.Error()
				attrs = append(attrs, "jwt_error", e.JWTError)
			}
		}
		log.Info("request", attrs...)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e)
	})
}

// redactTokens returns a copy of h whose Authorization values keep only
// their scheme and length, and in whose other values every compact JWT
// (stsproxy --token-header can put the token in any header, inside
// --token-format) is replaced by its length: the answer goes back through
// the proxy to the client, which must not get the token (its claims are in
// jwt_claims).
func redactTokens(h http.Header) http.Header {
	h = h.Clone()
	for name, vals := range h {
		for i, v := range vals {
			if name == "Authorization" {
				scheme, _, _ := strings.Cut(v, " ")
				vals[i] = fmt.Sprintf("%s [redacted, %d bytes]", scheme, len(v))
				continue
			}
			vals[i] = jwtPattern.ReplaceAllStringFunc(v, func(jwt string) string {
				return fmt.Sprintf("[redacted JWT, %d bytes]", len(jwt))
			})
		}
	}
	return h
}

// jwtPattern matches a compact JWS whose header and payload are JSON
// objects, as every JWT's are: both parts start with eyJ, the base64url of
// `{"`.
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*`)

// decodeBearer decodes the header and claims of a "Bearer <jwt>" value. The
// signature is never decoded or returned, so the log cannot replay the token.
func decodeBearer(auth string) (header, claims string, ok bool) {
	token, found := strings.CutPrefix(auth, "Bearer ")
	if !found {
		return "", "", false
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES384})
	if err != nil || len(jws.Signatures) != 1 {
		return "", "", false
	}
	payload := jws.UnsafePayloadWithoutVerification() // verified, or not, by v.verify
	if !json.Valid(payload) {
		return "", "", false
	}
	h := jws.Signatures[0].Protected
	hj, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid,omitempty"`
		Typ any    `json:"typ,omitempty"`
	}{h.Algorithm, h.KeyID, h.ExtraHeaders[jose.HeaderType]})
	if err != nil {
		return "", "", false
	}
	return string(hj), string(payload), true
}
