package notify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestDispatcherOrderPerNotifier(t *testing.T) {
	const n = 100
	a, b := newChanNotifier(n), newChanNotifier(n)
	d := NewDispatcher(nil, n, a, b)
	for i := range n {
		d.Publish(Event{Name: "backend_up", Backend: fmt.Sprintf("10.0.0.%d:80", i)})
	}
	closeDispatcher(t, d)
	for name, c := range map[string]*chanNotifier{"a": a, "b": b} {
		for i := range n {
			e := recv(t, c.ch, "event")
			if want := fmt.Sprintf("10.0.0.%d:80", i); e.Backend != want {
				t.Fatalf("notifier %s: event %d is for %s, want %s", name, i, e.Backend, want)
			}
		}
		none(t, c.ch, "extra event")
	}
	if s := d.Stats(); s != (Stats{Published: n, Delivered: 2 * n}) {
		t.Errorf("Stats() = %+v, want %d published, %d delivered", s, n, 2*n)
	}
}

func TestDispatcherStampsAndCopies(t *testing.T) {
	c := newChanNotifier(2)
	gate := make(chan struct{})
	c.gate = gate // hold deliveries until the publisher has changed its map
	d := NewDispatcher(nil, 0, c)
	t0 := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	d.now = func() time.Time { return t0 }

	data := map[string]any{"k": "published"}
	d.Publish(Event{Name: "backend_up", Data: data})
	given := t0.Add(-time.Hour)
	d.Publish(Event{Name: "backend_up", Time: given})
	data["k"] = "changed later" // the race detector would flag a shared map
	close(gate)

	if e := recv(t, c.ch, "event"); !e.Time.Equal(t0) || e.Data["k"] != "published" {
		t.Errorf("first event has time %v, data %v; want %v and the map as published", e.Time, e.Data, t0)
	}
	if e := recv(t, c.ch, "event"); !e.Time.Equal(given) {
		t.Errorf("second event has time %v, want its own %v", e.Time, given)
	}
	closeDispatcher(t, d)
}

// A webhook that hangs must not hold up Publish: events beyond the queue
// are dropped and counted, and Close gives up at its deadline.
func TestDispatcherStuckWebhook(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select { // hang until the client gives up or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close

	const queue, extra = 4, 3
	d := NewDispatcher(nil, queue, &Webhook{URL: srv.URL, Timeout: time.Minute, Retries: -1})
	d.Publish(testEvent())
	recv(t, arrived, "webhook request") // the delivery goroutine is now stuck

	start := time.Now()
	for range queue + extra {
		d.Publish(testEvent())
	}
	// Generous: Publish takes microseconds; a blocked one would take the
	// webhook's minute.
	if took := time.Since(start); took > time.Second {
		t.Errorf("%d Publish calls took %v", queue+extra, took)
	}
	if s := d.Stats(); s != (Stats{Published: 1 + queue + extra, Dropped: extra}) {
		t.Errorf("Stats() = %+v, want %d published, %d dropped", s, 1+queue+extra, extra)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close() = %v, want a deadline error", err)
	}
	recv(t, d.done, "delivery goroutines to end")
	// The request in flight was cancelled (failed); the queued ones were
	// abandoned (dropped).
	if s := d.Stats(); s != (Stats{Published: 1 + queue + extra, Failed: 1, Dropped: queue + extra}) {
		t.Errorf("Stats() after Close = %+v, want 1 failed, %d dropped", s, queue+extra)
	}
}

// One stuck notifier delays nobody else.
func TestDispatcherStuckNotifierIsolated(t *testing.T) {
	stuck := newChanNotifier(1)
	stuck.gate = make(chan struct{}) // never opened: only Close's cancel frees it
	fast := newChanNotifier(8)
	d := NewDispatcher(nil, 8, stuck, fast)
	for i := range 5 {
		d.Publish(Event{Name: "backend_up", Backend: fmt.Sprintf("10.0.0.%d:80", i)})
	}
	for i := range 5 {
		if e := recv(t, fast.ch, "event for the fast notifier"); e.Backend != fmt.Sprintf("10.0.0.%d:80", i) {
			t.Errorf("fast notifier got %s as event %d", e.Backend, i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close() = %v, want a deadline error", err)
	}
	recv(t, d.done, "delivery goroutines to end")
	if s := d.Stats(); s != (Stats{Published: 5, Delivered: 5, Failed: 1, Dropped: 4}) {
		t.Errorf("Stats() = %+v", s)
	}
}

func TestDispatcherCloseDrains(t *testing.T) {
	c := newChanNotifier(16)
	gate := make(chan struct{})
	c.gate = gate
	d := NewDispatcher(nil, 16, c)
	const n = 10
	for range n {
		d.Publish(testEvent())
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		closed <- d.Close(ctx)
	}()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with %d events still queued", err, n)
	default:
	}
	close(gate)
	if err := recv(t, closed, "Close"); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if got := len(c.ch); got != n {
		t.Errorf("notifier got %d events by Close, want %d", got, n)
	}

	d.Publish(testEvent()) // after Close: dropped, no panic
	closeDispatcher(t, d)  // a second Close is harmless
	if s := d.Stats(); s != (Stats{Published: n + 1, Delivered: n, Dropped: 1}) {
		t.Errorf("Stats() = %+v, want %d published, %d delivered, 1 dropped", s, n+1, n)
	}
}

func TestDispatcherNil(t *testing.T) {
	var d *Dispatcher
	d.Publish(testEvent())
	if err := d.Close(context.Background()); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if s := d.Stats(); s != (Stats{}) {
		t.Errorf("Stats() = %+v", s)
	}
}

type notifierFunc func(context.Context, Event) error

func (f notifierFunc) Notify(ctx context.Context, e Event) error { return f(ctx, e) }

func TestDispatcherLogsFailures(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	failing := notifierFunc(func(context.Context, Event) error { return errors.New("receiver on fire") })
	panicking := notifierFunc(func(context.Context, Event) error { panic("notifier bug") })
	after := newChanNotifier(2)
	d := NewDispatcher(zap.New(core), 0, failing, panicking, nil, after)
	d.Publish(testEvent())
	d.Publish(testEvent()) // the panicking notifier's goroutine survives to take this one
	closeDispatcher(t, d)

	if s := d.Stats(); s != (Stats{Published: 2, Delivered: 2, Failed: 4}) {
		t.Errorf("Stats() = %+v, want 2 delivered, 4 failed", s)
	}
	failed := logs.FilterMessage("notification failed").AllUntimed()
	if len(failed) != 2 || failed[0].Level != zapcore.ErrorLevel {
		t.Fatalf("logged %d failures, want 2 at error level: %+v", len(failed), failed)
	}
	f := failed[0].ContextMap()
	if f["error"] != "receiver on fire" || f["event"] != "backend_down" || f["backend"] != "10.0.0.5:80" {
		t.Errorf("failure logged with %v", f)
	}
	if got := logs.FilterMessage("notifier panicked").Len(); got != 2 {
		t.Errorf("logged %d panics, want 2", got)
	}
}

func TestDispatcherLogsDrops(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	c := newChanNotifier(4)
	gate := make(chan struct{})
	c.gate, c.started = gate, make(chan Event, 4)
	d := NewDispatcher(zap.New(core), 1, c)
	d.Publish(testEvent())
	recv(t, c.started, "delivery start") // the first event is out of the queue
	for range 3 {
		d.Publish(testEvent()) // one fits in the queue, two are dropped
	}
	close(gate)
	closeDispatcher(t, d)

	drops := logs.FilterMessage("notification queue full: events dropped").AllUntimed()
	if len(drops) != 1 || drops[0].ContextMap()["dropped"] != uint64(2) {
		t.Errorf("drop log lines: %+v, want one saying 2", drops)
	}
	if s := d.Stats(); s != (Stats{Published: 4, Delivered: 2, Dropped: 2}) {
		t.Errorf("Stats() = %+v", s)
	}
}

// Every kind of notifier, end to end through one Dispatcher: each event
// makes exactly one log line, one webhook delivery and one e-mail.
func TestDispatcherAllNotifiers(t *testing.T) {
	hr := newHookReceiver(t, inTurn(http.StatusOK))
	srv := startSMTP(t, &smtpServer{}, "")
	core, logs := observer.New(zapcore.DebugLevel)
	d := NewDispatcher(nil, 0,
		Log{Logger: zap.New(core)},
		&Webhook{URL: hr.srv.URL, Secret: "s"},
		&Mail{Server: srv.addr, From: "lb@example.com", To: []string{"ops@example.com"}},
	)
	names := []string{"backend_down", "pool_failover", "backend_up"}
	for _, name := range names {
		d.Publish(Event{Name: name, Pool: "web", Backend: "10.0.0.5:80"})
	}
	closeDispatcher(t, d)

	for _, name := range names {
		if got := recv(t, hr.delivered, "webhook delivery"); !jsonHasName(got.body, name) {
			t.Errorf("webhook got %s, want event %s", got.body, name)
		}
		msg := recv(t, srv.msgs, "message")
		if want := "Subject: [sluice] " + name + ": 10.0.0.5:80 in pool web\r\n"; !strings.Contains(msg.data, want) {
			t.Errorf("mail lacks %q:\n%s", want, msg.data)
		}
	}
	none(t, hr.delivered, "extra webhook delivery")
	none(t, srv.msgs, "extra message")
	if got := logs.Len(); got != len(names) {
		t.Errorf("%d log lines, want %d", got, len(names))
	}
	if s := d.Stats(); s != (Stats{Published: 3, Delivered: 9}) {
		t.Errorf("Stats() = %+v, want 3 published, 9 delivered", s)
	}
}
