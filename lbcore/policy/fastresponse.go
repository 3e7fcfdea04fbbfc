package policy

import (
	"math"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// FastResponse is weighted fast response: it favours the backends that
// answer fastest. Each request goes to the backend with the lowest
//
//	response-time average × (1 + requests in flight ÷ relative weight)
//
// the time a new request can expect to wait there (the cost Finagle and
// Linkerd call peak EWMA). Unlike least connections, which evens out
// requests in flight and so lets the slowest backend's queue set the tail,
// it sends a backend only as many requests as it can finish about as soon
// as the others.
//
// Costs are compared in steps of 10%: finer is noise. Backends in one
// step take turns by weight, so equal backends share sequential requests
// by weight. A backend that slows down leaves its step at once; the
// average follows it within about one decay. One pick in ExploreEvery goes
// to a random backend, so none is starved; such a probe that finds a
// backend more than twice as fast as its average is believed at once, so a
// backend that recovers wins its share back within a few probes.
//
// The averages are the policy's own, not the backend's shared one: two
// policies in front of one backend measure what each of them sees.
type FastResponse struct {
	opts    Options
	queue   *loadQueue
	explore func(q *loadQueue, n int) int
	rng     uint64 // xorshift state; used under the queue's lock
}

// ExploreEvery is how often, in picks, the response-time policies send a
// request to a random backend to keep measuring it.
const ExploreEvery = 32

// minResponseTime is the floor of every response time a policy compares:
// differences below a millisecond are scheduling noise, not a faster
// server, and chasing them would send sequential requests to whichever
// backend was last lucky instead of taking turns.
const minResponseTime = time.Millisecond

// NewFastResponse returns the policy for p.
func NewFastResponse(p *pool.Pool, opts Options) *FastResponse {
	f := &FastResponse{opts: opts.withDefaults(), queue: newLoadQueue(p, responsePricing{})}
	f.rng = f.opts.Rand() | 1
	f.explore = f.choose
	return f
}

// responseModel is FastResponse's view of one backend.
type responseModel struct {
	rt         float64 // response-time average, nanoseconds; 0 before a sample
	lastSample time.Time
	probes     int     // exploration picks not yet answered
	weight     float64 // relative to the pool's mean weight
	typical    float64 // the pool's typical response time, for rt == 0
}

func responseOf(s *slot) *responseModel {
	if m, ok := s.model.(*responseModel); ok {
		return m
	}
	m := &responseModel{weight: 1}
	s.model = m
	return m
}

type responsePricing struct{}

// step returns x's 10% step: floor(log₁.₁ x), near enough. A float's bits
// read as an integer are a piecewise-linear log₂ of it (exact at powers of
// two, within 0.09 between), which is monotonic, so steps stay ordered at
// a few nanoseconds rather than a math.Log's twenty.
func step(x float64) float64 {
	log2 := float64(math.Float64bits(x))/(1<<52) - 1023
	return math.Floor(log2 / 0.13750352374993502) // log₂ 1.1
}

// stride keeps the backend's relative weight for cost, and returns the
// pass step that makes ties go by weight.
func (responsePricing) stride(q *loadQueue, s *slot) float64 {
	m := responseOf(s)
	if q.meanWeight > 0 {
		m.weight = s.weight / q.meanWeight
	}
	m.typical = q.typicalRT
	return 1 / s.weight
}

func (responsePricing) cost(s *slot) float64 {
	m := responseOf(s)
	rt := m.rt
	if rt == 0 {
		// Not measured yet: priced like the pool's typical backend, so it
		// is tried soon without being flooded.
		rt = m.typical
	}
	wait := max(rt, float64(minResponseTime)) * (1 + float64(s.inFlight)/m.weight)
	return step(wait)
}

// Pick returns the backend expected to answer soonest.
func (f *FastResponse) Pick(uint64) *pool.Backend {
	b := f.queue.pickAt(f.explore)
	if b != nil {
		b.Begin()
	}
	return b
}

// choose returns the index of the entry to pick: the cheapest, or now and
// then a random one, marked as a probe. It runs under the queue's lock, so a
// plain xorshift serves, cheaper than a shared generator.
func (f *FastResponse) choose(q *loadQueue, n int) int {
	f.rng ^= f.rng << 13
	f.rng ^= f.rng >> 7
	f.rng ^= f.rng << 17
	r := f.rng
	if r%ExploreEvery != 0 {
		return cheapest(q, n)
	}
	i := int((r >> 32) * uint64(n) >> 32)
	responseOf(q.entries[i].slot).probes++
	return i
}

// Assign counts a request sent to b without a pick.
func (f *FastResponse) Assign(b *pool.Backend) {
	f.queue.assign(b)
	b.Begin()
}

// Done records the end of a request and its response time.
func (f *FastResponse) Done(b *pool.Backend, o pool.Outcome, rtt time.Duration) {
	b.End(o, rtt, f.opts.Now, f.opts.Decay)
	if o == pool.Cancelled {
		f.queue.done(b, false, nil)
		return
	}
	now := f.opts.Now()
	f.queue.done(b, true, func(s *slot) {
		m := responseOf(s)
		probe := m.probes > 0
		if probe {
			m.probes--
		}
		sample := float64(rtt)
		if o == pool.Failed {
			// A backend that fails answers no faster than a slow one:
			// price it so until it recovers.
			sample = max(sample, m.rt*MaxPriceRatio, float64(time.Second))
		}
		m.observe(sample, now, f.opts.Decay, probe)
	})
}

func (m *responseModel) observe(sample float64, now time.Time, decay time.Duration, probe bool) {
	defer func() { m.lastSample = now }()
	if m.rt == 0 {
		m.rt = sample
		return
	}
	if probe {
		if sample < m.rt/2 {
			m.rt = sample // recovered: believe it
		} else {
			m.rt = (m.rt + sample) / 2
		}
		return
	}
	m.rt += pool.SampleWeight(now.Sub(m.lastSample), decay) * (sample - m.rt)
}
