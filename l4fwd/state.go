package l4fwd

import (
	"bytes"
	"maps"
	"net"
	"sort"
	"time"

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
	// Moving (DR services that keep no flow state while their scheduler
	// stands still, see HashWhileSteady) holds the scheduler values whose
	// server changed recently: their packets are followed flow by flow
	// until the change has played out. Every other value is sent by the
	// hash alone.
	Moving map[int]Move
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

// Move is a scheduler value whose server changed.
type Move struct {
	// From is the server the value picked before it first moved: a flow
	// that was open then and is seen for the first time since goes there.
	// Nil when such flows are to be scheduled anew (that server went down
	// under reset_on_down, or the flows were all in the flow map).
	From  net.HardwareAddr
	Since time.Time // the value's last change of server
}

// HashWhileSteady says whether s, a DR service, sends flows by their hash
// alone while its scheduler stands still, keeping flow state only for
// values whose server changed: TCP, where a connection's first packet
// (a bare SYN) tells a new flow from an old one, and no persistence,
// which places flows off their hash.
func (s *ServiceState) HashWhileSteady() bool {
	return s.Mode == DR && s.Proto == "tcp" && s.Persist == 0
}

// owner returns the MAC of the server scheduler value v picks, nil if none.
func (s *ServiceState) owner(v int) net.HardwareAddr {
	if v >= len(s.Slots) {
		return nil
	}
	return s.Reals[s.Slots[v]].MAC
}

// trackMoves carries prev's moving values over to s and adds those whose
// server changed between them, as of now. A DR service that followed
// every flow before (persistence, or UDP) has every value moving, its
// flows all in the map. A change of scheduler is not seen as a move:
// open flows are hashed the new way, as after a restart.
func trackMoves(prev, s *ServiceState, now time.Time) map[int]Move {
	if !s.HashWhileSteady() || prev == nil || prev.Mode != DR {
		return nil // a new DR service, or l4fwd's start: flows find their server by hash
	}
	moving := make(map[int]Move)
	if !prev.HashWhileSteady() {
		for v := range Modulus {
			moving[v] = Move{Since: now}
		}
		return moving
	}
	maps.Copy(moving, prev.Moving)
	for v := range Modulus {
		was, is := prev.owner(v), s.owner(v)
		if bytes.Equal(was, is) {
			continue
		}
		m, ok := moving[v]
		if !ok {
			m.From = was
		}
		m.Since = now
		moving[v] = m
	}
	if s.ResetOnDown {
		// Its connections are forgotten: the ones not seen since the
		// move are scheduled anew too, and meet a reset.
		for _, r := range s.Reals {
			if r.State != pool.Down || r.MAC == nil {
				continue
			}
			for v, m := range moving {
				if bytes.Equal(m.From, r.MAC) {
					m.From = nil
					moving[v] = m
				}
			}
		}
	}
	return moving
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
