package notify

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Dispatcher fans events out to notifiers in the background, so that a
// slow webhook or mail server never holds up the health checker or the
// request path that publishes them.
//
// Each notifier has its own bounded queue and delivery goroutine: events
// reach it in publication order, and one stuck notifier delays nobody
// else. When a notifier's queue is full, events for it are dropped and
// counted rather than waited for, since a late page is worth less than a
// health checker that keeps checking.
//
// A Dispatcher must not be copied. A nil *Dispatcher discards events, so
// callers with notifications turned off need no checks of their own.
type Dispatcher struct {
	logger *zap.Logger
	sinks  []*sink
	now    func() time.Time // stamps events without a Time; a field so tests can fix it

	// mu is held for reading while Publish enqueues, so that Close cannot
	// close a queue under it. Close holds it only to close the queues.
	mu     sync.RWMutex
	closed bool

	ctx    context.Context // passed to every Notify; cancelled when Close gives up
	cancel context.CancelFunc
	done   chan struct{} // closed once every delivery goroutine has returned

	published, delivered, dropped, failed atomic.Uint64
}

// sink is one notifier with its queue.
type sink struct {
	n       Notifier
	q       chan Event
	dropped atomic.Uint64 // queue-full drops, reported by the delivery goroutine
}

// Stats counts a Dispatcher's work. Each published event counts once in
// Published and, for each notifier, once in Delivered, Dropped or Failed
// when its delivery ends: with n notifiers and nothing in flight,
// Published×n = Delivered + Dropped + Failed.
type Stats struct {
	// Published counts calls to Publish.
	Published uint64
	// Delivered counts deliveries a notifier completed.
	Delivered uint64
	// Dropped counts deliveries never attempted: the notifier's queue was
	// full, the event came after Close, or Close's deadline passed first.
	Dropped uint64
	// Failed counts deliveries a notifier returned an error for (or
	// panicked in); each is logged.
	Failed uint64
}

// defaultQueue holds a burst of events, such as a whole pool going down,
// while a notifier is slow.
const defaultQueue = 256

// NewDispatcher starts delivering to notifiers. queue is each notifier's
// queue length (default 256 when not positive); logger receives delivery
// failures and may be nil. Close stops it.
func NewDispatcher(logger *zap.Logger, queue int, notifiers ...Notifier) *Dispatcher {
	if logger == nil {
		logger = zap.NewNop()
	}
	if queue <= 0 {
		queue = defaultQueue
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{logger: logger, now: time.Now, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, n := range notifiers {
		if n == nil {
			continue
		}
		s := &sink{n: n, q: make(chan Event, queue)}
		d.sinks = append(d.sinks, s)
		wg.Go(func() { d.run(s) })
	}
	go func() {
		wg.Wait()
		close(d.done)
	}()
	return d
}

// Publish queues e for every notifier and returns at once; it never waits
// for a notifier or a full queue. A zero e.Time is set to the current time.
// e.Data is copied, one level deep: don't modify the values it holds
// afterwards.
func (d *Dispatcher) Publish(e Event) {
	if d == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = d.now()
	}
	if e.Data != nil {
		e.Data = maps.Clone(e.Data) // notifiers read it later, concurrently
	}
	d.published.Add(1)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		d.dropped.Add(uint64(len(d.sinks)))
		return
	}
	for _, s := range d.sinks {
		select {
		case s.q <- e:
		default:
			d.dropped.Add(1)
			s.dropped.Add(1)
		}
	}
}

// Close stops accepting events and waits until the queued ones are
// delivered or ctx ends. In the latter case it cancels the deliveries in
// flight, drops the rest, and returns ctx's error without waiting further,
// since a notifier that ignores its context could hold it forever. Close
// may be called more than once.
func (d *Dispatcher) Close(ctx context.Context) error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		for _, s := range d.sinks {
			close(s.q) // delivery goroutines return once their queue is empty
		}
	}
	d.mu.Unlock()
	select {
	case <-d.done:
		d.cancel()
		return nil
	case <-ctx.Done():
		d.cancel()
		return fmt.Errorf("close notifications: queued events abandoned: %w", ctx.Err())
	}
}

// Stats returns the counters so far.
func (d *Dispatcher) Stats() Stats {
	if d == nil {
		return Stats{}
	}
	return Stats{
		Published: d.published.Load(),
		Delivered: d.delivered.Load(),
		Dropped:   d.dropped.Load(),
		Failed:    d.failed.Load(),
	}
}

// run is s's delivery goroutine.
func (d *Dispatcher) run(s *sink) {
	var reported uint64
	for e := range s.q {
		if d.ctx.Err() != nil {
			d.dropped.Add(1) // Close gave up: empty the queue without trying
			continue
		}
		d.deliver(s, e)
		// Drops are logged here rather than in Publish, which must not
		// wait for a log write; one line per burst is enough.
		if n := s.dropped.Load(); n != reported {
			d.logger.Warn("notification queue full: events dropped",
				zap.String("notifier", fmt.Sprintf("%T", s.n)),
				zap.Uint64("dropped", n-reported))
			reported = n
		}
	}
}

// deliver hands e to s's notifier and counts the outcome. A panicking
// notifier is logged and counted as failed, and its goroutine carries on:
// one bad notifier must not silence the others or crash the process.
func (d *Dispatcher) deliver(s *sink, e Event) {
	defer func() {
		if r := recover(); r != nil {
			d.failed.Add(1)
			d.logger.Error("notifier panicked",
				zap.String("event", e.Name),
				zap.String("notifier", fmt.Sprintf("%T", s.n)),
				zap.Any("panic", r),
				zap.Stack("stack"))
		}
	}()
	if err := s.n.Notify(d.ctx, e); err != nil {
		d.failed.Add(1)
		d.logger.Error("notification failed",
			zap.String("event", e.Name),
			zap.String("pool", e.Pool),
			zap.String("backend", e.Backend),
			zap.String("notifier", fmt.Sprintf("%T", s.n)),
			zap.Error(err))
		return
	}
	d.delivered.Add(1)
}
