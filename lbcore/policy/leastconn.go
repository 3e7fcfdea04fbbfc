package policy

import (
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// WeightedLeastConn sends each request to the backend with the fewest
// requests in flight for its weight; ties go round robin in proportion to
// weight, as in nginx, so sequential requests, which find nothing in
// flight, still split by weight. Picks cost O(log n): the backends are
// kept in a tournament tree, as HAProxy keeps them in a tree, rather than
// scanned.
type WeightedLeastConn struct {
	opts  Options
	queue *loadQueue
}

// NewWeightedLeastConn returns the policy for p.
func NewWeightedLeastConn(p *pool.Pool, opts Options) *WeightedLeastConn {
	return &WeightedLeastConn{
		opts:  opts.withDefaults(),
		queue: newLoadQueue(p, leastConnPricing{}),
	}
}

// Pick returns the least loaded backend.
func (l *WeightedLeastConn) Pick(uint64) *pool.Backend {
	b := l.queue.pick()
	if b != nil {
		b.Begin()
	}
	return b
}

// Assign counts a request sent to b without a pick.
func (l *WeightedLeastConn) Assign(b *pool.Backend) {
	l.queue.assign(b)
	b.Begin()
}

// Done records the end of a request.
func (l *WeightedLeastConn) Done(b *pool.Backend, o pool.Outcome, rtt time.Duration) {
	b.End(o, rtt, l.opts.Now, l.opts.Decay)
	l.queue.done(b, false, nil)
}

// leastConnPricing costs a backend its requests in flight per weight.
type leastConnPricing struct{}

func (leastConnPricing) stride(_ *loadQueue, s *slot) float64 { return 1 / s.weight }
func (leastConnPricing) cost(s *slot) float64                 { return float64(s.inFlight) / s.weight }
