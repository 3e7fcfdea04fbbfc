package l4fwd

import (
	"net"
	"sort"

	"github.com/sluicelb/sluice/lbcore/policy"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// Desired is what the kernel should hold at one moment: the configuration
// joined with each real server's live state (health, drain) and, for DR,
// the addresses of the devices involved. The ruleset is a pure function of
// it, which is what the builder's tests check.
type Desired struct {
	Table    string
	Services []*ServiceState
}

// ServiceState is one service as the kernel should serve it now.
type ServiceState struct {
	*Service
	ID    uint16 // stable across reloads while the service keeps its name
	Reals []*RealState
	// Slots holds, for each scheduler value 0 … Modulus-1, the index in
	// Reals of the server it picks: the eligible servers in proportion to
	// their effective weights. Empty when no server is eligible.
	Slots []int
	// DR only: the load balancer's device on the segment.
	IfIndex int
	LBMAC   net.HardwareAddr
}

// RealState is one real server as the kernel should see it now.
type RealState struct {
	*Real
	Mark  uint32           // ct mark (NAT) naming this server in kernel maps
	MAC   net.HardwareAddr // DR only
	State pool.State       // effective: active, standby, draining, offline or down
	Full  bool             // reached max_conns, not yet below min_conns
	// Eligible servers take new connections (they hold scheduler slots).
	Eligible bool
}

// Modulus is the size of the scheduler's value space: numgen or jhash
// results fall in [0, Modulus). A fixed modulus makes every weight, health
// or drain change an element update of one map, never a rule rewrite.
const Modulus = 1000

// markOf names a real server in kernel maps: the service in the high half,
// so a mask finds every connection of a service (SNAT), the server in the
// low half.
func markOf(service, real uint16) uint32 { return uint32(service)<<16 | uint32(real) }

// slots shares Modulus among eligible weights by largest remainder: every
// eligible server gets at least one slot, and the slots add up to Modulus.
// The values are dealt out interleaved, so that NAT's "numgen inc", which
// walks them in order, takes the servers in turn by weight (3:1 gives
// a a b a, a a b a, ...) rather than a run of 750 and then 250.
func slots(weights []int) []int {
	total := 0
	for _, w := range weights {
		total += w
	}
	if total == 0 {
		return nil
	}
	type share struct {
		real, n int
		rem     int
	}
	var shares []share
	given := 0
	for i, w := range weights {
		if w <= 0 {
			continue
		}
		n := w * Modulus / total
		rem := w * Modulus % total
		if n == 0 {
			n, rem = 1, -1 // at least one slot; it takes no remainder
		}
		shares = append(shares, share{i, n, rem})
		given += n
	}
	order := make([]int, len(shares))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return shares[order[a]].rem > shares[order[b]].rem })
	for i := 0; given < Modulus; i++ {
		shares[order[i%len(order)]].n++
		given++
	}
	for given > Modulus { // minimum slots pushed us over: take from the largest
		sort.SliceStable(order, func(a, b int) bool { return shares[order[a]].n > shares[order[b]].n })
		shares[order[0]].n--
		given--
	}
	counts := make([]int, len(shares))
	for i, s := range shares {
		counts[i] = s.n
	}
	out := policy.SmoothOrder(counts)
	for v, i := range out {
		out[v] = shares[i].real
	}
	return out
}
