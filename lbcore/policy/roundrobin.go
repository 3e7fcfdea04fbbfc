package policy

import (
	"container/heap"
	"sync/atomic"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// SmoothWeightedRoundRobin sends requests to backends in proportion to
// their weights, interleaved as evenly as possible: weights 5, 1, 1 give
// a a b a c a a, not a a a a a b c. The order is nginx's smooth weighted
// round robin, computed once per snapshot into a schedule that picks walk
// with one atomic increment.
type SmoothWeightedRoundRobin struct {
	done
	schedule derived[schedule]
}

type schedule struct {
	order []*pool.Backend
	next  atomic.Uint64
}

// NewSmoothWeightedRoundRobin returns the policy for p.
func NewSmoothWeightedRoundRobin(p *pool.Pool, opts Options) *SmoothWeightedRoundRobin {
	r := &SmoothWeightedRoundRobin{done: done{opts.withDefaults()}}
	r.schedule = derived[schedule]{pool: p, build: buildSchedule}
	return r
}

// Pick returns the next backend in the schedule.
func (r *SmoothWeightedRoundRobin) Pick(uint64) *pool.Backend {
	s := r.schedule.get()
	if len(s.order) == 0 {
		return nil
	}
	b := s.order[(s.next.Add(1)-1)%uint64(len(s.order))]
	b.Begin()
	return b
}

// maxExactWork bounds the work of computing nginx's exact order, which
// costs one pass over the members per schedule slot.
const maxExactWork = 1 << 22

// maxScheduleLen bounds a schedule's memory. Weights whose reduced sum is
// larger are scaled down to fit, which keeps proportions to within 1 in
// maxScheduleLen/len(members).
const maxScheduleLen = 1 << 20

func buildSchedule(snap *pool.Snapshot, prev *schedule) *schedule {
	members := snap.Eligible
	weights := reducedWeights(members)
	total := 0
	for _, w := range weights {
		total += w
	}
	s := &schedule{order: make([]*pool.Backend, 0, total)}
	if prev != nil {
		s.next.Store(prev.next.Load())
	}
	if total*len(members) <= maxExactWork {
		exactSmoothOrder(s, members, weights)
	} else {
		strideOrder(s, members, weights, total)
	}
	return s
}

// reducedWeights divides the weights by their greatest common divisor and
// scales them down if their sum would exceed maxScheduleLen.
func reducedWeights(members []pool.Member) []int {
	g, sum := 0, 0
	for _, m := range members {
		g = gcd(g, m.Weight)
		sum += m.Weight
	}
	scale := 1.0
	if g > 0 && sum/g > maxScheduleLen {
		scale = float64(maxScheduleLen) / float64(sum/g)
	}
	weights := make([]int, len(members))
	for i, m := range members {
		weights[i] = max(1, int(float64(m.Weight/g)*scale))
	}
	return weights
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func exactSmoothOrder(s *schedule, members []pool.Member, weights []int) {
	for _, i := range SmoothOrder(weights) {
		s.order = append(s.order, members[i].Backend)
	}
}

// SmoothOrder is nginx's smooth weighted round robin: every step each
// index gains its weight, the richest is chosen and pays the total. It
// returns sum(weights) steps, index i weights[i] times, as evenly
// interleaved as the weights allow (5, 1, 1 gives 0 0 1 0 2 0 0). It costs
// a pass over the weights per step.
func SmoothOrder(weights []int) []int {
	total := 0
	for _, w := range weights {
		total += w
	}
	order := make([]int, 0, total)
	current := make([]int, len(weights))
	for range total {
		best := 0
		for i, w := range weights {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		order = append(order, best)
	}
	return order
}

// strideOrder interleaves large pools with stride scheduling: each member
// is due every total/weight steps, starting half a stride in.
func strideOrder(s *schedule, members []pool.Member, weights []int, total int) {
	h := make(strideQueue, len(members))
	for i, w := range weights {
		stride := float64(total) / float64(w)
		h[i] = strideEntry{due: stride / 2, stride: stride, index: i}
	}
	heap.Init(&h)
	for range total {
		e := &h[0]
		s.order = append(s.order, members[e.index].Backend)
		e.due += e.stride
		heap.Fix(&h, 0)
	}
}

type strideEntry struct {
	due, stride float64
	index       int
}

type strideQueue []strideEntry

func (q strideQueue) Len() int { return len(q) }
func (q strideQueue) Less(i, j int) bool {
	return q[i].due < q[j].due || q[i].due == q[j].due && q[i].index < q[j].index
}
func (q strideQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *strideQueue) Push(any)     { panic("strideQueue is fixed-size") }
func (q *strideQueue) Pop() any     { panic("strideQueue is fixed-size") }
