package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// accessLogQueue is how many access log records may wait for the writer
// before a request waits too.
const accessLogQueue = 1024

// asyncHandler passes log records to next on a goroutine of its own, so a
// request does not wait on the log's write: slog's handlers format a record
// and write it under one lock, and with many requests in flight on few CPUs,
// one writer descheduled inside that write held up every request behind it
// (on 2 busy cores it doubled stsproxy inbound's p99, BENCHMARKS.md). Records
// wait in a bounded queue; when it is full, Handle waits, so none is lost.
// After stop, records are written by the caller, as without the queue. It
// is safe for concurrent use.
type asyncHandler struct {
	next slog.Handler
	q    *logQueue
}

// logQueue is the queue and writer goroutine that asyncHandlers share.
type logQueue struct {
	ch   chan queuedRecord
	done chan struct{} // closed when the writer has drained ch
	idle func()        // called when the queue is empty, to flush

	mu     sync.RWMutex // guards closed, and ch against sends after close
	closed bool
}

// queuedRecord is a record and the handler that writes it.
type queuedRecord struct {
	h slog.Handler
	r slog.Record
}

// newAsyncHandler returns an asyncHandler in front of next and the func
// that stops it, writing every queued record first. Call stop once no more
// records are expected; later ones are written synchronously. idle, if not
// nil, is called by the writer whenever it has emptied the queue, and once
// more when stopping.
func newAsyncHandler(next slog.Handler, idle func()) (h slog.Handler, stop func()) {
	if idle == nil {
		idle = func() {}
	}
	q := &logQueue{ch: make(chan queuedRecord, accessLogQueue), done: make(chan struct{}), idle: idle}
	go func() {
		defer close(q.done)
		defer idle()
		for qr := range q.ch {
			_ = qr.h.Handle(context.Background(), qr.r)
			if len(q.ch) == 0 {
				idle()
			}
		}
	}()
	var once sync.Once
	return &asyncHandler{next: next, q: q}, func() {
		once.Do(func() {
			q.mu.Lock()
			q.closed = true
			close(q.ch)
			q.mu.Unlock()
			<-q.done
		})
	}
}

// maxLogBatch is the most a batchWriter writes at once: PIPE_BUF on Linux,
// so a batch written to a pipe (a container's stderr) is never interleaved
// with another goroutine's log line.
const maxLogBatch = 4096

// batchWriter gathers whole log records and writes them to out in batches
// of at most maxLogBatch bytes (a larger record goes alone), when the batch
// is full or on Flush: one write syscall for many records instead of one
// each. It is safe for concurrent use.
type batchWriter struct {
	out io.Writer

	mu  sync.Mutex // guards buf
	buf []byte
}

// Write adds one record (slog handlers write each record with one Write).
func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > maxLogBatch {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > maxLogBatch {
		return b.out.Write(p)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes the gathered records.
func (b *batchWriter) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.flushLocked()
}

func (b *batchWriter) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.out.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Enabled reports whether next handles records of the level.
func (h *asyncHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle queues a copy of r for the writer, or writes it itself once the
// queue is stopped.
func (h *asyncHandler) Handle(ctx context.Context, r slog.Record) error {
	h.q.mu.RLock()
	defer h.q.mu.RUnlock()
	if h.q.closed {
		err := h.next.Handle(ctx, r)
		h.q.idle()
		return err
	}
	h.q.ch <- queuedRecord{h.next, r.Clone()}
	return nil
}

// WithAttrs returns a handler with the attributes, on the same queue.
func (h *asyncHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &asyncHandler{next: h.next.WithAttrs(attrs), q: h.q}
}

// WithGroup returns a handler with the group, on the same queue.
func (h *asyncHandler) WithGroup(name string) slog.Handler {
	return &asyncHandler{next: h.next.WithGroup(name), q: h.q}
}
