package verify

import (
	"crypto"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// DefaultTokenCacheSize is how many verified tokens a Verifier remembers
// when [Config.TokenCacheSize] is zero.
const DefaultTokenCacheSize = 4096

// tokenHash is the SHA-256 of a whole token: the only form in which the
// cache holds a token.
type tokenHash [sha256.Size]byte

// hashToken returns the SHA-256 of raw without copying it.
func hashToken(raw string) tokenHash {
	// Sum256 only reads its argument, so the string's bytes can be passed
	// as they are instead of copied into a new slice (a token is about a
	// kilobyte; the copy would be the hit path's largest allocation).
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}

// tokenCache remembers the tokens whose signature, issuer, times,
// audience and account binding checked out, by the SHA-256 of the whole
// token, so that the same token sent again is not parsed and its signature
// not checked again. What may change between two requests with the same
// token is checked on every hit by the verifier, not here: the times, the
// key still being published, the policy and the replay guard.
//
// It holds at most size entries, in shards that each take a lock only to
// add or drop an entry; a hit takes a shard's read lock. When a shard is
// full, its expired entries go first, then an arbitrary one. It is safe
// for concurrent use.
type tokenCache struct {
	shards   []cacheShard
	perShard int
	mask     byte // len(shards) - 1; len(shards) is a power of two
}

// cacheShard is one lock's worth of the cache.
type cacheShard struct {
	mu sync.RWMutex // guards m and soonest
	m  map[tokenHash]*cacheEntry
	// soonest is at most the earliest until of the entries: until it has
	// passed, no entry has expired and a full shard need not look for one.
	soonest time.Time
	_       [8]byte // keeps neighbouring shards' locks off one cache line
}

// cacheEntry is one verified token. Every field but keys is set before the
// entry is added and never changed.
type cacheEntry struct {
	is    *issuer
	kid   string
	key   verifyKey
	keys  atomic.Pointer[keySet] // the newest key set seen to publish key under kid
	until time.Time              // exp plus the leeway: no use after that
	// claims are the token's claims; each hit returns a copy of the
	// struct, sharing its slices and maps.
	claims Claims
}

// newTokenCache returns a cache of at most size (> 0) entries.
func newTokenCache(size int) *tokenCache {
	n := 1
	for n < 16 && size/(2*n) >= 64 {
		n *= 2
	}
	c := &tokenCache{shards: make([]cacheShard, n), perShard: size / n, mask: byte(n - 1)}
	for i := range c.shards {
		c.shards[i].m = make(map[tokenHash]*cacheEntry, min(c.perShard, 256))
	}
	return c
}

func (c *tokenCache) shard(h *tokenHash) *cacheShard { return &c.shards[h[0]&c.mask] }

// get returns the entry for h, or nil.
func (c *tokenCache) get(h *tokenHash) *cacheEntry {
	s := c.shard(h)
	s.mu.RLock()
	e := s.m[*h]
	s.mu.RUnlock()
	return e
}

// add remembers e under h. A full shard first drops its entries that are of
// no use at now, if any can be, then, if that freed nothing, one arbitrary
// entry. The search for expired entries runs only once one has expired, so
// a full shard of live entries costs O(1) per add.
func (c *tokenCache) add(h *tokenHash, e *cacheEntry, now time.Time) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*h]; !ok && len(s.m) >= c.perShard {
		if now.After(s.soonest) {
			s.soonest = time.Time{}
			for k, old := range s.m {
				switch {
				case now.After(old.until):
					delete(s.m, k)
				case s.soonest.IsZero() || old.until.Before(s.soonest):
					s.soonest = old.until
				}
			}
		}
		if len(s.m) >= c.perShard {
			for k := range s.m {
				delete(s.m, k)
				break
			}
		}
	}
	if len(s.m) == 0 || e.until.Before(s.soonest) {
		s.soonest = e.until
	}
	s.m[*h] = e
}

// remove drops the entry for h if it is still e.
func (c *tokenCache) remove(h *tokenHash, e *cacheEntry) {
	s := c.shard(h)
	s.mu.Lock()
	if s.m[*h] == e {
		delete(s.m, *h)
	}
	s.mu.Unlock()
}

// len returns the number of entries.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// publishes reports whether ks still holds key under kid. Keys are compared
// by value: every fetch decodes new key objects, the same key or not.
func (ks *keySet) publishes(kid string, key verifyKey) bool {
	for _, k := range ks.byKID[kid] {
		if k.alg != key.alg {
			continue
		}
		if pub, ok := k.key.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(key.key) {
			return true
		}
	}
	return false
}
