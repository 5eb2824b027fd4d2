package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stsauth/stsauth/ststest"
)

// fromCache is the subject markCached gives a cached entry: claims with it
// can only have come from the cache.
const fromCache = "arn:aws:iam::000000000000:role/served-from-the-cache"

// markCached sets the subject of tok's cache entry to fromCache, so that a
// test can tell a cache hit from a verification. It fails the test if tok
// is not cached.
func markCached(t *testing.T, v *Verifier, tok string) {
	t.Helper()
	h := hashToken(tok)
	e := v.cache.get(&h)
	require.NotNil(t, e, "the token is cached")
	e.claims.Subject = fromCache
}

func TestTokenCacheHit(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	var checks atomic.Int64
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, Policy: Policy{
		Check: func(*Claims) error { checks.Add(1); return nil },
	}})
	for _, alg := range []string{"RS256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			tok := mint(t, s, alg, aud)
			first, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
			markCached(t, v, tok)
			before := checks.Load()
			second, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
			assert.Equal(t, fromCache, second.Subject, "the second Verify is answered from the cache")
			assert.Equal(t, before+1, checks.Load(), "the policy runs on a hit")
			assert.Equal(t, first.ID, second.ID)
			assert.Equal(t, first.AWS, second.AWS)

			second.Subject = "changed by the caller"
			third, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
			assert.Equal(t, fromCache, third.Subject, "each call gets its own Claims")
			assert.NotSame(t, second, third)
		})
	}
	assert.Equal(t, 1, s.JWKSCalls())
}

// The cache stores the SHA-256 of a token and claims decoded from its
// payload: no entry holds the token's bytes.
func TestTokenCacheHoldsNoToken(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}})
	tok := mint(t, s, "ES384", aud)
	_, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	h := hashToken(tok)
	e := v.cache.get(&h)
	require.NotNil(t, e)
	dump, err := json.Marshal(e.claims)
	require.NoError(t, err)
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	assert.NotContains(t, string(dump)+fmt.Sprintf("%+v", e), sig, "no entry holds the signature")
	assert.NotContains(t, string(dump)+fmt.Sprintf("%+v", e), tok[:strings.IndexByte(tok, '.')], "nor the encoded header")
}

// TestTokenCacheNeverServesAnotherToken: a token that differs from a cached
// one in any byte, or by a byte added or removed, is never answered from the
// cache. Each variant is either refused or verified on its own (a flip of
// base64 padding bits can leave the decoded bytes unchanged).
func TestTokenCacheNeverServesAnotherToken(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}})
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for _, alg := range []string{"RS256", "ES384"} {
		t.Run(alg, func(t *testing.T) {
			tok := mint(t, s, alg, aud)
			_, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
			markCached(t, v, tok)
			served := 0
			check := func(variant, desc string) {
				if variant == tok {
					return
				}
				c, err := v.Verify(t.Context(), variant)
				if err == nil && c.Subject == fromCache {
					t.Errorf("%s: answered from the cache of another token", desc)
				}
				if err == nil {
					served++
				}
			}
			// Every byte of the RS256 token; every fifth of the ES384 one,
			// whose variants that reach the signature check cost
			// milliseconds each under the race detector. The cache does
			// not look at the algorithm; FuzzTokenCache covers both.
			stride := 1
			if alg == "ES384" {
				stride = 5
			}
			for i := 0; i < len(tok); i += stride {
				// Another base64url character (the token keeps its shape,
				// so the change reaches the signature check), and a flip of
				// the low bit (often a character outside the alphabet).
				next := alphabet[(strings.IndexByte(alphabet, tok[i])+1)%len(alphabet)]
				if tok[i] == '.' {
					next = 'A'
				}
				check(tok[:i]+string(next)+tok[i+1:], fmt.Sprintf("byte %d to %q", i, next))
				check(tok[:i]+string(tok[i]^1)+tok[i+1:], fmt.Sprintf("byte %d xor 1", i))
			}
			check(tok[:len(tok)-1], "last byte removed")
			check(tok[1:], "first byte removed")
			check(tok+"A", "a byte appended")
			check("A"+tok, "a byte prepended")
			h := hashToken(tok)
			e := v.cache.get(&h)
			require.NotNil(t, e, "the original stays cached")
			c, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
			assert.Equal(t, fromCache, c.Subject, "and is still served from it")
			t.Logf("%d variants of %d bytes verified on their own (base64 padding bits)", served, len(tok))
		})
	}
}

// FuzzTokenCache: replace one byte of a cached token with another, anywhere:
// the result is never answered from the cache.
//
//	go test ./verify -run '^$' -fuzz FuzzTokenCache -fuzztime 60s
func FuzzTokenCache(f *testing.F) {
	clock := newClock()
	s := startSTS(f, clock, nil)
	v := newTestVerifier(f, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}})
	toks := []string{mint(f, s, "RS256", aud), mint(f, s, "ES384", aud)}
	hashes := make(map[tokenHash]bool)
	for _, tok := range toks {
		_, err := v.Verify(f.Context(), tok)
		require.NoError(f, err)
		h := hashToken(tok)
		v.cache.get(&h).claims.Subject = fromCache
		hashes[h] = true
	}
	f.Add(false, uint16(0), byte('B'))
	f.Add(true, uint16(40), byte('.'))
	f.Add(false, uint16(len(toks[0])-1), byte('A'))
	f.Add(true, uint16(len(toks[1])/2), byte('x'))
	f.Fuzz(func(t *testing.T, ec bool, pos uint16, b byte) {
		tok := toks[0]
		if ec {
			tok = toks[1]
		}
		i := int(pos) % len(tok)
		if tok[i] == b {
			return
		}
		variant := tok[:i] + string([]byte{b}) + tok[i+1:]
		c, err := v.Verify(t.Context(), variant)
		if err == nil && c.Subject == fromCache {
			t.Fatalf("byte %d set to %q: answered from the cache of another token", i, b)
		}
	})
}

// TestTokenCacheRechecksExpiry: a cached token is accepted up to exp plus
// the leeway, as a new one would be, and refused after, and its entry goes.
func TestTokenCacheRechecksExpiry(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	for _, leeway := range []time.Duration{0, 10 * time.Second, -1} {
		t.Run(fmt.Sprint("leeway=", leeway), func(t *testing.T) {
			v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, Leeway: leeway})
			tok := mint(t, s, "ES384", aud)
			c, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
			markCached(t, v, tok)
			last := c.Expiry.Add(v.leeway) // the last instant the token is accepted
			at := func(tm time.Time) *fakeClock {
				fc := newClock()
				fc.ns.Store(tm.UnixNano())
				return fc
			}
			v.now = at(last).Now
			c, err = v.Verify(t.Context(), tok)
			require.NoError(t, err, "accepted at exp + leeway")
			assert.Equal(t, fromCache, c.Subject)
			v.now = at(last.Add(time.Nanosecond)).Now
			_, err = v.Verify(t.Context(), tok)
			require.ErrorIs(t, err, ErrExpired, "refused a moment later, from the cache")
			assert.Zero(t, v.cache.len(), "the expired entry is dropped")
			_, err = v.Verify(t.Context(), tok)
			assert.ErrorIs(t, err, ErrExpired, "and verified anew, refused again")
		})
	}
}

// TestTokenCacheDropsRotatedKey: ststest rotates twice, so the key of a
// cached token leaves the JWKS; once the verifier has fetched the new key
// set, the cached token is no longer accepted.
func TestTokenCacheDropsRotatedKey(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}})
	old := mint(t, s, "RS256", aud) // signed with RSA_0
	_, err := v.Verify(t.Context(), old)
	require.NoError(t, err)
	markCached(t, v, old)

	s.Rotate()
	s.Rotate() // the JWKS now has RSA_2, EC384_2, RSA_1, EC384_1
	c, err := v.Verify(t.Context(), old)
	require.NoError(t, err, "until the verifier sees the new key set, its cache stands")
	assert.Equal(t, fromCache, c.Subject)

	clock.Advance(DefaultRefetchCooldown)
	_, err = v.Verify(t.Context(), mint(t, s, "RS256", aud)) // RSA_2: refetch
	require.NoError(t, err)
	require.Equal(t, 2, s.JWKSCalls())
	_, err = v.Verify(t.Context(), old)
	require.ErrorIs(t, err, ErrUnknownKey, "the key left the JWKS: the token is verified anew and refused")
	h := hashToken(old)
	assert.Nil(t, v.cache.get(&h), "its entry is dropped")
	assert.Equal(t, 2, s.JWKSCalls(), "inside the cooldown: no other fetch")
}

// TestTokenCacheAcrossRefresh: a background refresh that still publishes
// the key keeps the cached token; one that no longer does drops it. Hits
// start the refresh themselves, as any use of a known key does.
func TestTokenCacheAcrossRefresh(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	ti.set(func(ti *testIssuer) { ti.cacheControl = "max-age=60" })
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL}}, Audiences: []string{aud}})
	tok := sign(t, ti.keys.rsa, jose.RS256, "rsa-1", claimsFor(ti.URL, clock.Now(), aud), nil)
	_, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	markCached(t, v, tok)

	clock.Advance(61 * time.Second)
	c, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	assert.Equal(t, fromCache, c.Subject)
	v.fetching.Wait()
	require.Len(t, ti.fetches(), 2, "the hit started a background refresh")
	c, err = v.Verify(t.Context(), tok)
	require.NoError(t, err)
	assert.Equal(t, fromCache, c.Subject, "the refreshed key set still publishes the key: the entry stays")

	ti.set(func(ti *testIssuer) {
		var set jose.JSONWebKeySet
		require.NoError(t, json.Unmarshal(ti.jwks, &set))
		set.Keys = set.Keys[1:] // only ec-1 is left
		var err error
		ti.jwks, err = json.Marshal(set)
		require.NoError(t, err)
	})
	clock.Advance(61 * time.Second)
	_, err = v.Verify(t.Context(), tok) // starts the refresh
	require.NoError(t, err)
	v.fetching.Wait()
	require.Len(t, ti.fetches(), 3)
	_, err = v.Verify(t.Context(), tok)
	require.ErrorIs(t, err, ErrUnknownKey, "rsa-1 left the JWKS")
	assert.Zero(t, v.cache.len())
}

// The replay guard applies to a cached token as to a new one: its second
// use is a replay.
func TestTokenCacheReplayGuard(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, ReplayCacheSize: 10})
	tok := mint(t, s, "ES384", aud)
	_, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	markCached(t, v, tok)
	_, err = v.Verify(t.Context(), tok)
	assert.ErrorIs(t, err, ErrReplay)
}

// A token the policy refuses is remembered too (its signature checked out),
// and refused on every use.
func TestTokenCachePolicyRefusal(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, Policy: Policy{OrgIDs: []string{"o-other"}}})
	tok := mint(t, s, "ES384", aud)
	for range 2 {
		_, err := v.Verify(t.Context(), tok)
		assert.ErrorIs(t, err, ErrPolicy)
	}
	assert.Equal(t, 1, v.cache.len())
}

func TestTokenCacheSize(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	t.Run("default", func(t *testing.T) {
		v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}})
		require.NotNil(t, v.cache)
		assert.Equal(t, DefaultTokenCacheSize, v.cache.perShard*len(v.cache.shards))
	})
	t.Run("off", func(t *testing.T) {
		v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, TokenCacheSize: -1})
		assert.Nil(t, v.cache)
		tok := mint(t, s, "ES384", aud)
		for range 2 {
			c, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
			assert.NotEqual(t, fromCache, c.Subject)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, TokenCacheSize: 3})
		var toks []string
		for range 5 {
			tok := mint(t, s, "RS256", aud)
			toks = append(toks, tok)
			_, err := v.Verify(t.Context(), tok)
			require.NoError(t, err)
		}
		assert.Equal(t, 3, v.cache.len())
		for _, tok := range toks {
			_, err := v.Verify(t.Context(), tok)
			require.NoError(t, err, "an evicted token is verified anew")
		}
		assert.Equal(t, 3, v.cache.len())
	})
}

// When a shard is full, expired entries go before live ones.
func TestTokenCacheEvictsExpiredFirst(t *testing.T) {
	t.Parallel()
	c := newTokenCache(2)
	require.Len(t, c.shards, 1)
	now := start
	hs := []tokenHash{{1}, {2}, {3}}
	live, dead := &cacheEntry{until: now.Add(time.Minute)}, &cacheEntry{until: now.Add(-time.Second)}
	c.add(&hs[0], live, now)
	c.add(&hs[1], dead, now)
	c.add(&hs[2], &cacheEntry{until: now.Add(time.Minute)}, now)
	assert.Same(t, live, c.get(&hs[0]), "the live entry stays")
	assert.Nil(t, c.get(&hs[1]), "the expired one goes")
	assert.NotNil(t, c.get(&hs[2]))
}

func TestTokenCacheShards(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ size, shards, perShard int }{
		{1, 1, 1}, {100, 1, 100}, {128, 2, 64}, {1000, 8, 125}, {DefaultTokenCacheSize, 16, 256}, {1 << 20, 16, 1 << 16},
	} {
		c := newTokenCache(tc.size)
		assert.Equal(t, tc.shards, len(c.shards), "size %d", tc.size)
		assert.Equal(t, tc.perShard, c.perShard, "size %d", tc.size)
	}
}

// Concurrent hits on one token while the keys refresh in the background:
// every call succeeds, under the race detector.
func TestTokenCacheConcurrentHits(t *testing.T) {
	t.Parallel()
	clock := newClock()
	ti := newTestIssuer(t)
	ti.set(func(ti *testIssuer) { ti.cacheControl = "max-age=60" })
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: ti.URL}}, Audiences: []string{aud}})
	tok := sign(t, ti.keys.ec, jose.ES384, "ec-1", claimsFor(ti.URL, clock.Now(), aud), nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if w == 0 && i%50 == 0 {
					clock.Advance(61 * time.Second / 4) // due for a refresh every other round
				}
				if _, err := v.Verify(context.Background(), tok); err != nil {
					t.Errorf("Verify = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	v.fetching.Wait()
	assert.Equal(t, 1, v.cache.len())
}

// A hit allocates only the caller's copy of the claims.
func TestTokenCacheHitAllocations(t *testing.T) {
	clock := newClock()
	s := startSTS(t, clock, nil)
	v := newTestVerifier(t, clock, Config{Issuers: []Issuer{{URL: s.URL}}, Audiences: []string{aud}, Policy: Policy{
		Accounts: []string{ststest.DefaultAccountID}, OrgIDs: []string{ststest.DefaultOrgID},
	}})
	tok := mint(t, s, "ES384", aud)
	_, err := v.Verify(t.Context(), tok)
	require.NoError(t, err)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	})
	assert.LessOrEqual(t, allocs, 1.0)
}

// A full shard of live entries evicts without searching for expired ones;
// once the soonest has expired, the next add finds and drops it.
func TestTokenCacheSoonest(t *testing.T) {
	t.Parallel()
	c := newTokenCache(3)
	s := &c.shards[0]
	now := start
	for i, ttl := range []time.Duration{3 * time.Minute, time.Minute, 2 * time.Minute} {
		c.add(&tokenHash{byte(i)}, &cacheEntry{until: now.Add(ttl)}, now)
	}
	assert.Equal(t, now.Add(time.Minute), s.soonest)
	c.add(&tokenHash{9}, &cacheEntry{until: now.Add(time.Hour)}, now)
	assert.Equal(t, 3, c.len(), "full of live entries: one arbitrary entry went")

	later := now.Add(150 * time.Second) // the 1- and 2-minute entries, if still there, have expired
	c.add(&tokenHash{10}, &cacheEntry{until: later.Add(time.Hour)}, later)
	for k, e := range s.m {
		assert.False(t, later.After(e.until), "entry %x expired but kept", k[0])
	}
	assert.False(t, s.soonest.After(later.Add(time.Hour)))
	for _, e := range s.m {
		assert.False(t, e.until.Before(s.soonest), "soonest is at most every entry's until")
	}
}
