package policy

import (
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// FastResponse is weighted fast response: it favours the backends that
// answer fastest. A backend's price per request is its response-time
// average divided by its weight, and the backend with the lowest
//
//	pass + in-flight × price
//
// is chosen, pass growing by one price per pick (see loadQueue). Sequential requests therefore split in
// inverse proportion to response time, and concurrent ones by in-flight
// requests weighted by response time, the cost Finagle and Linkerd call
// peak EWMA. A backend that slows down loses traffic as soon as its average
// moves, within about one decay, and wins it back as quickly. No backend
// is starved: its price is capped at MaxPriceRatio times the best, so it
// keeps receiving a small share that measures its recovery.
type FastResponse struct {
	opts  Options
	queue *loadQueue
}

// MaxPriceRatio caps how many times dearer than the best backend another
// may be priced: the slowest backend keeps about 1/MaxPriceRatio of the
// fastest one's share as probes.
const MaxPriceRatio = 50

// minResponseTime keeps response times of loopback backends, which are
// mostly noise, from deciding the split.
const minResponseTime = 50 * time.Microsecond

// NewFastResponse returns the policy for p.
func NewFastResponse(p *pool.Pool, opts Options) *FastResponse {
	return &FastResponse{opts: opts.withDefaults(), queue: newLoadQueue(p, responsePricing{})}
}

// responsePrice is a backend's price: its response-time average over its
// weight. A backend with no sample yet is priced like the average of those
// that have one, so it is tried at once without being flooded.
type responsePricing struct{}

func (responsePricing) cost(s *slot) float64 { return s.pass + float64(s.inFlight)*s.stride }

func (responsePricing) stride(q *loadQueue, s *slot) float64 {
	rt := float64(s.backend.ResponseTime())
	if rt == 0 {
		rt = q.typicalRT
	}
	price := max(rt, float64(minResponseTime)) / s.weight
	if q.minStride > 0 {
		price = min(price, q.minStride*MaxPriceRatio)
	}
	return price
}

// Pick returns the backend expected to answer soonest.
func (f *FastResponse) Pick(uint64) *pool.Backend {
	b := f.queue.pick()
	if b != nil {
		b.Begin()
	}
	return b
}

// Done records the end of a request and its response time.
func (f *FastResponse) Done(b *pool.Backend, o pool.Outcome, rtt time.Duration) {
	b.End(o, rtt, f.opts.Now, f.opts.Decay)
	if o == pool.Failed {
		// A backend that fails answers no faster than the slowest
		// acceptable one: price it so until it recovers.
		b.Observe(max(rtt, b.ResponseTime()*MaxPriceRatio, time.Second), f.opts.Now(), f.opts.Decay)
	}
	f.queue.done(b, o != pool.Cancelled, nil)
}
