package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

// TestAsyncHandler: records reach the handler behind it in order, with
// their attributes, all of them by the time stop returns; after stop they
// are written at once; nothing keeps running.
func TestAsyncHandler(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var buf syncBuffer
	bw := &batchWriter{out: &buf}
	h, stop := newAsyncHandler(slog.NewTextHandler(bw, &slog.HandlerOptions{Level: slog.LevelInfo}), bw.Flush)
	log := slog.New(h).With("mode", "inbound")
	assert.False(t, log.Enabled(context.Background(), slog.LevelDebug), "the level is the next handler's")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range accessLogQueue / 2 { // more than the queue holds
				log.Info("request", "g", g, "i", i, "a", 1, "b", 2, "c", 3, "d", 4)
			}
		})
	}
	wg.Wait()
	stop()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	assert.Len(t, lines, 4*accessLogQueue/2, "every record is written by the time stop returns")
	last := map[string]int{}
	for _, l := range lines {
		assert.Contains(t, l, "mode=inbound")
		assert.Contains(t, l, "d=4", "records with more than five attributes are copied whole")
		var g, i int
		for f := range strings.FieldsSeq(l) {
			if v, ok := strings.CutPrefix(f, "g="); ok {
				g, _ = strconv.Atoi(v)
			}
			if v, ok := strings.CutPrefix(f, "i="); ok {
				i, _ = strconv.Atoi(v)
			}
		}
		key := string(rune('0' + g))
		if prev, ok := last[key]; ok {
			assert.Greater(t, i, prev, "one goroutine's records stay in order")
		}
		last[key] = i
	}
	log.Info("after stop")
	assert.Contains(t, buf.String(), "after stop", "written at once after stop")
	stop() // a second stop is harmless
}
