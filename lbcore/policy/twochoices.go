package policy

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// TwoChoices is the power of two random choices: it draws two backends at
// random in proportion to their weights and sends the request to the
// cheaper, priced as fast response prices them (response time × requests
// in flight, counting this one). It needs no shared order, so picks never wait on
// each other, and it avoids the herd that strict least-load policies send
// to a backend that has just become the cheapest.
type TwoChoices struct {
	done
	alias derived[aliasTable]
	// latest is when the latest response arrived, unix nanoseconds: the
	// "now" that staleness is measured against. Reading the clock on every
	// pick would cost more than the rest of the pick (about 65 ns on these
	// VMs); while traffic flows, the latest answer is at most a request
	// old, and without traffic no pick needs it.
	latest atomic.Int64
}

// NewTwoChoices returns the policy for p.
func NewTwoChoices(p *pool.Pool, opts Options) *TwoChoices {
	c := &TwoChoices{done: done{opts.withDefaults()}}
	c.alias = derived[aliasTable]{pool: p, build: func(s *pool.Snapshot, _ *aliasTable) *aliasTable {
		return buildAlias(s.Eligible)
	}}
	return c
}

// Pick returns the cheaper of two random backends.
func (c *TwoChoices) Pick(uint64) *pool.Backend {
	t := c.alias.get()
	switch len(t.members) {
	case 0:
		return nil
	case 1:
		b := t.members[0].Backend
		b.Begin()
		return b
	}
	n := uint64(len(t.members))
	i := t.draw(c.opts.Rand())
	j := t.draw(c.opts.Rand())
	if j == i {
		// Two draws of one backend are no choice: take any other.
		j = int((uint64(i) + 1 + c.opts.Rand()%(n-1)) % n)
	}
	a, b := t.members[i].Backend, t.members[j].Backend
	// Prices within a tenth of each other are noise: the first draw, made
	// by weight, keeps the request, so weights hold among equals.
	now := c.latest.Load()
	rtA, rtB := c.responseTime(a, now), c.responseTime(b, now)
	switch {
	case rtA == 0:
		rtA = rtB // no sample yet: compare on requests in flight alone
	case rtB == 0:
		rtB = rtA
	}
	if price(rtB, b) < price(rtA, a)*0.9 {
		a = b
	}
	a.Begin()
	return a
}

// responseTime is the response time a backend is priced at, or 0 before
// any sample. One not refreshed for longer than the decay fades
// exponentially, as in Linkerd's peak EWMA: a backend priced out by one
// slow sample would otherwise never be chosen again to show it has
// recovered. Backends in use are sampled well within the decay and compare
// on their true averages.
func (c *TwoChoices) responseTime(b *pool.Backend, now int64) float64 {
	last := b.LastSample()
	if last == 0 {
		return 0
	}
	rt := float64(max(b.ResponseTime(), minResponseTime))
	if idle := now - last - int64(c.opts.Decay); idle > 0 {
		rt *= math.Exp(-float64(idle) / float64(c.opts.Decay))
	}
	return rt
}

// price is a backend's expected wait: response time × requests in flight,
// this one included. Weight is not in it: it already decided how often
// the backend is drawn.
func price(rt float64, b *pool.Backend) float64 {
	return max(rt, float64(minResponseTime)) * float64(b.InFlight()+1)
}

// Done records the end of a request.
func (c *TwoChoices) Done(b *pool.Backend, o pool.Outcome, rtt time.Duration) {
	c.done.Done(b, o, rtt)
	if o == pool.Served {
		c.latest.Store(b.LastSample())
	}
}

// aliasTable draws members in proportion to weight in O(1) (Vose's alias
// method).
type aliasTable struct {
	members []pool.Member
	prob    []uint32 // chance, out of 2^32, of keeping the drawn column
	alias   []uint32
}

func buildAlias(members []pool.Member) *aliasTable {
	n := len(members)
	t := &aliasTable{members: members, prob: make([]uint32, n), alias: make([]uint32, n)}
	total := 0
	for _, m := range members {
		total += m.Weight
	}
	scaled := make([]float64, n)
	var small, large []int
	for i, m := range members {
		scaled[i] = float64(m.Weight) * float64(n) / float64(total)
		if scaled[i] < 1 {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		t.prob[s] = uint32(scaled[s] * (1 << 32))
		t.alias[s] = uint32(l)
		if scaled[l] += scaled[s] - 1; scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, i := range append(small, large...) {
		t.prob[i] = ^uint32(0)
		t.alias[i] = uint32(i)
	}
	return t
}

func (t *aliasTable) draw(r uint64) int {
	i := (r >> 32) * uint64(len(t.members)) >> 32
	if uint32(r) < t.prob[i] {
		return int(i)
	}
	return int(t.alias[i])
}
