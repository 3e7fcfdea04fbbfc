package policy

import (
	"sync"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// loadQueue orders a pool's eligible backends by cost for the least-load
// policies, in a min-heap that a pick or a finished request adjusts in
// O(log n). A pricing supplies each backend's cost and its stride, the
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
	heap  []entry                 // the eligible members
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
	pos      int // index in heap, or -1
	model    any // the pricing's own per-backend state
}

func newLoadQueue(p *pool.Pool, pr pricing) *loadQueue {
	return &loadQueue{pool: p, pricing: pr, slots: make(map[*pool.Backend]*slot)}
}

// pick takes the cheapest eligible backend and charges it one request.
func (q *loadQueue) pick() *pool.Backend { return q.pickAt(func(*loadQueue, int) int { return 0 }) }

// pickAt takes the eligible backend at the heap index choose returns for
// the heap's length, for policies that sometimes explore. choose runs
// under the queue's lock.
func (q *loadQueue) pickAt(choose func(q *loadQueue, n int) int) *pool.Backend {
	snap := q.pool.Snapshot()
	q.mu.Lock()
	defer q.mu.Unlock()
	if snap != q.snap {
		q.rebuild(snap)
	}
	if len(q.heap) == 0 {
		return nil
	}
	i := choose(q, len(q.heap))
	s := q.heap[i].slot
	s.pass += s.stride
	s.inFlight++
	if w, ok := q.pricing.(pickWatcher); ok {
		w.picked(s)
	}
	q.fix(i)
	return s.backend
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
	for _, e := range q.heap {
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
	q.heap = q.heap[:0]
	for _, m := range snap.Eligible {
		s, ok := q.slots[m.Backend]
		if !ok {
			s = &slot{backend: m.Backend}
			q.slots[m.Backend] = s
		}
		s.weight = float64(m.Weight)
		s.pass = max(s.pass, floor)
		s.pos = len(q.heap)
		q.heap = append(q.heap, entry{slot: s})
	}
	q.snap = snap
	q.meanWeight = 0
	for _, e := range q.heap {
		q.meanWeight += e.slot.weight / float64(len(q.heap))
	}
	q.minStride = 0
	q.refreshTypical()
	for i := range q.heap {
		s := q.heap[i].slot
		s.stride = q.pricing.stride(q, s)
		q.price(i)
	}
	q.refreshTypical()
	for i := len(q.heap) - 1; i >= 0; i-- {
		q.down(i)
	}
}

// refreshTypical recomputes the figures kept across the eligible members,
// once per rebuild and every 1024 updates: amortized, a scan costs little.
func (q *loadQueue) refreshTypical() {
	sum, n := 0.0, 0
	for i, e := range q.heap {
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

// The heap is 4-ary, which halves its depth, and keeps each entry's keys
// beside the slot pointer so that ordering reads no slot.
const arity = 4

type entry struct {
	cost, pass float64
	slot       *slot
}

func (q *loadQueue) price(i int) {
	e := &q.heap[i]
	e.cost, e.pass = q.pricing.cost(e.slot), e.slot.pass
}

func (q *loadQueue) less(i, j int) bool {
	a, b := &q.heap[i], &q.heap[j]
	if a.cost != b.cost {
		return a.cost < b.cost
	}
	if a.pass != b.pass {
		return a.pass < b.pass
	}
	return a.slot.weight > b.slot.weight
}

func (q *loadQueue) swap(i, j int) {
	q.heap[i], q.heap[j] = q.heap[j], q.heap[i]
	q.heap[i].slot.pos = i
	q.heap[j].slot.pos = j
}

// fix re-prices the entry at i and restores heap order.
func (q *loadQueue) fix(i int) {
	q.price(i)
	if !q.up(i) {
		q.down(i)
	}
}

func (q *loadQueue) up(i int) bool {
	moved := false
	for i > 0 {
		parent := (i - 1) / arity
		if !q.less(i, parent) {
			break
		}
		q.swap(i, parent)
		i, moved = parent, true
	}
	return moved
}

func (q *loadQueue) down(i int) {
	n := len(q.heap)
	for {
		least := i
		first := arity*i + 1
		for c := first; c < first+arity && c < n; c++ {
			if q.less(c, least) {
				least = c
			}
		}
		if least == i {
			return
		}
		q.swap(i, least)
		i = least
	}
}
