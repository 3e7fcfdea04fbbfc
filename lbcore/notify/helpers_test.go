package notify

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// waitFor bounds every wait in these tests: long enough for a loaded CI
// machine, short enough that a hang fails instead of stalling the suite.
const waitFor = 5 * time.Second

// recv returns the next value from ch, failing the test after waitFor.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("no %s within %v", what, waitFor)
		var zero T
		return zero
	}
}

// none fails if ch holds a value right now. It is called after the work
// that could have sent one has finished, so it does not race.
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Errorf("unexpected %s: %+v", what, v)
	default:
	}
}

// closeDispatcher closes d, failing the test if it does not drain in time.
func closeDispatcher(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// testEvent is a fully populated event, down to the nanosecond.
func testEvent() Event {
	return Event{
		Name:    "backend_down",
		Time:    time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC),
		Pool:    "web",
		Backend: "10.0.0.5:80",
		From:    "up",
		To:      "down",
		Reason:  `smtp: greeting was "554 busy", want 220`,
		Data:    map[string]any{"fails": 3, "check": "smtp"},
	}
}

// chanNotifier is an in-memory Notifier: it sends each event to ch, first
// waiting for gate to close when gate is not nil. started, when not nil,
// hears of each event as Notify begins.
type chanNotifier struct {
	ch      chan Event
	gate    <-chan struct{}
	started chan Event
}

func newChanNotifier(n int) *chanNotifier { return &chanNotifier{ch: make(chan Event, n)} }

func (c *chanNotifier) Notify(ctx context.Context, e Event) error {
	if c.started != nil {
		c.started <- e
	}
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.ch <- e
	return nil
}

func jsonHasName(body []byte, name string) bool {
	var e Event
	return json.Unmarshal(body, &e) == nil && e.Name == name
}
