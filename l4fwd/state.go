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
	// Slots share the scheduler's Modulus among the eligible real servers,
	// in proportion to their effective weights.
	Slots []Slot
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

// Slot is a range of scheduler values, From to To inclusive, that picks
// Reals[Real].
type Slot struct {
	From, To uint32
	Real     int
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
func slots(weights []int) []Slot {
	total := 0
	for _, w := range weights {
		total += w
	}
	if total == 0 {
		return nil
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
	return interleave(shares)
}

// share is one server's part of the scheduler's values.
type share struct {
	real, n int
	rem     int // largest remainder's tie-break
}

// interleave deals the values 0 … Modulus-1 to the shares in smooth
// weighted round robin order; a server's consecutive values make one Slot.
func interleave(shares []share) []Slot {
	counts := make([]int, len(shares))
	for i, s := range shares {
		counts[i] = s.n
	}
	var out []Slot
	for v, i := range policy.SmoothOrder(counts) {
		if n := len(out); n > 0 && out[n-1].Real == shares[i].real {
			out[n-1].To = uint32(v)
			continue
		}
		out = append(out, Slot{From: uint32(v), To: uint32(v), Real: shares[i].real})
	}
	return out
}
