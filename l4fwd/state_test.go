package l4fwd

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

func TestTrackMoves(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	prev := desiredFrom(t, drText()).Services[0]
	r2 := prev.Reals[1].MAC
	if got := trackMoves(nil, prev, t0); got != nil {
		t.Errorf("with nothing in force: %v, want no moves (flows find their server by hash)", got)
	}
	if got := trackMoves(desiredFrom(t, natText("")).Services[0], prev, t0); got != nil {
		t.Errorf("a NAT service turned DR: %d values moving, want none (its flow map is new)", len(got))
	}
	if got := trackMoves(prev, prev, t0); len(got) != 0 {
		t.Errorf("nothing changed: %d values moving", len(got))
	}

	// r2 drained: exactly its values move, from r2.
	drained := desiredFrom(t, drText(), "10.0.2.12:80").Services[0]
	moves := trackMoves(prev, drained, t0)
	for v := range Modulus {
		m, moving := moves[v]
		if wasR2 := slices.Equal(prev.owner(v), r2); moving != wasR2 || moving && (!slices.Equal(m.From, r2) || m.Since != t0) {
			t.Fatalf("value %d (was %s): move %v %+v", v, prev.owner(v), moving, m)
		}
	}

	// Back again a minute later: the same values move, still from r2,
	// their clock restarted; values at rest stay at rest.
	drained.Moving = moves
	back := desiredFrom(t, drText()).Services[0]
	again := trackMoves(drained, back, t1)
	if !slices.Equal(slices.Sorted(maps.Keys(again)), slices.Sorted(maps.Keys(moves))) {
		t.Fatalf("moving back: %d values moving, want the same %d", len(again), len(moves))
	}
	for v, m := range again {
		if !slices.Equal(m.From, r2) || m.Since != t1 {
			t.Fatalf("value %d moving back: %+v, want from %s since %s", v, m, r2, t1)
		}
	}

	// r2 down under reset_on_down: its flows are forgotten, so those not
	// seen since are scheduled anew rather than sent to it.
	down := desiredFrom(t, drText(), "10.0.2.12:80").Services[0]
	down.ResetOnDown, down.Reals[1].State = true, pool.Down
	for v, m := range trackMoves(prev, down, t0) {
		if m.From != nil {
			t.Fatalf("value %d moves from %s, the server that went down", v, m.From)
		}
	}

	// A service that followed every flow (persistence) and stops doing so
	// follows them all until they settle.
	persist := desiredFrom(t, drText()).Services[0]
	persist.Persist = time.Minute
	if got := trackMoves(persist, prev, t0); len(got) != Modulus {
		t.Errorf("after persistence: %d values moving, want all %d", len(got), Modulus)
	}
	if got := trackMoves(prev, persist, t0); got != nil {
		t.Errorf("a persistent service tracks moves: %v", got)
	}
}
