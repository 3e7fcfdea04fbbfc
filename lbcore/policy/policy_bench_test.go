package policy

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// BenchmarkPick measures the choice: Pick, then a Cancelled Done, which
// undoes the pick's bookkeeping (heap policies re-order) without recording
// a response. BenchmarkRequest adds a served Done with its response-time
// sample, the whole of a policy's work per proxied request. Weights vary so
// the weighted paths are exercised. Compare caddymodules'
// BenchmarkCaddyPolicies, which measures Caddy's own policies on the same
// pool sizes.
func BenchmarkPick(b *testing.B) { benchmarkPolicies(b, pool.Cancelled) }

// BenchmarkRequest measures Pick and a served Done.
func BenchmarkRequest(b *testing.B) { benchmarkPolicies(b, pool.Served) }

func benchmarkPolicies(b *testing.B, outcome pool.Outcome) {
	for _, name := range []string{"smooth_weighted_round_robin", "weighted_least_conn", "fast_response", "two_choices", "consistent_hash", "load_feedback"} {
		for _, n := range []int{3, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				weights := make([]int, n)
				for i := range weights {
					weights[i] = 1 + i%4
				}
				p, _ := newPool(b, weights...)
				pol := constructors[name](p, Options{})
				keys := make([]uint64, 1024)
				for i := range keys {
					keys[i] = HashString(fmt.Sprint("/objects/", i))
				}
				pol.Done(pol.Pick(keys[0]), pool.Cancelled, 0) // build the lookup structure
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					be := pol.Pick(keys[i&1023])
					pol.Done(be, outcome, time.Duration(100+i&63)*time.Microsecond)
				}
			})
		}
	}
}

// BenchmarkMaglevLookup measures the table read alone.
func BenchmarkMaglevLookup(b *testing.B) {
	for _, n := range []int{3, 100, 1000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			weights := make([]int, n)
			for i := range weights {
				weights[i] = 1
			}
			p, _ := newPool(b, weights...)
			c := NewConsistentHash(p, Options{})
			t := c.table.get()
			b.ReportAllocs()
			var sink *pool.Backend
			for i := uint64(0); b.Loop(); i++ {
				sink = t.lookup(mix(i))
			}
			_ = sink
		})
	}
}

// BenchmarkPickOnly times Pick alone: the picked requests are finished in
// batches of 1024 with the timer stopped, so the heap policies' in-flight
// counts stay realistic without timing their Done.
func BenchmarkPickOnly(b *testing.B) {
	for _, name := range []string{"weighted_least_conn", "fast_response", "load_feedback"} {
		for _, n := range []int{3, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", name, n), func(b *testing.B) {
				weights := make([]int, n)
				for i := range weights {
					weights[i] = 1 + i%4
				}
				p, _ := newPool(b, weights...)
				pol := constructors[name](p, Options{})
				pol.Done(pol.Pick(0), pool.Cancelled, 0)
				picked := make([]*pool.Backend, 0, 1024)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					picked = append(picked, pol.Pick(0))
					if len(picked) == cap(picked) {
						b.StopTimer()
						for _, be := range picked {
							pol.Done(be, pool.Cancelled, 0)
						}
						picked = picked[:0]
						b.StartTimer()
					}
				}
			})
		}
	}
}
