package pool

import (
	"testing"
	"time"
)

func members(weights ...int) []Member {
	ms := make([]Member, len(weights))
	for i, w := range weights {
		ms[i] = Member{Backend: NewBackend(string(rune('a' + i))), Weight: w}
	}
	return ms
}

// TestHeldPrimariesLeaveItToTheStandby: a member held by its pool (full,
// unresolved) takes nothing, and when every primary is held the standby
// serves, while the held member's state stays what its backend says.
func TestHeldPrimariesLeaveItToTheStandby(t *testing.T) {
	ms := members(1, 1, 1)
	ms[2].Standby = true
	ms[0].Held = true
	p, err := New("db", ms)
	if err != nil {
		t.Fatal(err)
	}
	if s := p.Snapshot(); len(s.Eligible) != 1 || s.OnStandby || s.Eligible[0].Backend != ms[1].Backend {
		t.Fatalf("one primary held: eligible = %v, on standby = %v; want the other primary", s.Eligible, s.OnStandby)
	}
	ms[1].Held = true
	if err := p.SetMembers(ms); err != nil {
		t.Fatal(err)
	}
	if s := p.Snapshot(); len(s.Eligible) != 1 || !s.OnStandby || s.Eligible[0].Backend != ms[2].Backend {
		t.Fatalf("every primary held: eligible = %v, on standby = %v; want the standby", s.Eligible, s.OnStandby)
	}
	if got := ms[0].State(); got != Active {
		t.Errorf("state of a held primary = %v, want active", got)
	}
}

func TestSnapshotFollowsStateChanges(t *testing.T) {
	ms := members(1, 1, 1)
	ms[2].Standby = true
	p, err := New("web", ms)
	if err != nil {
		t.Fatal(err)
	}
	s := p.Snapshot()
	if len(s.Eligible) != 2 || s.OnStandby {
		t.Fatalf("eligible = %d, on standby = %v; want the 2 primaries", len(s.Eligible), s.OnStandby)
	}
	if p.Snapshot() != s {
		t.Fatal("snapshot rebuilt without any change")
	}
	ms[0].Backend.SetDown(true)
	ms[1].Backend.SetAdmin(Draining)
	s = p.Snapshot()
	if len(s.Eligible) != 1 || !s.OnStandby || s.Eligible[0].Backend != ms[2].Backend {
		t.Fatalf("with primaries down and draining: eligible = %v, on standby = %v; want the standby", s.Eligible, s.OnStandby)
	}
	if got := ms[1].State(); got != Draining {
		t.Errorf("state of drained primary = %v, want draining", got)
	}
	if got := ms[0].State(); got != Down {
		t.Errorf("state of failed primary = %v, want down", got)
	}
	ms[0].Backend.SetDown(false)
	if s = p.Snapshot(); len(s.Eligible) != 1 || s.OnStandby || s.Eligible[0].Backend != ms[0].Backend {
		t.Fatalf("after a primary returned: eligible = %v, on standby = %v; want that primary", s.Eligible, s.OnStandby)
	}
}

func TestRejectsBadWeight(t *testing.T) {
	if _, err := New("web", members(1, 0)); err == nil {
		t.Fatal("pool with a zero weight accepted")
	}
}

func TestResponseTimeAverageDecays(t *testing.T) {
	b := NewBackend("a")
	start := time.Unix(1000, 0)
	decay := time.Second
	b.Begin()
	b.End(Served, 10*time.Millisecond, at(start), decay)
	if got := b.ResponseTime(); got != 10*time.Millisecond {
		t.Fatalf("first sample: average = %v, want 10ms", got)
	}
	// One decay later a 1ms sample pulls the average 63% of the way.
	b.Begin()
	b.End(Served, time.Millisecond, at(start.Add(decay)), decay)
	if got := b.ResponseTime(); got < 4300*time.Microsecond || got > 4320*time.Microsecond {
		t.Fatalf("after one decay: average = %v, want 4.31ms", got)
	}
	// Many quick samples still move it: each weighs at least 1/16.
	now := start.Add(decay)
	for range 100 {
		now = now.Add(time.Microsecond)
		b.Begin()
		b.End(Served, time.Millisecond, at(now), decay)
	}
	if got := b.ResponseTime(); got > 1100*time.Microsecond {
		t.Fatalf("after 100 quick samples of 1ms: average = %v", got)
	}
	if b.InFlight() != 0 || b.Total() != 102 {
		t.Fatalf("in flight %d, total %d; want 0 and 102", b.InFlight(), b.Total())
	}
}

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestDrainingBackendKeepsBoundSessionsUntilItsDeadline(t *testing.T) {
	start := time.Unix(1000, 0)
	b := NewBackend("10.0.0.1:80")
	if !b.TakesBoundSessions(start) {
		t.Fatal("an active backend refuses its bound sessions")
	}
	b.Drain(start.Add(time.Minute))
	if b.Available() {
		t.Fatal("a draining backend takes new sessions")
	}
	if !b.TakesBoundSessions(start.Add(59 * time.Second)) {
		t.Fatal("a draining backend refuses bound sessions before its deadline")
	}
	if b.TakesBoundSessions(start.Add(time.Minute)) {
		t.Fatal("a draining backend takes bound sessions at its deadline")
	}
	b.SetDown(true)
	if b.TakesBoundSessions(start) {
		t.Fatal("a draining backend that is down takes bound sessions")
	}
	b.SetDown(false)
	b.Drain(time.Time{})
	if !b.TakesBoundSessions(start.Add(24*time.Hour)) || !b.DrainDeadline().IsZero() {
		t.Fatal("a drain without deadline cuts bound sessions")
	}
	b.SetAdmin(Offline)
	if b.TakesBoundSessions(start) {
		t.Fatal("an offline backend takes bound sessions")
	}
}

func TestBoundSessionsFollowTheMembership(t *testing.T) {
	now := time.Unix(1000, 0)
	ms := members(1, 1, 1, 1)
	ms[2].Standby = true
	ms[3].LeavesAt = now.Add(time.Minute) // dropped by a reload
	p, err := New("web", ms)
	if err != nil {
		t.Fatal(err)
	}
	a, b, standby, leaving := ms[0].Backend, ms[1].Backend, ms[2].Backend, ms[3].Backend
	s := p.Snapshot()
	for _, m := range s.Eligible {
		if m.Backend == leaving {
			t.Fatal("a member the configuration dropped takes new sessions")
		}
	}
	if got := (Member{Backend: leaving, LeavesAt: now}).State(); got != Draining {
		t.Errorf("a leaving member's state is %v, want draining", got)
	}
	if !s.TakesBoundSession(leaving, now.Add(59*time.Second)) || s.TakesBoundSession(leaving, now.Add(time.Minute)) {
		t.Error("a leaving member should keep its sessions until, and only until, it leaves")
	}
	if s.TakesBoundSession(NewBackend("elsewhere"), now) {
		t.Error("a backend of no pool member takes bound sessions")
	}
	if s.TakesBoundSession(standby, now) {
		t.Error("a standby keeps sessions while primaries are available")
	}
	a.SetDown(true)
	b.SetAdmin(Offline)
	s = p.Snapshot()
	if !s.OnStandby || !s.TakesBoundSession(standby, now) || s.TakesBoundSession(a, now) {
		t.Error("on standby: the standby should keep its sessions, the failed primary lose them")
	}
	a.SetDown(false)
	if s = p.Snapshot(); s.TakesBoundSession(standby, now) || !s.TakesBoundSession(a, now) {
		t.Error("once a primary returns, sessions should leave the standby for it")
	}
	leaving.SetDown(true)
	if p.Snapshot().TakesBoundSession(leaving, now) {
		t.Error("a leaving member that is down keeps its sessions")
	}
}

func TestDeparturesKeepDroppedBackendsForTheGracePeriod(t *testing.T) {
	now := time.Unix(1000, 0)
	var d Departures
	if got := d.Update([]string{"a", "b", "c"}, now, time.Minute); len(got) != 0 {
		t.Fatalf("first configuration: %v leaving", got)
	}
	got := d.Update([]string{"a"}, now, time.Minute)
	if len(got) != 2 || !got["b"].Equal(now.Add(time.Minute)) {
		t.Fatalf("b and c dropped: leaving %v", got)
	}
	// Another reload half a minute later keeps their first deadline; c
	// comes back.
	got = d.Update([]string{"a", "c"}, now.Add(30*time.Second), time.Minute)
	if len(got) != 1 || !got["b"].Equal(now.Add(time.Minute)) {
		t.Fatalf("after c returned: leaving %v, want b until its first deadline", got)
	}
	if got = d.Update([]string{"a", "c"}, now.Add(time.Minute), time.Minute); len(got) != 0 {
		t.Fatalf("after the grace period: %v still leaving", got)
	}
}

func TestConnLimitsHoldAFullBackendOutUntilBelowMin(t *testing.T) {
	l := ConnLimits{Max: 10, Min: 8}
	full := false
	for _, step := range []struct {
		open int
		want bool
	}{{9, false}, {10, true}, {9, true}, {8, true}, {7, false}, {9, false}, {12, true}} {
		if full = l.Full(full, step.open); full != step.want {
			t.Fatalf("at %d open: full %v, want %v", step.open, full, step.want)
		}
	}
}
