package policy

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// TestQueueAlwaysPicksTheCheapest drives each queue-based policy with
// random picks, finishes and state changes, and checks after every step
// that the tree's winner is the entry a scan finds cheapest.
func TestQueueAlwaysPicksTheCheapest(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 17, 100} {
		weights := make([]int, n)
		for i := range weights {
			weights[i] = 1 + i%4
		}
		p, ms := newPool(t, weights...)
		clock := newFakeClock()
		queues := map[string]*loadQueue{
			"weighted_least_conn": NewWeightedLeastConn(p, testOptions(clock, 1)).queue,
			"fast_response":       NewFastResponse(p, testOptions(clock, 2)).queue,
			"load_feedback":       NewLoadFeedback(p, testOptions(clock, 3)).queue,
		}
		rng := rand.New(rand.NewPCG(uint64(n), 9))
		inFlight := map[string][]*pool.Backend{}
		for step := range 3000 {
			for name, q := range queues {
				sent := inFlight[name]
				switch r := rng.IntN(10); {
				case r < 5:
					if b := q.pick(); b != nil {
						sent = append(sent, b)
					}
				case r < 9 && len(sent) > 0:
					i := rng.IntN(len(sent))
					b := sent[i]
					sent = append(sent[:i], sent[i+1:]...)
					rtt := time.Duration(1+rng.IntN(20)) * time.Millisecond
					q.done(b, true, func(s *slot) {
						if m, ok := s.model.(*responseModel); ok {
							m.observe(float64(rtt), clock.now, time.Second, false)
						}
					})
				default:
					ms[rng.IntN(n)].Backend.SetScale(25 * rng.IntN(5))
				}
				inFlight[name] = sent
				q.mu.Lock()
				if snap := q.pool.Snapshot(); snap != q.snap {
					q.rebuild(snap)
				}
				if len(q.entries) > 0 {
					best := 0
					for i := range q.entries {
						if q.better(int32(best), int32(i)) == int32(i) {
							best = i
						}
					}
					if got := q.tree[1]; q.entries[got].cost != q.entries[best].cost || q.entries[got].pass != q.entries[best].pass {
						t.Fatalf("%s, n=%d, step %d: tree picks entry %d (cost %v, pass %v), the cheapest is %d (cost %v, pass %v)",
							name, n, step, got, q.entries[got].cost, q.entries[got].pass, best, q.entries[best].cost, q.entries[best].pass)
					}
				}
				q.mu.Unlock()
			}
			clock.now = clock.now.Add(time.Millisecond)
		}
	}
}
