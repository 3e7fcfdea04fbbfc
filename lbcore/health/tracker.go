package health

import "time"

// Tracker damps a backend's check results into a state, as rise and fall
// thresholds do in HAProxy and keepalived: a healthy backend goes down only
// after Fall failed rounds in a row, a down one comes back only after Rise
// passed rounds in a row, so a backend that fails every other check never
// changes state. The first round decides at once: a backend already down
// at start is reported down on the first check, not after Fall.
type Tracker struct {
	Rise, Fall int

	known  bool
	up     bool
	streak int // consecutive rounds that disagree with the current state
}

// Default thresholds, as HAProxy's.
const (
	DefaultRise = 2
	DefaultFall = 3
)

// Observe records one round (all of a backend's checks; ok if every one
// passed) and reports whether the state changed.
func (t *Tracker) Observe(ok bool) (changed bool) {
	if !t.known {
		t.known, t.up = true, ok
		return true
	}
	if ok == t.up {
		t.streak = 0
		return false
	}
	t.streak++
	need := max(t.Fall, 1)
	if ok {
		need = max(t.Rise, 1)
	}
	if t.streak < need {
		return false
	}
	t.up, t.streak = ok, 0
	return true
}

// Force sets the state without waiting for thresholds, as passive health
// does when requests fail: the backend then needs Rise passed rounds to
// return.
func (t *Tracker) Force(up bool) (changed bool) {
	changed = !t.known || t.up != up
	t.known, t.up, t.streak = true, up, 0
	return changed
}

// Up reports the damped state; a backend is up until its first round.
func (t *Tracker) Up() bool { return !t.known || t.up }

// Known reports whether any round has been observed.
func (t *Tracker) Known() bool { return t.known }

// FlapDetector tells when a backend changes state too often: Max changes
// within Window. It reports once per episode, when the count first reaches
// Max, and again only after a quiet Window.
type FlapDetector struct {
	Window time.Duration
	Max    int

	changes  []time.Time
	flapping bool
}

// Record notes a state change at now and reports whether the backend has
// just started flapping.
func (f *FlapDetector) Record(now time.Time) bool {
	if f.Max <= 0 || f.Window <= 0 {
		return false
	}
	f.changes = append(f.changes, now)
	keep := f.changes[:0]
	for _, c := range f.changes {
		if now.Sub(c) < f.Window {
			keep = append(keep, c)
		}
	}
	f.changes = keep
	if len(f.changes) >= f.Max {
		if !f.flapping {
			f.flapping = true
			return true
		}
		return false
	}
	if len(f.changes) <= 1 {
		f.flapping = false
	}
	return false
}

// SlowStart ramps a recovered backend's weight from First percent to 100
// over Period, so a server that has just come back (cold caches, JIT, a
// connection pool to fill) is not flooded. Its zero value does nothing.
type SlowStart struct {
	Period time.Duration
	// First is the percentage taken at once. Default: 10.
	First int
}

// Percent returns the weight percentage a backend that came up at since
// should take at now.
func (s SlowStart) Percent(since, now time.Time) int {
	if s.Period <= 0 {
		return 100
	}
	first := s.First
	if first <= 0 {
		first = 10
	}
	elapsed := now.Sub(since)
	if elapsed >= s.Period {
		return 100
	}
	if elapsed < 0 {
		return first
	}
	return first + int(float64(100-first)*float64(elapsed)/float64(s.Period))
}
