package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// fakeClock is an injected clock that tests move by hand.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time      { return c.now }
func (c *fakeClock) Add(d time.Duration) { c.now = c.now.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{now: time.Unix(1_000_000, 0)} }
func testOptions(c *fakeClock, seed uint64) Options {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return Options{Now: c.Now, Rand: r.Uint64}
}

func newPool(t testing.TB, weights ...int) (*pool.Pool, []pool.Member) {
	t.Helper()
	ms := make([]pool.Member, len(weights))
	for i, w := range weights {
		name := string(rune('a' + i))
		if len(weights) > 26 {
			name = fmt.Sprintf("10.0.%d.%d:80", i/256, i%256)
		}
		ms[i] = pool.Member{Backend: pool.NewBackend(name), Weight: w}
	}
	p, err := pool.New("test", ms)
	if err != nil {
		t.Fatal(err)
	}
	return p, ms
}

// constructors lists every policy, for the properties they all share.
var constructors = map[string]func(*pool.Pool, Options) Policy{
	"smooth_weighted_round_robin": func(p *pool.Pool, o Options) Policy { return NewSmoothWeightedRoundRobin(p, o) },
	"weighted_least_conn":         func(p *pool.Pool, o Options) Policy { return NewWeightedLeastConn(p, o) },
	"fast_response":               func(p *pool.Pool, o Options) Policy { return NewFastResponse(p, o) },
	"two_choices":                 func(p *pool.Pool, o Options) Policy { return NewTwoChoices(p, o) },
	"consistent_hash":             func(p *pool.Pool, o Options) Policy { return NewConsistentHash(p, o) },
	"load_feedback":               func(p *pool.Pool, o Options) Policy { return NewLoadFeedback(p, o) },
}

// shares sends n sequential requests, each answered in rtt, and counts
// them by backend.
func shares(pol Policy, clock *fakeClock, n int, rtt func(*pool.Backend) time.Duration) map[*pool.Backend]int {
	got := make(map[*pool.Backend]int)
	for i := range n {
		b := pol.Pick(HashString(fmt.Sprint("key", i)))
		if b == nil {
			return got
		}
		got[b]++
		d := rtt(b)
		clock.Add(d)
		pol.Done(b, pool.Served, d)
	}
	return got
}

func constant(d time.Duration) func(*pool.Backend) time.Duration {
	return func(*pool.Backend) time.Duration { return d }
}

func TestSmoothInterleaving(t *testing.T) {
	p, _ := newPool(t, 5, 1, 1)
	pol := NewSmoothWeightedRoundRobin(p, Options{})
	var order strings.Builder
	for range 14 {
		b := pol.Pick(0)
		order.WriteString(b.Address)
		pol.Done(b, pool.Served, time.Millisecond)
	}
	if got, want := order.String(), "aabacaaaabacaa"; got != want {
		t.Fatalf("order = %s, want %s", got, want)
	}
	if got, want := SmoothOrder([]int{5, 1, 1}), []int{0, 0, 1, 0, 2, 0, 0}; !slices.Equal(got, want) {
		t.Fatalf("SmoothOrder(5, 1, 1) = %v, want %v", got, want)
	}
}

func TestStrideOrderForLargeSchedules(t *testing.T) {
	// 300 backends of weights 1..300 exceed the exact algorithm's budget.
	weights := make([]int, 300)
	for i := range weights {
		weights[i] = i + 1
	}
	p, ms := newPool(t, weights...)
	pol := NewSmoothWeightedRoundRobin(p, Options{})
	got := shares(pol, newFakeClock(), 300*301/2, constant(0))
	for i, m := range ms {
		if got[m.Backend] != weights[i] {
			t.Fatalf("backend %d of weight %d got %d requests over one schedule", i, weights[i], got[m.Backend])
		}
	}
}

// Every policy but the hash splits sequential requests by weight.
func TestWeightsSplitSequentialRequests(t *testing.T) {
	for name, newPolicy := range constructors {
		t.Run(name, func(t *testing.T) {
			p, ms := newPool(t, 3, 1)
			clock := newFakeClock()
			got := shares(newPolicy(p, testOptions(clock, 1)), clock, 4000, constant(time.Millisecond))
			share := float64(got[ms[0].Backend]) / 4000
			if math.Abs(share-0.75) > 0.03 {
				t.Fatalf("weights 3:1 gave the first backend %.1f%% of requests, want 75%%", share*100)
			}
		})
	}
}

func TestStandbyOnlyWhileNoPrimary(t *testing.T) {
	for name, newPolicy := range constructors {
		t.Run(name, func(t *testing.T) {
			p, ms := newPool(t, 1, 1, 1)
			ms[2].Standby = true
			if err := p.SetMembers(ms); err != nil {
				t.Fatal(err)
			}
			clock := newFakeClock()
			pol := newPolicy(p, testOptions(clock, 2))
			if got := shares(pol, clock, 200, constant(time.Millisecond)); got[ms[2].Backend] != 0 {
				t.Fatalf("standby took %d requests while primaries were up", got[ms[2].Backend])
			}
			ms[0].Backend.SetDown(true)
			ms[1].Backend.SetAdmin(pool.Offline)
			if got := shares(pol, clock, 50, constant(time.Millisecond)); got[ms[2].Backend] != 50 {
				t.Fatalf("standby took %d of 50 requests with every primary out, want all", got[ms[2].Backend])
			}
			ms[0].Backend.SetDown(false)
			if got := shares(pol, clock, 50, constant(time.Millisecond)); got[ms[0].Backend] != 50 {
				t.Fatalf("returning primary took %d of 50 requests, want all (the other is offline)", got[ms[0].Backend])
			}
			ms[0].Backend.SetDown(true)
			ms[2].Backend.SetDown(true)
			if b := pol.Pick(7); b != nil {
				t.Fatalf("picked %s with every backend out", b.Address)
			}
		})
	}
}

func TestLeastConnBalancesInFlightByWeight(t *testing.T) {
	p, ms := newPool(t, 3, 1)
	pol := NewWeightedLeastConn(p, Options{})
	for range 40 {
		pol.Pick(0) // never finished: in-flight piles up
	}
	if a, b := ms[0].Backend.InFlight(), ms[1].Backend.InFlight(); a != 30 || b != 10 {
		t.Fatalf("in flight = %d and %d, want 30 and 10", a, b)
	}
	// Finishing the heavy backend's requests sends the next ones there.
	for range 10 {
		pol.Done(ms[0].Backend, pool.Served, time.Millisecond)
	}
	for range 5 {
		if b := pol.Pick(0); b != ms[0].Backend {
			t.Fatalf("picked %s, want the backend whose requests finished", b.Address)
		}
	}
}

func TestFastResponseFollowsResponseTime(t *testing.T) {
	p, ms := newPool(t, 1, 1, 1)
	clock := newFakeClock()
	pol := NewFastResponse(p, testOptions(clock, 3))
	slow := ms[2].Backend
	slowness := 20 * time.Millisecond
	rtt := func(b *pool.Backend) time.Duration {
		if b == slow {
			return time.Millisecond + slowness
		}
		return time.Millisecond
	}
	shares(pol, clock, 300, rtt) // learn
	got := shares(pol, clock, 600, rtt)
	if got[slow] == 0 || got[slow] >= 600*15/100 {
		t.Fatalf("backend 20ms slower got %d of 600 requests, want some but under 15%%", got[slow])
	}
	slowness = 0
	clock.Add(2 * DefaultDecay)
	shares(pol, clock, 300, rtt) // recover
	got = shares(pol, clock, 600, rtt)
	if got[slow] < 600*28/100 {
		t.Fatalf("recovered backend got %d of 600 requests, want its third back", got[slow])
	}
}

// simulate runs n requests through pol with concurrency in flight at once;
// each backend serves in its service time, slower with more in flight
// (it serves one at a time). It returns the requests per backend.
func simulate(pol Policy, clock *fakeClock, service map[*pool.Backend]time.Duration, concurrency, n int) map[*pool.Backend]int {
	type req struct {
		b   *pool.Backend
		end time.Time
	}
	var open []req
	busyUntil := make(map[*pool.Backend]time.Time)
	got := make(map[*pool.Backend]int)
	for range n {
		for len(open) >= concurrency {
			first := 0
			for i := range open {
				if open[i].end.Before(open[first].end) {
					first = i
				}
			}
			r := open[first]
			if r.end.After(clock.now) {
				clock.now = r.end
			}
			pol.Done(r.b, pool.Served, service[r.b])
			open = append(open[:first], open[first+1:]...)
		}
		b := pol.Pick(0)
		got[b]++
		start := clock.now
		if busyUntil[b].After(start) {
			start = busyUntil[b]
		}
		busyUntil[b] = start.Add(service[b])
		open = append(open, req{b, busyUntil[b]})
	}
	return got
}

// Under steady concurrency, backends that answer faster take more.
func TestLoadAwarePoliciesFavourTheFaster(t *testing.T) {
	for _, name := range []string{"weighted_least_conn", "fast_response", "two_choices", "load_feedback"} {
		t.Run(name, func(t *testing.T) {
			p, ms := newPool(t, 1, 1)
			clock := newFakeClock()
			pol := constructors[name](p, testOptions(clock, 4))
			service := map[*pool.Backend]time.Duration{ms[0].Backend: time.Millisecond, ms[1].Backend: 4 * time.Millisecond}
			got := simulate(pol, clock, service, 30, 5000)
			if share := float64(got[ms[0].Backend]) / 5000; share < 0.7 {
				t.Fatalf("4× faster backend got %.0f%% of concurrent requests, want most", share*100)
			}
		})
	}
}

func TestFailuresDriveTrafficAway(t *testing.T) {
	p, ms := newPool(t, 1, 1)
	clock := newFakeClock()
	pol := NewFastResponse(p, testOptions(clock, 5))
	for range 200 {
		b := pol.Pick(0)
		o := pool.Served
		if b == ms[1].Backend {
			o = pool.Failed
		}
		clock.Add(time.Millisecond)
		pol.Done(b, o, time.Millisecond)
	}
	if f := ms[1].Backend.Total(); f == 0 || f > 20 {
		t.Fatalf("failing backend was sent %d of 200 requests", f)
	}
}

func TestTwoChoicesPrefersTheCheaper(t *testing.T) {
	p, ms := newPool(t, 1, 1, 1, 1)
	clock := newFakeClock()
	pol := NewTwoChoices(p, testOptions(clock, 6))
	for range 20 {
		ms[0].Backend.Begin() // a backend with 20 requests stuck
	}
	got := make(map[*pool.Backend]int)
	for range 1000 {
		b := pol.Pick(0)
		got[b]++
		pol.Done(b, pool.Served, time.Millisecond)
	}
	if got[ms[0].Backend] > 0 {
		t.Fatalf("loaded backend chosen %d times; it loses every comparison", got[ms[0].Backend])
	}
	for _, m := range ms[1:] {
		if got[m.Backend] < 250 {
			t.Fatalf("idle backends split unevenly: %v", got)
		}
	}
}

func TestMaglevMovesFewKeys(t *testing.T) {
	const n, keys = 10, 100000
	p, ms := newPool(t, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	pol := NewConsistentHash(p, Options{})
	before := make([]*pool.Backend, keys)
	counts := make(map[*pool.Backend]int)
	for k := range keys {
		before[k] = pol.Pick(HashString(fmt.Sprint(k)))
		counts[before[k]]++
	}
	for _, m := range ms {
		if c := counts[m.Backend]; math.Abs(float64(c)-keys/n) > keys/n*0.05 {
			t.Fatalf("backend %s owns %d keys, want about %d", m.Backend.Address, c, keys/n)
		}
	}
	ms[3].Backend.SetDown(true)
	moved := 0
	for k := range keys {
		after := pol.Pick(HashString(fmt.Sprint(k)))
		if after == ms[3].Backend {
			t.Fatal("key still maps to the removed backend")
		}
		if after != before[k] {
			moved++
		}
	}
	// Only the removed backend's tenth should move, plus Maglev's small slack.
	if frac := float64(moved) / keys; frac > 0.105 {
		t.Fatalf("removing 1 of %d backends moved %.1f%% of keys", n, frac*100)
	}
}

func TestMaglevIgnoresConfigurationOrder(t *testing.T) {
	a, b, c := pool.NewBackend("x:1"), pool.NewBackend("y:1"), pool.NewBackend("z:1")
	t1 := buildMaglev([]pool.Member{{Backend: a, Weight: 1}, {Backend: b, Weight: 2}, {Backend: c, Weight: 1}})
	t2 := buildMaglev([]pool.Member{{Backend: c, Weight: 1}, {Backend: a, Weight: 1}, {Backend: b, Weight: 2}})
	for k := range uint64(5000) {
		key := mix(k)
		if t1.lookup(key) != t2.lookup(key) {
			t.Fatalf("key %d maps differently when backends are listed in another order", k)
		}
	}
}

func TestHashAddrGroupsByPrefix(t *testing.T) {
	cases := []struct {
		a, b         string
		bits4, bits6 int
		same         bool
	}{
		{"192.0.2.10", "192.0.2.200", 24, 64, true},
		{"192.0.2.10", "192.0.3.10", 24, 64, false},
		{"192.0.2.10", "192.0.2.11", 32, 64, false},
		{"2001:db8::1", "2001:db8::ffff:1", 24, 64, true},
		{"2001:db8:0:1::1", "2001:db8:0:2::1", 24, 64, false},
		{"::ffff:192.0.2.10", "192.0.2.99", 24, 64, true},
	}
	for _, c := range cases {
		ha := HashAddr(mustAddr(c.a), c.bits4, c.bits6)
		hb := HashAddr(mustAddr(c.b), c.bits4, c.bits6)
		if (ha == hb) != c.same {
			t.Errorf("%s and %s at /%d /%d: same hash = %v, want %v", c.a, c.b, c.bits4, c.bits6, ha == hb, c.same)
		}
	}
}

// A backend's scale (slow start, agent reports) cuts its share in every
// weighted policy.
func TestScaleCutsShare(t *testing.T) {
	for name, newPolicy := range constructors {
		t.Run(name, func(t *testing.T) {
			p, ms := newPool(t, 1, 1)
			clock := newFakeClock()
			pol := newPolicy(p, testOptions(clock, 7))
			ms[1].Backend.SetScale(25)
			got := shares(pol, clock, 5000, constant(time.Millisecond))
			ratio := float64(got[ms[1].Backend]) / float64(got[ms[0].Backend])
			if math.Abs(ratio-0.25) > 0.04 {
				t.Fatalf("backend at 25%% got %d requests to its peer's %d (ratio %.2f), want a quarter", got[ms[1].Backend], got[ms[0].Backend], ratio)
			}
			ms[1].Backend.SetScale(0)
			if got := shares(pol, clock, 100, constant(time.Millisecond)); got[ms[1].Backend] != 0 {
				t.Fatalf("backend at 0%% got %d requests", got[ms[1].Backend])
			}
		})
	}
}

// A backend priced out by one slow sample is tried again once its sample
// has gone stale, and wins back its share when it proves fast.
func TestTwoChoicesForgivesStaleSamples(t *testing.T) {
	p, ms := newPool(t, 1, 1)
	clock := newFakeClock()
	pol := NewTwoChoices(p, testOptions(clock, 8))
	ms[1].Backend.Begin()
	ms[1].Backend.End(pool.Served, time.Second, clock.Now, DefaultDecay) // one cold, slow answer
	// Within ten decays (5ms a request) it is tried and wins back its half.
	shares(pol, clock, 4000, constant(5*time.Millisecond))
	got := shares(pol, clock, 1000, constant(5*time.Millisecond))
	if got[ms[1].Backend] < 400 {
		t.Fatalf("backend with one stale slow sample got %d of 1000 requests: %v", got[ms[1].Backend], got)
	}
}

// TestAssignIsPricedLikeAPick: requests that persistence sends to a
// backend count in flight there, so least-load policies send new requests
// elsewhere, and Done hands them back.
func TestAssignIsPricedLikeAPick(t *testing.T) {
	for name, newPolicy := range constructors {
		t.Run(name, func(t *testing.T) {
			clock := newFakeClock()
			p, ms := newPool(t, 1, 1)
			pol := newPolicy(p, testOptions(clock, 7))
			a, b := ms[0].Backend, ms[1].Backend
			for range 3 {
				pol.Assign(a)
			}
			if a.InFlight() != 3 {
				t.Fatalf("3 assigned requests, %d in flight", a.InFlight())
			}
			if name == "weighted_least_conn" {
				for i := range 3 {
					if got := pol.Pick(0); got != b {
						t.Fatalf("pick %d went to %s, which has 3 assigned requests in flight", i, got.Address)
					} else {
						pol.Done(got, pool.Served, time.Millisecond)
					}
				}
			}
			for range 3 {
				pol.Done(a, pool.Served, time.Millisecond)
			}
			if a.InFlight() != 0 || a.Total() != 3 {
				t.Fatalf("after Done: %d in flight, %d total; want 0 and 3", a.InFlight(), a.Total())
			}
		})
	}
}
