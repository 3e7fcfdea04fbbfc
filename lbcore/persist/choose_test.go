package persist

import (
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/policy"
	"github.com/sluicelb/sluice/lbcore/pool"
)

func TestChooseKeepsSessionsWhileTheirBackendTakesThem(t *testing.T) {
	c := newClock()
	ms := []pool.Member{
		{Backend: pool.NewBackend("a"), Weight: 1},
		{Backend: pool.NewBackend("b"), Weight: 1},
	}
	p, err := pool.New("web", ms)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.NewWeightedLeastConn(p, policy.Options{Now: c.Now})
	a, b := ms[0].Backend, ms[1].Backend
	choose := func(bound, avoid *pool.Backend) (*pool.Backend, bool) {
		got, stays := Choose(p, pol, bound, avoid, 0, c.Now())
		if got != nil {
			pol.Done(got, pool.Served, time.Millisecond)
		}
		return got, stays
	}

	for range 10 {
		if got, stays := choose(a, nil); got != a || !stays {
			t.Fatalf("bound to a: went to %v (stays %v)", got.Address, stays)
		}
	}
	if got, stays := choose(nil, nil); got == nil || stays {
		t.Fatal("a new session should be placed by the policy")
	}
	if got, stays := choose(a, a); got != b || stays {
		t.Fatalf("a retry after a failed on a went to %v (stays %v), want b", got.Address, stays)
	}

	a.Drain(c.Now().Add(time.Minute))
	if got, stays := choose(a, nil); got != a || !stays {
		t.Fatal("a drained backend lost its session before the drain deadline")
	}
	if got, _ := choose(nil, nil); got != b {
		t.Fatal("a drained backend took a new session")
	}
	c.Add(time.Minute)
	if got, stays := choose(a, nil); got != b || stays {
		t.Fatal("a drained backend kept its session past the deadline")
	}
	a.SetAdmin(pool.Active)
	b.SetDown(true)
	if got, stays := choose(b, nil); got != a || stays {
		t.Fatal("a session bound to a failed backend did not move")
	}
}

func TestMoveReasonSaysWhy(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ms := []pool.Member{
		{Backend: pool.NewBackend("a"), Weight: 1},
		{Backend: pool.NewBackend("b"), Weight: 1},
		{Backend: pool.NewBackend("standby"), Weight: 1, Standby: true},
		{Backend: pool.NewBackend("gone"), Weight: 1, LeavesAt: now},
	}
	p, err := pool.New("web", ms)
	if err != nil {
		t.Fatal(err)
	}
	a, b := ms[0].Backend, ms[1].Backend
	reason := func(bound, avoided *pool.Backend) string {
		return MoveReason(p.Snapshot(), bound, avoided, now)
	}
	if got := reason(a, a); got != "failed" {
		t.Errorf("retry off a: %q", got)
	}
	if got := reason(ms[3].Backend, nil); got != "removed" {
		t.Errorf("dropped member past its grace: %q", got)
	}
	if got := reason(pool.NewBackend("stranger"), nil); got != "removed" {
		t.Errorf("no member: %q", got)
	}
	if got := reason(ms[2].Backend, nil); got != "primary returned" {
		t.Errorf("standby while primaries are up: %q", got)
	}
	if got := reason(a, nil); got != "unavailable" {
		t.Errorf("an active backend: %q", got)
	}
	a.Drain(now)
	b.SetDown(true)
	if got := reason(a, nil); got != "drain deadline passed" {
		t.Errorf("drained: %q", got)
	}
	if got := reason(b, nil); got != "down" {
		t.Errorf("down: %q", got)
	}
	b.SetAdmin(pool.Offline)
	if got := reason(b, nil); got != "offline" {
		t.Errorf("offline: %q", got)
	}
}
