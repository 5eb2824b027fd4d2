package stsauth

import (
	"sync"
	"sync/atomic"
)

// cache maps audience keys to entries, bounded in size.
//
// Reads go through a sync.Map and take no lock, so a cache hit never waits
// for an insert or an eviction. Inserts take mu and evict with the CLOCK
// (second chance) algorithm: a hit sets the entry's used bit, and the sweep
// evicts the first entry whose bit is clear, clearing the bits it passes.
// That approximates least-recently-used without a list that every hit would
// have to reorder under a lock.
type cache struct {
	size int
	m    sync.Map // string → *entry
	n    atomic.Int64

	mu   sync.Mutex // guards ring and hand
	ring []*entry   // every cached entry, in CLOCK order
	hand int        // next ring slot the sweep looks at

	// onEvict, if set, is called (under mu) with each evicted entry.
	onEvict func(*entry)
}

// get returns the entry for key, or nil.
func (c *cache) get(key string) *entry {
	v, ok := c.m.Load(key)
	if !ok {
		return nil
	}
	return v.(*entry)
}

// add returns the entry for aud, making it with newEntry and evicting
// another if the cache is full, unless a concurrent add got there first. It
// returns nil, changing nothing, if newEntry refuses (returns nil).
func (c *cache) add(aud Audience, newEntry func(Audience) *entry) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.get(aud.key); e != nil {
		return e
	}
	e := newEntry(aud)
	if e == nil {
		return nil
	}
	if len(c.ring) < c.size {
		c.ring = append(c.ring, e)
		c.n.Add(1)
	} else {
		for {
			old := c.ring[c.hand]
			if old.used.Swap(false) {
				c.hand = (c.hand + 1) % len(c.ring)
				continue
			}
			c.m.Delete(old.aud.key)
			if c.onEvict != nil {
				c.onEvict(old)
			}
			c.ring[c.hand] = e
			c.hand = (c.hand + 1) % len(c.ring)
			break
		}
	}
	c.m.Store(aud.key, e)
	return e
}

// len returns how many audience sets are cached.
func (c *cache) len() int64 { return c.n.Load() }

// snapshot returns every cached entry, in no particular order.
func (c *cache) snapshot() []*entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*entry(nil), c.ring...)
}
