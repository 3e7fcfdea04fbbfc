package policy

import (
	"slices"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// servers simulates backends that each serve up to slots requests at once
// in a fixed service time and queue the rest, behind a closed loop of
// clients (as wrk drives a proxy). It returns requests per backend, the
// 99th percentile response time and the throughput.
func servers(pol Policy, clock *fakeClock, service map[*pool.Backend]time.Duration, slots, clients, n int) (map[*pool.Backend]int, time.Duration, float64) {
	type req struct {
		b          *pool.Backend
		start, end time.Time
	}
	free := map[*pool.Backend][]time.Time{} // when each slot frees
	for b := range service {
		free[b] = make([]time.Time, slots)
	}
	var open []req
	var latencies []time.Duration
	got := map[*pool.Backend]int{}
	begin := clock.now
	for range n {
		for len(open) >= clients {
			first := 0
			for i := range open {
				if open[i].end.Before(open[first].end) {
					first = i
				}
			}
			r := open[first]
			clock.now = r.end
			pol.Done(r.b, pool.Served, r.end.Sub(r.start))
			latencies = append(latencies, r.end.Sub(r.start))
			open = append(open[:first], open[first+1:]...)
		}
		b := pol.Pick(0)
		got[b]++
		// The request takes the slot that frees first.
		s := 0
		for i, t := range free[b] {
			if t.Before(free[b][s]) {
				s = i
			}
		}
		start := clock.now
		if free[b][s].After(start) {
			start = free[b][s]
		}
		free[b][s] = start.Add(service[b])
		open = append(open, req{b, clock.now, free[b][s]})
	}
	for _, r := range open {
		clock.now = r.end
		pol.Done(r.b, pool.Served, r.end.Sub(r.start))
	}
	slices.Sort(latencies)
	p99 := latencies[len(latencies)*99/100]
	return got, p99, float64(len(latencies)) / clock.now.Sub(begin).Seconds()
}

// The balancing benchmark's scenario, simulated: backends serving in 2, 5,
// 10 and 20ms, 8 at a time, 64 clients. Least connections keeps the same
// number in flight everywhere, so the slowest backend's queue sets the
// tail; load feedback learns each backend's capacity and sends each
// request where it finishes soonest, for a much shorter tail.
func TestLoadFeedbackLearnsCapacity(t *testing.T) {
	run := func(name string) (map[*pool.Backend]int, []pool.Member, time.Duration, float64) {
		p, ms := newPool(t, 1, 1, 1, 1)
		clock := newFakeClock()
		pol := constructors[name](p, testOptions(clock, 9))
		service := map[*pool.Backend]time.Duration{}
		for i, d := range []time.Duration{2, 5, 10, 20} {
			service[ms[i].Backend] = d * time.Millisecond
		}
		servers(pol, clock, service, 8, 64, 20000) // learn
		got, p99, rate := servers(pol, clock, service, 8, 64, 40000)
		return got, ms, p99, rate
	}
	_, _, lcP99, lcRate := run("weighted_least_conn")
	_, _, frP99, frRate := run("fast_response")
	t.Logf("fast response: p99 %v, %.0f req/s", frP99, frRate)
	if frP99 > lcP99*3/4 || frRate < lcRate*0.85 {
		t.Errorf("fast response p99 %v at %.0f req/s; least conn %v at %.0f: want a clearly shorter tail", frP99, frRate, lcP99, lcRate)
	}
	got, ms, p99, rate := run("load_feedback")
	var shares []int
	for _, m := range ms {
		shares = append(shares, got[m.Backend]*100/40000)
	}
	t.Logf("least conn: p99 %v, %.0f req/s; load feedback: p99 %v, %.0f req/s, shares %v%%", lcP99, lcRate, p99, rate, shares)
	if shares[0] < 50 || shares[1] < 15 || shares[3] > 6 {
		t.Errorf("load feedback split %v%%, want the fast backends loaded first", shares)
	}
	if p99 > lcP99*3/4 {
		t.Errorf("load feedback p99 %v, least conn's %v: want clearly shorter", p99, lcP99)
	}
	// The slowest backend is left the requests nothing else can finish
	// sooner, so throughput may fall a little short of least connections'.
	if rate < lcRate*0.85 {
		t.Errorf("load feedback %.0f req/s, least conn %.0f: want at most 15%% less", rate, lcRate)
	}
}

// A backend that reports itself busy gets less, under load as when idle.
func TestLoadFeedbackHonoursReports(t *testing.T) {
	p, ms := newPool(t, 1, 1)
	clock := newFakeClock()
	pol := NewLoadFeedback(p, testOptions(clock, 10))
	service := map[*pool.Backend]time.Duration{ms[0].Backend: time.Millisecond, ms[1].Backend: time.Millisecond}
	servers(pol, clock, service, 8, 32, 2000)
	pol.Report(ms[1].Backend, 0.75)
	got, _, _ := servers(pol, clock, service, 8, 32, 4000)
	if busy, idle := got[ms[1].Backend], got[ms[0].Backend]; busy == 0 || busy > idle/2 {
		t.Fatalf("backend 75%% busy got %d requests to its idle peer's %d, want clearly fewer but some", busy, idle)
	}
}
