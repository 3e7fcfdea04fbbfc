package policy

import (
	"math"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// LoadFeedback keeps every backend at about the same fraction of its
// capacity, so backends of unequal power need no hand-set weights. It
// learns each backend's capacity from what it observes, the way Eddie's
// front ends did from their back ends' reports:
//
//   - base response time: the time the backend takes when it is not
//     queueing (a slowly rising minimum of its response times);
//   - concurrency: how many requests it serves at once before they queue
//     (raised when it answers n at once at base speed, lowered to
//     n × base/response time when it is queueing);
//   - reported utilization, when the backend reports it (ORCA header or
//     agent check): a backend saying it is 80% busy has a fifth of its
//     capacity left.
//
// Each request goes where it is expected to finish soonest:
//
//	base × max(1, in flight ÷ concurrency) ÷ (1 − utilization)
//
// so the fastest backends take the load until their queues make a slower
// one quicker (join the shortest expected delay): under heavy load the
// slow backends take only what the fast ones cannot finish sooner, which
// keeps the tail short. Backends that tie (equal bases, nothing queued)
// take turns in proportion to capacity, concurrency ÷ base × (1 −
// utilization) × weight: a configured weight is only a hint of capacity.
// One pick in 2 × ExploreEvery goes to a random backend so that backends not
// chosen are still measured.
type LoadFeedback struct {
	opts    Options
	queue   *loadQueue
	pricing *feedbackPricing
}

// NewLoadFeedback returns the policy for p.
func NewLoadFeedback(p *pool.Pool, opts Options) *LoadFeedback {
	opts = opts.withDefaults()
	pr := &feedbackPricing{now: opts.Now, decay: opts.Decay}
	return &LoadFeedback{opts: opts, queue: newLoadQueue(p, pr), pricing: pr}
}

// capacityModel is what LoadFeedback has learned of one backend.
type capacityModel struct {
	base        float64 // nanoseconds; 0 before the first sample
	concurrency float64
	utilization float64 // reported; 0 when none or stale
	reportedAt  time.Time
	// weight is the backend's weight relative to the pool's mean: a
	// configured hint that it has that many times the usual capacity.
	weight float64
	// dispatched holds, oldest first, how many requests were in flight
	// when each unfinished request was sent. A backend finishes requests
	// about in the order it got them, so the oldest entry belongs to the
	// request that finishes next: what it met on arrival, not what is in
	// flight when it leaves, tells whether it queued.
	dispatched ring
}

// ring is a FIFO of in-flight counts that grows as needed and reuses its
// space, so steady traffic allocates nothing.
type ring struct {
	buf        []int64
	head, size int
}

// maxDispatched bounds the memory of dispatch counts per backend: past it
// the oldest is dropped.
const maxDispatched = 4096

func (r *ring) push(v int64) {
	if r.size == len(r.buf) {
		if r.size == maxDispatched {
			r.pop()
		} else {
			grown := make([]int64, max(16, 2*len(r.buf)))
			for i := range r.size {
				grown[i] = r.buf[(r.head+i)%len(r.buf)]
			}
			r.buf, r.head = grown, 0
		}
	}
	r.buf[(r.head+r.size)%len(r.buf)] = v
	r.size++
}

func (r *ring) pop() (int64, bool) {
	if r.size == 0 {
		return 0, false
	}
	v := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return v, true
}

// Learning rates, per sample.
const (
	baseDrift        = 0.002 // lets the base rise to a backend that got slower for good
	concurrencyAlpha = 0.1
	maxUtilization   = 0.95 // beyond this a backend is priced as 20× slower, not infinitely
)

// MaxPriceRatio bounds how many times dearer than the best backend another
// may be priced, so a backend priced out by its figures keeps a share that
// measures it again; fast_response prices a failure at this many times the
// backend's average.
const MaxPriceRatio = 50

type feedbackPricing struct {
	now   func() time.Time
	decay time.Duration
	// fastest is the lowest base response time learned of any backend:
	// a backend not yet measured is assumed as fast, so it is tried.
	fastest float64
}

func model(s *slot) *capacityModel {
	if m, ok := s.model.(*capacityModel); ok {
		return m
	}
	m := &capacityModel{concurrency: 1, weight: 1}
	s.model = m
	return m
}

func (p *feedbackPricing) picked(s *slot) {
	model(s).dispatched.push(s.inFlight)
}

// arrival pops the in-flight count met by the request finishing now.
func (m *capacityModel) arrival(fallback int64) int64 {
	if n, ok := m.dispatched.pop(); ok {
		return n
	}
	return fallback
}

func (p *feedbackPricing) headroom(m *capacityModel) float64 {
	if m.utilization == 0 || p.now().Sub(m.reportedAt) > 10*p.decay {
		return 1
	}
	return 1 - min(m.utilization, maxUtilization)
}

func (p *feedbackPricing) base(q *loadQueue, m *capacityModel) float64 {
	switch {
	case m.base > 0:
		return m.base
	case p.fastest > 0:
		return p.fastest
	}
	return q.typicalRT
}

// stride is the time one more request takes of the backend's capacity.
func (p *feedbackPricing) stride(q *loadQueue, s *slot) float64 {
	m := model(s)
	if q.meanWeight > 0 {
		m.weight = s.weight / q.meanWeight
	}
	stride := p.base(q, m) / (m.concurrency * m.weight * p.headroom(m))
	if q.minStride > 0 {
		stride = min(stride, q.minStride*MaxPriceRatio)
	}
	return stride
}

func (p *feedbackPricing) cost(s *slot) float64 {
	m := model(s)
	base := m.base
	if base == 0 {
		base = p.fastest
	}
	// The queue term counts the requests already in flight against the
	// concurrency, narrowed by the backend's scale (slow start, agent
	// weight): with nothing queued every backend costs its base, and equal
	// bases tie, leaving the turn to the pass, by capacity.
	scale := float64(max(s.backend.Scale(), 1)) / 100
	wait := base * max(1, float64(s.inFlight)/(m.concurrency*scale))
	return wait / p.headroom(m)
}

// learn updates the model from a request that took rtt while n were in
// flight (itself included).
func (m *capacityModel) learn(rtt time.Duration, n int64) {
	t := float64(max(rtt, minResponseTime))
	perWeight := float64(n)
	switch {
	case m.base == 0 || t < m.base:
		m.base = t
	case perWeight <= m.concurrency:
		// Slower while it should not be queueing: the backend itself got
		// slower. (Slower while queueing is expected, and says nothing
		// of its base.)
		m.base += (t - m.base) * baseDrift
	}
	switch {
	case t <= 1.25*m.base:
		m.concurrency = max(m.concurrency, perWeight)
	case t > 1.5*m.base:
		estimate := perWeight * m.base / t
		m.concurrency = max(1, m.concurrency+concurrencyAlpha*(estimate-m.concurrency))
	}
}

// Pick returns the backend expected to finish the request soonest.
func (l *LoadFeedback) Pick(uint64) *pool.Backend {
	b := l.queue.pickAt(func(q *loadQueue, n int) int {
		r := l.opts.Rand()
		if r%(2*ExploreEvery) != 0 {
			return cheapest(q, n)
		}
		return int((r >> 32) * uint64(n) >> 32)
	})
	if b != nil {
		b.Begin()
	}
	return b
}

// Assign counts a request sent to b without a pick.
func (l *LoadFeedback) Assign(b *pool.Backend) {
	l.queue.assign(b)
	b.Begin()
}

// Done records the end of a request and learns from it.
func (l *LoadFeedback) Done(b *pool.Backend, o pool.Outcome, rtt time.Duration) {
	b.End(o, rtt, l.opts.Now, l.opts.Decay)
	if o == pool.Cancelled {
		l.queue.done(b, false, func(s *slot) { model(s).arrival(0) })
		return
	}
	l.queue.done(b, true, func(s *slot) {
		m := model(s)
		n := m.arrival(s.inFlight)
		if o == pool.Failed {
			m.concurrency = max(1, m.concurrency/2)
			return
		}
		m.learn(rtt, n)
		if p := l.pricing; p.fastest == 0 || m.base < p.fastest {
			p.fastest = m.base
		}
	})
}

// Report records a backend's own word on how busy it is: utilization is a
// fraction of its capacity (ORCA's figure, or 1 − an agent's weight
// percentage). Values that are not numbers or are negative are ignored.
func (l *LoadFeedback) Report(b *pool.Backend, utilization float64) {
	if math.IsNaN(utilization) || utilization < 0 {
		return
	}
	l.queue.update(b, func(s *slot) {
		m := model(s)
		m.utilization, m.reportedAt = utilization, l.opts.Now()
	})
}
