package verifybench

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/stsauth/stsauth/ststest"
	"github.com/stsauth/stsauth/verify"
)

const audience = "https://api.example.com"

// awsClaims is what a go-oidc user decodes to read the same claims
// verify.Claims carries, so the "+claims" variant does the same work.
type awsClaims struct {
	Sub string `json:"sub"`
	Jti string `json:"jti"`
	AWS struct {
		Account      string   `json:"aws_account"`
		SourceRegion string   `json:"source_region"`
		OrgID        string   `json:"org_id"`
		OUPath       []string `json:"ou_path"`
		PrincipalID  string   `json:"principal_id"`
		SessionExp   string   `json:"original_session_exp"`
	} `json:"https://sts.amazonaws.com/"`
}

// fixture is an emulator, one token per algorithm, and the verifiers with
// warm keys: package verify with its token cache (the default) and without
// it, and go-oidc.
type fixture struct {
	srv     *ststest.Server
	tokens  map[string]string
	ours    *verify.Verifier // the default: a token sent again is a cache hit
	noCache *verify.Verifier // TokenCacheSize -1: every call a first check
	oidc    *oidc.IDTokenVerifier
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	srv := ststest.NewServer()
	tb.Cleanup(srv.Close)
	ctx := context.Background()
	f := &fixture{srv: srv, tokens: map[string]string{}}
	for _, alg := range []string{"RS256", "ES384"} {
		out, err := srv.Client().GetWebIdentityToken(ctx, &sts.GetWebIdentityTokenInput{
			Audience:         []string{audience},
			SigningAlgorithm: aws.String(alg),
			DurationSeconds:  aws.Int32(3600),
		})
		if err != nil {
			tb.Fatal(err)
		}
		f.tokens[alg] = aws.ToString(out.WebIdentityToken)
	}
	newVerifier := func(cacheSize int) *verify.Verifier {
		v, err := verify.New(verify.Config{
			Issuers:                      []verify.Issuer{{URL: srv.URL, Account: srv.AccountID}},
			Audiences:                    []string{audience},
			AllowInsecureLoopbackIssuers: true,
			Logger:                       slog.New(slog.NewTextHandler(io.Discard, nil)),
			TokenCacheSize:               cacheSize,
		})
		if err != nil {
			tb.Fatal(err)
		}
		if err := v.Prime(ctx); err != nil {
			tb.Fatal(err)
		}
		return v
	}
	f.ours, f.noCache = newVerifier(0), newVerifier(-1)
	provider, err := oidc.NewProvider(ctx, srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	f.oidc = provider.Verifier(&oidc.Config{
		ClientID:             audience,
		SupportedSigningAlgs: []string{oidc.RS256, oidc.ES384},
	})
	// Warm go-oidc's key cache (it fetches on first use), and verify's
	// token cache.
	for _, tok := range f.tokens {
		if _, err := f.oidc.Verify(ctx, tok); err != nil {
			tb.Fatal(err)
		}
		if _, err := f.ours.Verify(ctx, tok); err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

// TestSameVerdicts checks that the verifiers accept the benchmark's tokens
// and read the same claims, so the benchmark compares like with like; and
// that verify reads the same claims from its cache.
func TestSameVerdicts(t *testing.T) {
	f := newFixture(t)
	for alg, tok := range f.tokens {
		c, err := f.ours.Verify(context.Background(), tok)
		if err != nil {
			t.Fatalf("%s: verify: %v", alg, err)
		}
		for _, v := range []*verify.Verifier{f.ours, f.noCache} { // a hit, and a first check
			again, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("%s: verify again: %v", alg, err)
			}
			if string(again.Raw) != string(c.Raw) || again.Subject != c.Subject || again.AWS.Account != c.AWS.Account {
				t.Errorf("%s: verify read %+v, then %+v", alg, c, again)
			}
		}
		idt, err := f.oidc.Verify(context.Background(), tok)
		if err != nil {
			t.Fatalf("%s: go-oidc: %v", alg, err)
		}
		var ac awsClaims
		if err := idt.Claims(&ac); err != nil {
			t.Fatal(err)
		}
		if ac.Sub != c.Subject || ac.AWS.Account != c.AWS.Account || ac.AWS.OrgID != c.AWS.OrgID || len(ac.AWS.OUPath) != len(c.AWS.OUPath) {
			t.Errorf("%s: go-oidc read %+v, verify read %+v", alg, ac, c)
		}
		if idt.Expiry.Unix() != c.Expiry.Unix() {
			t.Errorf("%s: expiry %v vs %v", alg, idt.Expiry, c.Expiry)
		}
	}
}

// BenchmarkVerify verifies the same token over and over with warm keys, as
// a receiver sees a token its sender reuses: package verify as configured by
// default (typed AWS claims included; every call after the first is a hit
// of its token cache), package verify without the cache (every call a first
// check), go-oidc's Verify alone, and go-oidc's Verify plus decoding the AWS
// claims, the same work verify does.
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	for _, alg := range []string{"RS256", "ES384"} {
		tok := f.tokens[alg]
		b.Run("alg="+alg+"/impl=stsauth-verify", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.ours.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("alg="+alg+"/impl=stsauth-verify-nocache", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.noCache.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("alg="+alg+"/impl=go-oidc", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.oidc.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("alg="+alg+"/impl=go-oidc+claims", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				idt, err := f.oidc.Verify(ctx, tok)
				if err != nil {
					b.Fatal(err)
				}
				var c awsClaims
				if err := idt.Claims(&c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyParallel is the ES384 case of BenchmarkVerify from every
// core: it shows whether any verifier serializes on a lock.
func BenchmarkVerifyParallel(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	tok := f.tokens["ES384"]
	b.Run("alg=ES384/impl=stsauth-verify", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.ours.Verify(ctx, tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("alg=ES384/impl=stsauth-verify-nocache", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.noCache.Verify(ctx, tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("alg=ES384/impl=go-oidc", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.oidc.Verify(ctx, tok); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
