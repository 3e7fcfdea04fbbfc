// Package pool models the servers behind a load balancer: backends with
// their live counters, and pools that group them and publish immutable
// snapshots for lock-free selection.
package pool

import (
	"math"
	"sync/atomic"
	"time"
)

// State is a backend's effective state in a pool, as an operator reads it.
type State uint8

// The states, in the order they take precedence. An operator sets Active,
// Draining or Offline; health checks set Down; configuration sets Standby.
const (
	// Active backends take new requests.
	Active State = iota
	// Standby backends take requests only while no primary is available.
	Standby
	// Draining backends take no new sessions; requests already sent finish.
	Draining
	// Offline backends have been taken out by an operator.
	Offline
	// Down backends failed their health checks.
	Down
)

func (s State) String() string {
	switch s {
	case Active:
		return "active"
	case Standby:
		return "standby"
	case Draining:
		return "draining"
	case Offline:
		return "offline"
	case Down:
		return "down"
	}
	return "unknown"
}

// ParseState reads a state's name.
func ParseState(name string) (State, bool) {
	for s := Active; s <= Down; s++ {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}

// epoch counts backend state changes process-wide. Snapshots remember the
// epoch they were built at, so a state change in any backend invalidates
// every snapshot that might contain it with one atomic load per pick.
var epoch atomic.Uint64

// Backend is one server:port behind the load balancer. Its counters and
// states are shared by every pool that names its address, and survive
// configuration reloads through the Registry.
type Backend struct {
	// Address identifies the backend, usually host:port.
	Address string

	admin    atomic.Uint32 // State: Active, Draining or Offline
	drainEnd atomic.Int64  // unix nanoseconds; 0: a drain has no deadline
	down     atomic.Uint32 // DownSource bits of those who judged it down
	scale    atomic.Uint32 // percent of the configured weight; see Scale
	inFlight atomic.Int64
	total    atomic.Uint64
	failures atomic.Uint64

	rttBits    atomic.Uint64 // float64 nanoseconds: response-time average
	lastSample atomic.Int64  // unix nanoseconds of the last response-time sample

	checkLatency atomic.Int64  // nanoseconds: the last round of health checks
	loadBits     atomic.Uint64 // float64: the last utilization the backend reported
}

// CheckLatency returns how long b's last round of health checks took.
func (b *Backend) CheckLatency() time.Duration { return time.Duration(b.checkLatency.Load()) }

// SetCheckLatency records how long b's last round of health checks took.
func (b *Backend) SetCheckLatency(d time.Duration) { b.checkLatency.Store(int64(d)) }

// ReportedLoad returns the utilization b last reported of itself, or NaN.
func (b *Backend) ReportedLoad() float64 { return math.Float64frombits(b.loadBits.Load()) }

// SetReportedLoad records the utilization b reported of itself.
func (b *Backend) SetReportedLoad(u float64) { b.loadBits.Store(math.Float64bits(u)) }

// NewBackend returns an active, healthy backend with no history.
func NewBackend(address string) *Backend {
	b := &Backend{Address: address}
	b.scale.Store(100)
	b.loadBits.Store(math.Float64bits(math.NaN()))
	return b
}

// MaxScale is the largest weight scale, in percent, that a backend may
// ask for (HAProxy's agent checks allow the same).
const MaxScale = 256

// Scale returns the percentage of its configured weight that b takes now:
// 100 normally, less while it warms up after recovering (slow start) or
// when its agent asks for less. At 0 it takes no new requests.
func (b *Backend) Scale() int { return int(b.scale.Load()) }

// SetScale sets b's weight scale in percent, clamped to 0..MaxScale.
func (b *Backend) SetScale(percent int) {
	percent = min(max(percent, 0), MaxScale)
	if int(b.scale.Swap(uint32(percent))) != percent {
		epoch.Add(1)
	}
}

// Admin returns the operator's state for b: Active, Draining or Offline.
func (b *Backend) Admin() State { return State(b.admin.Load()) }

// SetAdmin records the operator's state for b: Active, Draining or Offline.
func (b *Backend) SetAdmin(s State) {
	if State(b.admin.Swap(uint32(s))) != s {
		epoch.Add(1)
	}
}

// Drain stops new sessions on b. Sessions already bound to it (persistence
// entries) keep reaching it until deadline; a zero deadline lets them run
// until they expire on their own.
func (b *Backend) Drain(deadline time.Time) {
	end := int64(0)
	if !deadline.IsZero() {
		end = deadline.UnixNano()
	}
	b.drainEnd.Store(end)
	b.SetAdmin(Draining)
}

// DrainDeadline returns when b's drain cuts its remaining sessions, or the
// zero time when it has no deadline.
func (b *Backend) DrainDeadline() time.Time {
	if end := b.drainEnd.Load(); end != 0 {
		return time.Unix(0, end)
	}
	return time.Time{}
}

// TakesBoundSessions reports whether b may take a request of a session
// already bound to it (a persistence entry): it is available, or it drains
// and its deadline, if any, is still ahead of now.
func (b *Backend) TakesBoundSessions(now time.Time) bool {
	if b.Available() {
		return true
	}
	if b.Admin() != Draining || b.Down() {
		return false
	}
	end := b.drainEnd.Load()
	return end == 0 || now.UnixNano() < end
}

// DownSource says who judged a backend down. Each source's verdict is kept
// apart, so one cannot clear what another found: Sluice's own health
// checks, and the engine's (Caddy's active and passive checks).
type DownSource uint32

// The sources of down verdicts.
const (
	ByHealthChecks DownSource = 1 << iota
	ByEngine
)

// DownBy reports whether source has judged b down.
func (b *Backend) DownBy(source DownSource) bool { return b.down.Load()&uint32(source) != 0 }

// Down reports whether any source has judged b down.
func (b *Backend) Down() bool { return b.down.Load() != 0 }

// SetDown records the verdict of Sluice's health checks.
func (b *Backend) SetDown(down bool) { b.MarkDown(ByHealthChecks, down) }

// MarkDown records one source's verdict.
func (b *Backend) MarkDown(source DownSource, down bool) {
	for {
		old := b.down.Load()
		next := old &^ uint32(source)
		if down {
			next |= uint32(source)
		}
		if old == next {
			return
		}
		if b.down.CompareAndSwap(old, next) {
			if (old == 0) != (next == 0) {
				epoch.Add(1)
			}
			return
		}
	}
}

// Available reports whether b may take new requests.
func (b *Backend) Available() bool { return b.Admin() == Active && !b.Down() && b.Scale() > 0 }

// InFlight returns the number of requests sent to b that have not finished.
func (b *Backend) InFlight() int64 { return b.inFlight.Load() }

// Total returns the number of requests b has finished, failed ones included.
func (b *Backend) Total() uint64 { return b.total.Load() }

// Failures returns the number of requests b failed to answer.
func (b *Backend) Failures() uint64 { return b.failures.Load() }

// ResponseTime returns b's response-time average, or 0 before any sample.
func (b *Backend) ResponseTime() time.Duration {
	return time.Duration(math.Float64frombits(b.rttBits.Load()))
}

// LastSample returns when b's response time was last sampled, in Unix
// nanoseconds, or 0.
func (b *Backend) LastSample() int64 { return b.lastSample.Load() }

// Begin counts a request sent to b.
func (b *Backend) Begin() { b.inFlight.Add(1) }

// Outcome says how a request sent to a backend ended.
type Outcome uint8

const (
	// Served means the backend answered.
	Served Outcome = iota
	// Failed means the backend could not be reached or did not answer.
	Failed
	// Cancelled means the request never reached the backend (the load
	// balancer chose again); it leaves no trace in the averages.
	Cancelled
)

// End counts the end of a request begun with Begin. A served request adds
// rtt to the response-time average, which decays with time constant decay:
// a sample weighs 1-exp(-Δt/decay), Δt being the time since the previous
// sample, and never less than minSampleWeight, so both busy and rarely
// chosen backends follow change within about one decay.
// now is called only when a sample is taken.
func (b *Backend) End(o Outcome, rtt time.Duration, now func() time.Time, decay time.Duration) {
	b.inFlight.Add(-1)
	switch o {
	case Cancelled:
		return
	case Failed:
		b.failures.Add(1)
	}
	b.total.Add(1)
	if o == Served {
		b.observe(rtt, now(), decay)
	}
}

// minSampleWeight keeps an average moving when samples arrive faster than
// the decay would otherwise allow a single one to matter.
const minSampleWeight = 1.0 / 16

// SampleWeight is how much a response-time sample taken dt after the
// previous one weighs in an average with time constant decay:
// 1-exp(-dt/decay), and never less than 1/16. exp runs only for sparse
// samples: below x = 1/16, where busy backends are, the floor wins.
func SampleWeight(dt, decay time.Duration) float64 {
	if decay <= 0 || dt >= 32*decay {
		return 1
	}
	x := float64(dt) / float64(decay)
	if x <= minSampleWeight {
		return minSampleWeight
	}
	return 1 - math.Exp(-x)
}

// observe adds a response-time sample taken at now to b's average.
func (b *Backend) observe(rtt time.Duration, now time.Time, decay time.Duration) {
	sample := float64(rtt)
	last := b.lastSample.Swap(now.UnixNano())
	for {
		oldBits := b.rttBits.Load()
		old := math.Float64frombits(oldBits)
		next := sample
		if last != 0 && old != 0 {
			next = old + SampleWeight(time.Duration(now.UnixNano()-last), decay)*(sample-old)
		}
		if b.rttBits.CompareAndSwap(oldBits, math.Float64bits(next)) {
			return
		}
	}
}
