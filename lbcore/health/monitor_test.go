package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// scriptedCheck passes or fails as the test says.
type scriptedCheck struct {
	name    string
	garbage atomic.Bool // answer like an agent talking nonsense
	fail    atomic.Bool
	agent   atomic.Pointer[AgentReport]
	calls   atomic.Int64
}

func (c *scriptedCheck) Name() string { return c.name }
func (c *scriptedCheck) Check(ctx context.Context, target string) Result {
	c.calls.Add(1)
	if c.garbage.Load() {
		return Result{Err: fmt.Errorf("agent said %q: %w", "¿?", ErrBadAgentReply)}
	}
	if c.fail.Load() {
		return Result{Err: errors.New("scripted failure")}
	}
	return Result{Agent: c.agent.Load()}
}

type recorder struct {
	mu      sync.Mutex
	changes []Change
}

func (r *recorder) record(c Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

func (r *recorder) kinds(addr string) []ChangeKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ChangeKind
	for _, c := range r.changes {
		if c.Address == addr {
			out = append(out, c.Kind)
		}
	}
	return out
}

type testClock struct{ now time.Time }

func newTestMonitor(s Settings) (*Monitor, *recorder, *testClock) {
	rec := &recorder{}
	m := NewMonitor(s, rec.record)
	clock := &testClock{now: time.Unix(10_000, 0)}
	m.now = func() time.Time { return clock.now }
	return m, rec, clock
}

func TestEveryCheckIsRequired(t *testing.T) {
	m, rec, _ := newTestMonitor(Settings{Rise: 2, Fall: 3})
	b := pool.NewBackend("mail:25")
	httpCheck, smtp := &scriptedCheck{name: "http"}, &scriptedCheck{name: "smtp"}
	m.Watch(b, "", httpCheck, smtp)
	ctx := context.Background()
	m.Round(ctx, b)
	if b.Down() {
		t.Fatal("down with every check passing")
	}
	smtp.fail.Store(true)
	for i := range 3 {
		if b.Down() {
			t.Fatalf("down after %d failed rounds; want fall 3", i)
		}
		m.Round(ctx, b)
	}
	if !b.Down() {
		t.Fatal("HTTP passing and SMTP failing: backend still up")
	}
	if got := rec.kinds("mail:25"); len(got) != 1 || got[0] != BackendDown {
		t.Fatalf("changes %v, want exactly one backend_down", got)
	}
	if r := rec.changes[0].Reason; r != "smtp: scripted failure" {
		t.Fatalf("reason %q does not name the failed check", r)
	}
	smtp.fail.Store(false)
	m.Round(ctx, b)
	m.Round(ctx, b)
	if b.Down() {
		t.Fatal("still down after rise 2 passed rounds")
	}
	if got := rec.kinds("mail:25"); len(got) != 2 || got[1] != BackendUp {
		t.Fatalf("changes %v, want backend_down then backend_up", got)
	}
}

func TestDownAtStartIsReported(t *testing.T) {
	m, rec, _ := newTestMonitor(Settings{})
	b := pool.NewBackend("db:5432")
	c := &scriptedCheck{name: "tcp"}
	c.fail.Store(true)
	m.Watch(b, "", c)
	m.Round(context.Background(), b)
	if !b.Down() {
		t.Fatal("a backend down at start was not marked down on the first round")
	}
	if got := rec.kinds("db:5432"); len(got) != 1 || got[0] != BackendDown {
		t.Fatalf("changes %v, want one backend_down", got)
	}
}

func TestPortBindingGroupGoesDownTogether(t *testing.T) {
	m, rec, _ := newTestMonitor(Settings{Rise: 1, Fall: 1})
	audio, video, control := pool.NewBackend("media:5004"), pool.NewBackend("media:5006"), pool.NewBackend("media:554")
	checks := map[*pool.Backend]*scriptedCheck{}
	for _, b := range []*pool.Backend{audio, video, control} {
		checks[b] = &scriptedCheck{name: "tcp"}
		m.Watch(b, "media", checks[b])
	}
	ctx := context.Background()
	for b := range checks {
		m.Round(ctx, b)
	}
	checks[video].fail.Store(true)
	m.Round(ctx, video)
	for _, b := range []*pool.Backend{audio, video, control} {
		if !b.Down() {
			t.Fatalf("%s up while %s of its group is down", b.Address, video.Address)
		}
	}
	if got := rec.kinds("media:554"); len(got) != 1 || got[0] != BackendDown {
		t.Fatalf("group member changes %v, want one backend_down", got)
	}
	checks[video].fail.Store(false)
	m.Round(ctx, video)
	for _, b := range []*pool.Backend{audio, video, control} {
		if b.Down() {
			t.Fatalf("%s still down after its group recovered", b.Address)
		}
	}
}

func TestPassiveFailuresTakeABackendDown(t *testing.T) {
	m, rec, _ := newTestMonitor(Settings{Rise: 2, Fall: 3, PassiveFails: 3, PassiveStatus: []StatusRange{{502, 504}}})
	b := pool.NewBackend("app:80")
	c := &scriptedCheck{name: "http"}
	m.Watch(b, "", c)
	ctx := context.Background()
	m.Round(ctx, b)
	m.Observed(b, false, 0)
	m.Observed(b, true, 200) // a success resets the count
	m.Observed(b, true, 503) // a status that counts as failure
	m.Observed(b, false, 0)
	if b.Down() {
		t.Fatal("down after 2 failures in a row; want 3")
	}
	m.Observed(b, true, 500) // not a listed status: still a success...
	m.Observed(b, false, 0)
	m.Observed(b, false, 0)
	if b.Down() {
		t.Fatal("down although a 500, not counted as failure, broke the run")
	}
	m.Observed(b, false, 0)
	if !b.Down() {
		t.Fatal("3 failed requests in a row did not take the backend down")
	}
	m.Round(ctx, b)
	if !b.Down() {
		t.Fatal("one passed check brought back a backend taken down by passive health; want rise 2")
	}
	m.Round(ctx, b)
	if b.Down() {
		t.Fatal("not back after rise 2 passed checks")
	}
	if got := rec.kinds("app:80"); len(got) != 2 {
		t.Fatalf("changes %v, want down then up", got)
	}
}

func TestAgentWeightAndSlowStart(t *testing.T) {
	m, _, clock := newTestMonitor(Settings{Rise: 1, Fall: 1, SlowStart: SlowStart{Period: 10 * time.Second}})
	b := pool.NewBackend("app:80")
	agent := &scriptedCheck{name: "agent"}
	agent.agent.Store(&AgentReport{State: AgentUp, WeightPercent: 25})
	m.Watch(b, "", agent)
	ctx := context.Background()
	m.Round(ctx, b)
	if b.Scale() != 25 {
		t.Fatalf("agent said 25%%: scale %d", b.Scale())
	}
	agent.agent.Store(&AgentReport{State: AgentDrain, WeightPercent: -1})
	m.Round(ctx, b)
	if b.Scale() != 0 || b.Available() {
		t.Fatalf("agent said drain: scale %d, available %v", b.Scale(), b.Available())
	}
	agent.agent.Store(&AgentReport{State: AgentUp, WeightPercent: 100})
	agent.fail.Store(true)
	m.Round(ctx, b)
	agent.fail.Store(false)
	m.Round(ctx, b)
	if b.Down() || b.Scale() != 10 {
		t.Fatalf("just recovered: down %v, scale %d; want up at 10%%", b.Down(), b.Scale())
	}
	clock.now = clock.now.Add(5 * time.Second)
	m.Round(ctx, b)
	if b.Scale() != 55 {
		t.Fatalf("half way through slow start: scale %d, want 55", b.Scale())
	}
	clock.now = clock.now.Add(10 * time.Second)
	m.Round(ctx, b)
	if b.Scale() != 100 {
		t.Fatalf("after slow start: scale %d, want 100", b.Scale())
	}
}

func TestFlappingIsReported(t *testing.T) {
	m, rec, clock := newTestMonitor(Settings{Rise: 1, Fall: 1, FlapMax: 4, FlapWindow: time.Minute})
	b := pool.NewBackend("app:80")
	c := &scriptedCheck{name: "tcp"}
	m.Watch(b, "", c)
	ctx := context.Background()
	m.Round(ctx, b)
	for i := range 8 {
		clock.now = clock.now.Add(time.Second)
		c.fail.Store(i%2 == 0)
		m.Round(ctx, b)
	}
	flaps := 0
	for _, k := range rec.kinds("app:80") {
		if k == BackendFlapping {
			flaps++
		}
	}
	if flaps != 1 {
		t.Fatalf("8 changes in 8s: %d flapping reports, want 1", flaps)
	}
}

// TestRunOnSchedule is the real-time test: Run checks on its own and
// takes a failing backend down within interval × fall plus a margin.
func TestRunOnSchedule(t *testing.T) {
	down := make(chan Change, 4)
	m := NewMonitor(Settings{Interval: 20 * time.Millisecond, Fall: 3, Rise: 2}, func(c Change) {
		if c.Kind == BackendDown {
			down <- c
		}
	})
	b := pool.NewBackend("app:80")
	c := &scriptedCheck{name: "tcp"}
	m.Watch(b, "", c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.After(5 * time.Second)
	for c.calls.Load() < 2 {
		select {
		case <-deadline:
			t.Fatal("checks did not run")
		case <-time.After(5 * time.Millisecond):
		}
	}
	failedAt := time.Now()
	c.fail.Store(true)
	select {
	case <-down:
		// 3 rounds of 20ms ± 10% jitter, plus scheduling slack.
		if took := time.Since(failedAt); took > 500*time.Millisecond {
			t.Fatalf("marked down after %v; want about interval × fall = 60ms", took)
		}
	case <-deadline:
		t.Fatal("a failing backend was never marked down")
	}
}

// After a reload a new monitor meets backends the old one judged: a
// backend still down is not reported again, and it returns after rise.
func TestStateCarriesAcrossMonitors(t *testing.T) {
	b := pool.NewBackend("app:80")
	b.SetDown(true) // the previous configuration's verdict
	m, rec, _ := newTestMonitor(Settings{Rise: 2, Fall: 3})
	c := &scriptedCheck{name: "http"}
	c.fail.Store(true)
	m.Watch(b, "", c)
	m.Round(context.Background(), b)
	if got := rec.kinds("app:80"); len(got) != 0 || !b.Down() {
		t.Fatalf("still-down backend: changes %v, down %v; want no new event and still down", got, b.Down())
	}
	c.fail.Store(false)
	m.Round(context.Background(), b)
	m.Round(context.Background(), b)
	if got := rec.kinds("app:80"); len(got) != 1 || got[0] != BackendUp || b.Down() {
		t.Fatalf("after rise: changes %v, down %v; want one backend_up", got, b.Down())
	}
}

// Garbage from an agent is ignored, counted and warned of: the backend
// keeps its last good state and weight.
func TestGarbageAgentRepliesAreIgnored(t *testing.T) {
	var warnings int
	m, rec, _ := newTestMonitor(Settings{Rise: 1, Fall: 1, Warn: func(string, error) { warnings++ }})
	b := pool.NewBackend("app:80")
	agent := &scriptedCheck{name: "agent"}
	agent.agent.Store(&AgentReport{State: AgentUp, WeightPercent: 50})
	m.Watch(b, "", agent)
	ctx := context.Background()
	m.Round(ctx, b)
	agent.garbage.Store(true)
	for range 10 {
		m.Round(ctx, b)
	}
	if b.Down() || b.Scale() != 50 {
		t.Fatalf("after garbage replies: down %v, scale %d; want the last good state, up at 50%%", b.Down(), b.Scale())
	}
	if got := rec.kinds("app:80"); len(got) != 0 {
		t.Fatalf("garbage replies caused changes %v", got)
	}
	if warnings != 1 || m.backends[b].badReplies != 10 {
		t.Fatalf("%d warnings and %d counted; want 1 warning a minute and all 10 counted", warnings, m.backends[b].badReplies)
	}
}
