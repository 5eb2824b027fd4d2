package verify

import (
	"container/heap"
	"sync"
	"time"
)

// replayGuard remembers the jti of each accepted token until the token
// expires, and refuses a jti it has seen. It holds at most size entries:
// when full, the entry closest to expiry is forgotten first, so the guard
// degrades for the tokens about to expire anyway rather than refusing new
// ones. It is safe for concurrent use.
type replayGuard struct {
	size int

	mu    sync.Mutex // guards seen and byExp
	seen  map[replayKey]*replayEntry
	byExp replayHeap
}

// replayKey identifies a token: jti values are unique per issuer.
type replayKey struct{ iss, jti string }

// replayEntry is one remembered token.
type replayEntry struct {
	key   replayKey
	until time.Time
}

func newReplayGuard(size int) *replayGuard {
	return &replayGuard{size: size, seen: make(map[replayKey]*replayEntry, min(size, 1024))}
}

// check records the token (iss, jti), remembered until until (the last
// instant the token is accepted), and reports whether it is new, and
// whether recording it made the guard forget an unexpired token because it
// was full. A token seen before whose entry has expired is new again: it
// fails the expiry check anyway. An entry is kept through until itself,
// which the expiry check still accepts.
func (g *replayGuard) check(iss, jti string, until, now time.Time) (fresh, evicted bool) {
	k := replayKey{iss, jti}
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.byExp) > 0 && g.byExp[0].until.Before(now) {
		e := heap.Pop(&g.byExp).(*replayEntry)
		delete(g.seen, e.key)
	}
	if _, ok := g.seen[k]; ok {
		return false, false
	}
	if len(g.byExp) >= g.size {
		e := heap.Pop(&g.byExp).(*replayEntry)
		delete(g.seen, e.key)
		evicted = true
	}
	e := &replayEntry{key: k, until: until}
	heap.Push(&g.byExp, e)
	g.seen[k] = e
	return true, evicted
}

// len returns the number of remembered tokens.
func (g *replayGuard) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.byExp)
}

// replayHeap is a min-heap of entries by expiry.
type replayHeap []*replayEntry

func (h replayHeap) Len() int           { return len(h) }
func (h replayHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h replayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *replayHeap) Push(x any)        { *h = append(*h, x.(*replayEntry)) }
func (h *replayHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return e
}
