package policy

import (
	"sync"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// loadQueue orders a pool's eligible backends by cost for the least-load
// policies, in a tournament tree that a pick or a finished request adjusts
// in O(log n). A pricing supplies each backend's cost and its stride, the
// price of one pick; the queue keeps each backend's pass, which grows by
// one stride per pick. Backends are ordered by cost, then by pass, so
// that backends of equal cost take turns in proportion to 1/stride
// (stride scheduling) rather than all requests going to one of them.
type loadQueue struct {
	pool    *pool.Pool
	pricing pricing

	mu    sync.Mutex
	snap  *pool.Snapshot
	slots map[*pool.Backend]*slot // every member, eligible or not
	// entries are the eligible members, the tree's leaves.
	entries []entry
	// tree[1] is the index in entries of the cheapest member; tree[k] the
	// cheapest of tree[2k] and tree[2k+1]; tree[size+i] is leaf i, or -1
	// past the last entry. size is a power of two, len(tree) = 2×size.
	tree []int32
	// minStride is the smallest stride among eligible members, kept for
	// pricings that bound how far one backend's price may exceed the best.
	minStride float64
	// typicalRT is the mean response time of the eligible members that
	// have one (1ms if none has), in nanoseconds.
	typicalRT float64
	// meanWeight is the eligible members' mean weight, for pricings that
	// read weights as relative hints.
	meanWeight float64
	updates    int
}

// A pricing tells a loadQueue what backends cost.
type pricing interface {
	// stride is the price of one pick of s.
	stride(q *loadQueue, s *slot) float64
	// cost orders backends: the cheapest is picked.
	cost(s *slot) float64
}

type slot struct {
	backend  *pool.Backend
	weight   float64
	stride   float64
	pass     float64
	inFlight int64
	pos      int // index in entries, or -1
	model    any // the pricing's own per-backend state
}

func newLoadQueue(p *pool.Pool, pr pricing) *loadQueue {
	return &loadQueue{pool: p, pricing: pr, slots: make(map[*pool.Backend]*slot)}
}

// pick takes the cheapest eligible backend and charges it one request.
func (q *loadQueue) pick() *pool.Backend { return q.pickAt(cheapest) }

// cheapest chooses the cheapest eligible backend.
func cheapest(q *loadQueue, _ int) int { return int(q.tree[1]) }

// pickAt takes the eligible backend at the index in q.entries that choose
// returns, given their number, for policies that sometimes explore.
// choose runs under the queue's lock.
func (q *loadQueue) pickAt(choose func(q *loadQueue, n int) int) *pool.Backend {
	snap := q.pool.Snapshot()
	q.mu.Lock()
	defer q.mu.Unlock()
	if snap != q.snap {
		q.rebuild(snap)
	}
	if len(q.entries) == 0 {
		return nil
	}
	s := q.entries[choose(q, len(q.entries))].slot
	q.charge(s)
	return s.backend
}

// assign charges b one request that was placed without a pick. A member
// that is not eligible (a draining backend finishing its sessions) is
// charged too, so its count is right when it becomes eligible again.
func (q *loadQueue) assign(b *pool.Backend) {
	snap := q.pool.Snapshot()
	q.mu.Lock()
	defer q.mu.Unlock()
	if snap != q.snap {
		q.rebuild(snap)
	}
	if s, ok := q.slots[b]; ok {
		q.charge(s)
	}
}

// charge counts a request sent to s and re-prices it. It must be called
// with q.mu held.
func (q *loadQueue) charge(s *slot) {
	s.pass += s.stride
	s.inFlight++
	if w, ok := q.pricing.(pickWatcher); ok {
		w.picked(s)
	}
	if s.pos >= 0 {
		q.fix(s.pos)
	}
}

// A pickWatcher is a pricing that wants to see each pick.
type pickWatcher interface{ picked(s *slot) }

// done credits b with a finished request and, if reprice, re-prices it.
// observe, if not nil, runs first under the queue's lock, for pricings that
// learn from each request.
func (q *loadQueue) done(b *pool.Backend, reprice bool, observe func(*slot)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s, ok := q.slots[b]
	if !ok {
		return
	}
	if observe != nil {
		observe(s)
	}
	if s.inFlight > 0 {
		s.inFlight--
	}
	if s.pos < 0 {
		return
	}
	if reprice {
		s.stride = q.pricing.stride(q, s)
		q.minStride = min(q.minStride, s.stride)
		if q.updates++; q.updates%1024 == 0 {
			q.refreshTypical()
		}
	}
	q.fix(s.pos)
}

// update changes b's pricing state with f and re-prices it.
func (q *loadQueue) update(b *pool.Backend, f func(*slot)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s, ok := q.slots[b]
	if !ok {
		return
	}
	f(s)
	if s.pos >= 0 {
		s.stride = q.pricing.stride(q, s)
		q.fix(s.pos)
	}
}

// rebuild follows a new snapshot. Slots outlive snapshots so in-flight
// counts stay right across membership and state changes; a backend that
// becomes eligible starts level with the cheapest one rather than with the
// credit it built up while it was away.
func (q *loadQueue) rebuild(snap *pool.Snapshot) {
	floor, any := 0.0, false
	for _, e := range q.entries {
		if !any || e.slot.pass < floor {
			floor, any = e.slot.pass, true
		}
	}
	members := make(map[*pool.Backend]bool, len(snap.Members))
	for _, m := range snap.Members {
		members[m.Backend] = true
	}
	for b, s := range q.slots {
		if !members[b] {
			delete(q.slots, b)
		}
		s.pos = -1
	}
	q.entries = q.entries[:0]
	for _, m := range snap.Eligible {
		s, ok := q.slots[m.Backend]
		if !ok {
			s = &slot{backend: m.Backend}
			q.slots[m.Backend] = s
		}
		s.weight = float64(m.Weight)
		s.pass = max(s.pass, floor)
		s.pos = len(q.entries)
		q.entries = append(q.entries, entry{slot: s})
	}
	q.snap = snap
	q.meanWeight = 0
	for _, e := range q.entries {
		q.meanWeight += e.slot.weight / float64(len(q.entries))
	}
	q.minStride = 0
	q.refreshTypical()
	for i := range q.entries {
		s := q.entries[i].slot
		s.stride = q.pricing.stride(q, s)
		q.price(i)
	}
	q.refreshTypical()
	q.plant()
}

// refreshTypical recomputes the figures kept across the eligible members,
// once per rebuild and every 1024 updates: amortized, a scan costs little.
func (q *loadQueue) refreshTypical() {
	sum, n := 0.0, 0
	for i, e := range q.entries {
		s := e.slot
		if i == 0 || s.stride < q.minStride {
			q.minStride = s.stride
		}
		if t := s.backend.ResponseTime(); t > 0 {
			sum += float64(t)
			n++
		}
	}
	q.typicalRT = float64(time.Millisecond)
	if n > 0 {
		q.typicalRT = sum / float64(n)
	}
}

// Each entry keeps its keys beside the slot pointer, so that ordering reads
// no slot.
type entry struct {
	cost, pass float64
	slot       *slot
}

func (q *loadQueue) price(i int) {
	e := &q.entries[i]
	e.cost, e.pass = q.pricing.cost(e.slot), e.slot.pass
}

// better returns the cheaper of entries a and b; -1 is no entry.
func (q *loadQueue) better(a, b int32) int32 {
	if a < 0 {
		return b
	}
	if b < 0 {
		return a
	}
	x, y := &q.entries[a], &q.entries[b]
	switch {
	case x.cost != y.cost:
		if y.cost < x.cost {
			return b
		}
	case x.pass != y.pass:
		if y.pass < x.pass {
			return b
		}
	case y.slot.weight > x.slot.weight:
		return b
	}
	return a
}

// plant builds the tree over q.entries.
func (q *loadQueue) plant() {
	size := 1
	for size < len(q.entries) {
		size *= 2
	}
	if cap(q.tree) >= 2*size {
		q.tree = q.tree[:2*size]
	} else {
		q.tree = make([]int32, 2*size)
	}
	for i := range size {
		q.tree[size+i] = -1
		if i < len(q.entries) {
			q.tree[size+i] = int32(i)
		}
	}
	for k := size - 1; k >= 1; k-- {
		q.tree[k] = q.better(q.tree[2*k], q.tree[2*k+1])
	}
}

// fix re-prices entry i and replays its matches up the tree: one
// comparison a level, stopping where the winner is neither changed nor i.
func (q *loadQueue) fix(i int) {
	q.price(i)
	for k := (len(q.tree)/2 + i) / 2; k >= 1; k /= 2 {
		w := q.better(q.tree[2*k], q.tree[2*k+1])
		if w == q.tree[k] && w != int32(i) {
			return
		}
		q.tree[k] = w
	}
}
