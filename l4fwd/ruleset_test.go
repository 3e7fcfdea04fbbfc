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
	rs := buildRuleset(desiredFrom(t, drText()))
	if len(rs.tables) != 1 || rs.tables[0].family != 5 { // netdev
		t.Fatalf("want the netdev table only")
	}
	c := chainOf(t, rs, "d1")
	// A bare SYN first forgets the flow's old entries (a reused source
	// port), then goes on through the rules: no verdict.
	if types := strings.Join(exprsOf(c.rules[0]), " "); types != "Payload Bitwise Cmp Payload Payload Dynset Immediate Dynset" {
		t.Fatalf("first rule %s, want the SYN's flags, the flow key and two deletes", types)
	}
	for _, e := range c.rules[0] {
		if ds, ok := e.(*expr.Dynset); ok && ds.Operation != dynsetOpDelete {
			t.Errorf("the SYN rule updates @%s; it must delete the old entries", ds.SetName)
		}
	}
	for i, r := range c.rules[1 : len(c.rules)-1] {
		i++
		types := exprsOf(r)
		if n := len(types); n < 3 || types[n-2] != "Dup" || types[n-1] != "Verdict" {
			t.Errorf("rule %d does not end in dup + drop: %v", i, types)
		}
		wroteSrc := false
		for _, e := range r {
			if p, ok := e.(*expr.Payload); ok && p.OperationType == expr.PayloadWrite && p.Offset == 6 {
				wroteSrc = true
			}
			if _, ok := e.(*expr.Numgen); ok {
				t.Errorf("rule %d draws per packet (numgen): one TCP flow would spray over servers", i)
			}
			if h, ok := e.(*expr.Hash); ok && h.Length != 8 {
				t.Errorf("weighted DR hashes %d bytes, want the flow (saddr . sport, 8)", h.Length)
			}
		}
		if !wroteSrc {
			t.Errorf("rule %d does not rewrite the source MAC: %v", i, types)
		}
	}
	var picks []string
	for _, r := range c.rules {
		if types := strings.Join(exprsOf(r), " "); strings.Contains(types, "Hash") {
			picks = append(picks, types)
		}
	}
	if len(picks) != 2 {
		t.Fatalf("%d scheduling rules, want 2 (with flow updates, and without for a full flow map)", len(picks))
	}
	for _, p := range picks {
		if !strings.Contains(p, "Hash Lookup") {
			t.Errorf("scheduling rule %s lacks hash → lookup", p)
		}
	}
	if !strings.Contains(picks[0], "Dynset") || strings.Contains(picks[1], "Dynset") {
		t.Errorf("the fallback must follow the rule that remembers the flow: %q", picks)
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
