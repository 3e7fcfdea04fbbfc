package l4fwd

import (
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/sluicelb/sluice/lbcore/pool"
	"golang.org/x/sys/unix"
)

func TestSlots(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		counts  map[int]int // values per real server
		first   []int       // the real servers of the first values, in order
	}{
		{"3:1", []int{3, 1}, map[int]int{0: 750, 1: 250}, []int{0, 0, 1, 0, 0, 0, 1, 0}},
		{"skips ineligible", []int{1, 0, 1}, map[int]int{0: 500, 2: 500}, []int{0, 2, 0, 2}},
		{"one", []int{7}, map[int]int{0: 1000}, []int{0, 0}},
		{"none", []int{0, 0}, map[int]int{}, nil},
		{"thirds", []int{1, 1, 1}, map[int]int{0: 334, 1: 333, 2: 333}, []int{0, 1, 2, 0, 1, 2}},
		{"tiny weight keeps a slot", []int{1000, 1}, map[int]int{0: 999, 1: 1}, []int{0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			values := slotValues(t, tc.weights)
			counts := map[int]int{}
			for _, r := range values {
				counts[r]++
			}
			if !reflect.DeepEqual(counts, tc.counts) {
				t.Errorf("slots(%v) give the servers %v values, want %v", tc.weights, counts, tc.counts)
			}
			if len(values) < len(tc.first) || !slices.Equal(values[:len(tc.first)], tc.first) {
				t.Errorf("slots(%v) begin %v, want %v", tc.weights, values[:min(len(values), 8)], tc.first)
			}
		})
	}
	// Any weights: numgen inc walks the values in order, so every stretch
	// of them from the start must give each server its share to within one.
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		w := make([]int, 1+r.IntN(40))
		for i := range w {
			w[i] = r.IntN(maxWeight + 1)
		}
		values := slotValues(t, w)
		total := map[int]int{}
		for _, v := range values {
			total[v]++
		}
		seen := map[int]int{}
		for k, v := range values {
			seen[v]++
			for real, n := range total {
				due := float64(n) * float64(k+1) / Modulus
				if d := float64(seen[real]) - due; d > 1 || d < -1 {
					t.Fatalf("slots(%v): after %d values server %d had %d, due %.1f", w, k+1, real, seen[real], due)
				}
			}
		}
	}
}

// slotValues checks that slots(weights) gives each of 0 … Modulus-1 to a
// server of positive weight, and returns them.
func slotValues(t *testing.T, weights []int) []int {
	t.Helper()
	values := slots(weights)
	for _, r := range values {
		if weights[r] <= 0 {
			t.Fatalf("slots(%v) give a value to server %d, of weight %d", weights, r, weights[r])
		}
	}
	if len(values) > 0 && len(values) != Modulus {
		t.Fatalf("slots(%v) cover %d values, want %d", weights, len(values), Modulus)
	}
	return values
}

// desiredFrom builds a desired state from configuration text, every real
// server eligible except those named in out, as Balancer.build would.
func desiredFrom(t *testing.T, text string, out ...string) *Desired {
	t.Helper()
	cfg, err := ParseConfig("t.conf", text)
	if err != nil {
		t.Fatal(err)
	}
	d := &Desired{Table: cfg.Table}
	for i, s := range cfg.Services {
		ss := &ServiceState{Service: s, ID: uint16(i + 1), IfIndex: 2, LBMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
		var weights []int
		for j, r := range s.Reals {
			rs := &RealState{Real: r, Mark: markOf(ss.ID, uint16(j+1)), State: r.State,
				MAC: net.HardwareAddr{2, 0, 0, 0, byte(i), byte(j + 2)}}
			rs.Eligible = r.State == pool.Active && !slices.Contains(out, r.Target(s))
			w := 0
			if rs.Eligible {
				w = r.Weight
			}
			weights = append(weights, w)
			ss.Reals = append(ss.Reals, rs)
		}
		ss.Slots = slots(weights)
		d.Services = append(d.Services, ss)
	}
	return d
}

const twoReals = `
service web {
	vip 192.0.2.10
	port 80
	mode %s
	interface eth0
	real 10.0.2.11 weight 3
	real 10.0.2.12 weight 1
}
`

func natText(extra string) string {
	return strings.Replace(strings.Replace(twoReals, "mode %s\n\tinterface eth0", "mode nat"+extra, 1), "%s", "nat", 1)
}

func drText() string { return strings.Replace(twoReals, "%s", "dr", 1) }

// exprsOf returns the types of a rule's expressions, in order.
func exprsOf(rule []expr.Any) []string {
	var out []string
	for _, e := range rule {
		out = append(out, reflect.TypeOf(e).Elem().Name())
	}
	return out
}

func chainOf(t *testing.T, rs *ruleset, name string) *chain {
	t.Helper()
	for _, tb := range rs.tables {
		if c := tb.chain(name); c != nil {
			return c
		}
	}
	t.Fatalf("no chain %s", name)
	return nil
}

func TestBuildNAT(t *testing.T) {
	rs := buildRuleset(desiredFrom(t, natText("\n\tpersist 1m")))
	if len(rs.tables) != 1 {
		t.Fatalf("%d tables for one NAT service, want the ip table only", len(rs.tables))
	}
	fresh := chainOf(t, rs, "s1-new")
	// ct mark != @s1-ok ct mark set numgen inc mod 1000 map @s1-sched:
	// a counter, so that the servers take new connections in turn.
	pick := strings.Join(exprsOf(fresh.rules[1]), " ")
	if want := "Ct Lookup Numgen Lookup Ct"; pick != want {
		t.Errorf("scheduling rule = %s, want %s", pick, want)
	}
	if ng := fresh.rules[1][2].(*expr.Numgen); ng.Type != unix.NFT_NG_INCREMENTAL || ng.Modulus != Modulus {
		t.Errorf("numgen type %d mod %d, want incremental mod %d", ng.Type, ng.Modulus, Modulus)
	}
	refresh := fresh.rules[0]
	if l, ok := refresh[2].(*expr.Lookup); !ok || l.SetName != "s1-persist" {
		t.Errorf("first rule of s1-new should look the client up in s1-persist: %s", exprsOf(refresh))
	}
	// Persistence is refreshed only for servers still taking sessions.
	main := chainOf(t, rs, "s1")
	upd := main.rules[1]
	if l, ok := upd[1].(*expr.Lookup); !ok || l.SetName != "s1-ok" || l.Invert {
		t.Errorf("persistence refresh is not gated by @s1-ok: %s", exprsOf(upd))
	}
	if d, ok := upd[len(upd)-1].(*expr.Dynset); !ok || d.SetName != "s1-persist" || d.Timeout != time.Minute {
		t.Errorf("persistence refresh does not end in update @s1-persist: %s", exprsOf(upd))
	}
	// Every value, keyed as numgen writes it (host order), 3:1 in turn.
	sched := rs.tables[0].set("s1-sched")
	if got := len(sched.elems); got != Modulus {
		t.Fatalf("s1-sched has %d elements, want one per value, %d", got, Modulus)
	}
	r1, r2 := keyMark(markOf(1, 1)), keyMark(markOf(1, 2))
	for v, want := range [][]byte{r1, r1, r2, r1, r1, r1, r2, r1} {
		e := sched.elems[v]
		if !slices.Equal(e.Key, binaryutil.NativeEndian.PutUint32(uint32(v))) || !slices.Equal(e.Val, want) {
			t.Errorf("s1-sched element %d = %x : %x, want %x : %x", v, e.Key, e.Val, binaryutil.NativeEndian.PutUint32(uint32(v)), want)
		}
	}
}

func TestBuildDR(t *testing.T) {
	d := desiredFrom(t, drText())
	rs := buildRuleset(d)
	if len(rs.tables) != 1 || rs.tables[0].family != 5 { // netdev
		t.Fatalf("want the netdev table only")
	}
	c := chainOf(t, rs, "d1")
	var steady, deletes, picks, moved []string // rules by what they do
	for i, r := range c.rules {
		types := strings.Join(exprsOf(r), " ")
		var updates, removes int
		for _, e := range r {
			switch e := e.(type) {
			case *expr.Dynset:
				if e.Operation == dynsetOpDelete {
					removes++
				} else {
					updates++
				}
			case *expr.Lookup:
				switch e.SetName {
				case "d1-sched":
					if strings.Contains(types, "Lookup Bitwise Cmp") {
						steady = append(steady, types)
					} else {
						picks = append(picks, types)
					}
				case "d1-moved":
					moved = append(moved, types)
				}
			case *expr.Numgen:
				t.Errorf("rule %d draws per packet (numgen): one TCP flow would spray over servers", i)
			case *expr.Hash:
				if e.Length != 8 {
					t.Errorf("weighted DR hashes %d bytes, want the flow (saddr . sport, 8)", e.Length)
				}
			}
		}
		if removes > 0 {
			// A bare SYN forgets the flow's old entries (a reused source
			// port), then goes on through the rules: no verdict.
			deletes = append(deletes, types)
			if updates > 0 || strings.HasSuffix(types, "Verdict") {
				t.Errorf("the SYN rule %s must only delete", types)
			}
			continue
		}
		if i == len(c.rules)-1 {
			continue // counter drop
		}
		if !strings.HasSuffix(types, "Dup Verdict") {
			t.Errorf("rule %d does not end in dup + drop: %s", i, types)
		}
		wroteSrc := false
		for _, e := range r {
			if p, ok := e.(*expr.Payload); ok && p.OperationType == expr.PayloadWrite && p.Offset == 6 {
				wroteSrc = true
			}
		}
		if !wroteSrc {
			t.Errorf("rule %d does not rewrite the source MAC: %s", i, types)
		}
	}
	// While the scheduler stands still, the flow's hash picks and nothing
	// is written: a SYN counted as a new flow, then every other packet.
	if len(steady) != 2 || strings.Contains(steady[0]+steady[1], "Dynset") || !strings.HasPrefix(steady[0], "Payload Bitwise Cmp") {
		t.Errorf("steady rules %q, want two without state, the first for a bare SYN", steady)
	}
	if len(deletes) != 1 || deletes[0] != "Payload Bitwise Cmp Payload Payload Dynset Immediate Dynset" {
		t.Errorf("SYN delete rules %q, want one: the SYN's flags, the flow key and two deletes", deletes)
	}
	for name, rules := range map[string][]string{"scheduling": picks, "moved": moved} {
		if len(rules) != 2 || !strings.Contains(rules[0], "Dynset") || strings.Contains(rules[1], "Dynset") {
			t.Errorf("%s rules %q: want one remembering the flow, then its fallback for a full map", name, rules)
		}
	}
	// No value moving: each holds its server's MAC and its own number.
	sched := rs.tables[0].set("d1-sched")
	for v, e := range sched.elems {
		want := valServerSlot(d.Services[0].Reals[d.Services[0].Slots[v]].MAC, v, false)
		if !slices.Equal(e.Val, want) {
			t.Fatalf("d1-sched element %d = %x, want %x", v, e.Val, want)
		}
	}
	if n := len(rs.tables[0].set("d1-moved").elems); n != 0 {
		t.Errorf("d1-moved holds %d elements with nothing moving", n)
	}
}

func TestBuildDRMoving(t *testing.T) {
	d := desiredFrom(t, drText())
	s := d.Services[0]
	from := net.HardwareAddr{2, 0, 0, 0, 9, 9}
	s.Moving = map[int]Move{7: {From: from}, 8: {}}
	rs := buildRuleset(d)
	sched := rs.tables[0].set("d1-sched")
	for v, e := range sched.elems {
		_, moving := s.Moving[v]
		if got := binaryutil.NativeEndian.Uint32(e.Val[8:])&movingBit != 0; got != moving {
			t.Errorf("value %d: moving bit %v, want %v", v, got, moving)
		}
	}
	// Only a value with a server to go back to is in d1-moved; the other
	// one's old flows are scheduled anew.
	moved := rs.tables[0].set("d1-moved").elems
	if len(moved) != 1 || !slices.Equal(moved[0].Key, keySlot(7)) || !slices.Equal(moved[0].Val, valServerSlot(from, 7, true)) {
		t.Errorf("d1-moved = %v, want only 7 : %s", moved, from)
	}

	// With source hashing every pick hashes the client's address alone,
	// the steady and moved rules' too: a client's connections share one
	// server, and a value means the same in every rule and map.
	sh := buildRuleset(desiredFrom(t, strings.Replace(drText(), "port 80", "port 80\n\tscheduler source_hash", 1)))
	hashes := 0
	for _, r := range chainOf(t, sh, "d1").rules {
		for _, e := range r {
			if h, ok := e.(*expr.Hash); ok {
				hashes++
				if h.Length != 4 {
					t.Errorf("source_hash rule hashes %d bytes, want the client address (4): %s", h.Length, exprsOf(r))
				}
			}
		}
	}
	if hashes < 6 { // steady ×2, moved ×2, scheduling ×2
		t.Errorf("source_hash chain has %d hashes, want the steady, moved and scheduling rules'", hashes)
	}

	// Services whose flows are all followed have no steady rules.
	for _, text := range []string{
		strings.Replace(drText(), "port 80", "port 80\n\tprotocol udp\n\thealth none", 1),
		strings.Replace(drText(), "port 80", "port 80\n\tpersist 1m", 1),
	} {
		d := desiredFrom(t, text)
		rs := buildRuleset(d)
		if rs.tables[0].set("d1-moved") != nil {
			t.Errorf("%s: has d1-moved", d.Services[0].Name)
		}
		for _, r := range chainOf(t, rs, "d1").rules {
			if types := strings.Join(exprsOf(r), " "); strings.Contains(types, "Lookup Bitwise Cmp") {
				t.Errorf("persist %v proto %s: steady rule %s", d.Services[0].Persist, d.Services[0].Proto, types)
			}
		}
	}
}

// opsOf plans old → next and returns the commands as text.
func opsOf(old, next *ruleset) []string {
	var out []string
	for _, o := range plan(old, next) {
		out = append(out, o.String())
	}
	return out
}

func TestPlan(t *testing.T) {
	base := buildRuleset(desiredFrom(t, natText("")))
	second := natText("") + `
service api {
	vip 192.0.2.10
	port 443
	real 10.0.2.11
}
`
	tests := []struct {
		name string
		next *ruleset
		want []string
	}{
		{"same state", buildRuleset(desiredFrom(t, natText(""))), nil},
		{"weight change", buildRuleset(desiredFrom(t, strings.Replace(natText(""), "weight 3", "weight 1", 1))),
			// 750 of the 1000 values change hands: 3:1 deals a a b a, 1:1 a b.
			[]string{"delete element ip s1-sched (750)", "add element ip s1-sched (750)"}},
		{"server down", buildRuleset(desiredFrom(t, natText(""), "10.0.2.12:80")),
			[]string{"delete element ip s1-sched (250)", "delete element ip s1-ok (1)", "add element ip s1-sched (250)"}},
		{"max_conns", buildRuleset(desiredFrom(t, strings.Replace(natText(""), "weight 1", "weight 1 max_conns 10", 1))),
			[]string{"flush chain ip s1-new", "add chain ip r10002", "add set ip s1-limits",
				"add rule ip s1-new", "add rule ip s1-new", "add rule ip s1-new", "add rule ip s1-new", "add rule ip r10002"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := opsOf(base, tc.next); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	t.Run("add and remove a service", func(t *testing.T) {
		two := buildRuleset(desiredFrom(t, second))
		for _, dir := range []struct {
			name      string
			old, next *ruleset
		}{{"add", base, two}, {"remove", two, base}} {
			ops := opsOf(dir.old, dir.next)
			if len(ops) == 0 {
				t.Fatalf("%s: no change", dir.name)
			}
			for _, o := range ops {
				if strings.Contains(o, " s1") || strings.Contains(o, "table") {
					t.Errorf("%s service s2 touched %q", dir.name, o)
				}
			}
		}
	})
	t.Run("first apply replaces a stale table", func(t *testing.T) {
		ops := opsOf(nil, base)
		want := []string{"add table ip", "delete table ip", "add table ip"}
		if !reflect.DeepEqual(ops[:3], want) {
			t.Errorf("first ops %q, want %q", ops[:3], want)
		}
		if !slices.Contains(ops, "delete table netdev") {
			t.Error("a stale netdev table is not removed")
		}
	})
	t.Run("persistence timeout redefines its map", func(t *testing.T) {
		a := buildRuleset(desiredFrom(t, natText("\n\tpersist 1m")))
		b := buildRuleset(desiredFrom(t, natText("\n\tpersist 2m")))
		ops := opsOf(a, b)
		for _, want := range []string{"delete set ip s1-persist", "add set ip s1-persist", "flush chain ip s1", "flush chain ip s1-new"} {
			if !slices.Contains(ops, want) {
				t.Errorf("ops %q lack %q", ops, want)
			}
		}
		// Rules that used the old map go before it, its replacement before new rules.
		if slices.Index(ops, "flush chain ip s1") > slices.Index(ops, "delete set ip s1-persist") ||
			slices.Index(ops, "add set ip s1-persist") > slices.Index(ops, "add rule ip s1") {
			t.Errorf("ops out of order: %q", ops)
		}
	})
	t.Run("NAT to DR", func(t *testing.T) {
		ops := opsOf(base, buildRuleset(desiredFrom(t, drText())))
		if ops[0] != "delete table ip" || ops[1] != "add table netdev" {
			t.Errorf("ops %q", ops)
		}
	})
}
