package l4fwd

import (
	"fmt"
	"reflect"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// op is one command of an nftables transaction. plan returns them so that
// tests can read what a change touches; send writes them to a connection.
type op struct {
	kind   opKind
	family nftables.TableFamily
	set    *set
	chain  *chain
	elems  []nftables.SetElement
	rule   []expr.Any
}

type opKind uint8

const (
	opAddTable opKind = iota
	opDelTable
	opAddChain
	opFlushChain
	opDelChain
	opAddSet
	opDelSet
	opAddElems
	opDelElems
	opAddRule
)

var opWords = [...]string{"add table", "delete table", "add chain", "flush chain", "delete chain",
	"add set", "delete set", "add element", "delete element", "add rule"}

func familyWord(f nftables.TableFamily) string {
	if f == nftables.TableFamilyNetdev {
		return "netdev"
	}
	return "ip"
}

// String reads like the nft command it stands for: "flush set ip s1-sched".
func (o op) String() string {
	s := opWords[o.kind] + " " + familyWord(o.family)
	switch {
	case o.set != nil:
		s += " " + o.set.def.Name
	case o.chain != nil:
		s += " " + o.chain.def.Name
	}
	if o.kind == opAddElems || o.kind == opDelElems {
		s += fmt.Sprintf(" (%d)", len(o.elems))
	}
	return s
}

// plan returns the commands that turn the kernel from old (nil: unknown,
// as at start) into next. From unknown, each family's table is created
// empty and deleted first, inside the same transaction, which replaces a
// stale table left by an earlier run. Otherwise only what differs is
// touched: elements of sets whose definitions stand, chains whose rules
// changed, sets whose definitions changed.
func plan(old, next *ruleset) []op {
	var ops []op
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyNetdev} {
		o, n := old.table(fam), next.table(fam)
		switch {
		case old == nil:
			ops = append(ops, op{kind: opAddTable, family: fam}, op{kind: opDelTable, family: fam})
			if n != nil {
				ops = append(ops, create(n)...)
			}
		case o != nil && n == nil:
			ops = append(ops, op{kind: opDelTable, family: fam})
		case o == nil && n != nil:
			ops = append(ops, create(n)...)
		case o != nil && n != nil:
			ops = append(ops, diff(o, n)...)
		}
	}
	return ops
}

func (rs *ruleset) table(f nftables.TableFamily) *table {
	if rs == nil {
		return nil
	}
	for _, t := range rs.tables {
		if t.family == f {
			return t
		}
	}
	return nil
}

// create makes a whole table: chains first, as map elements may jump to
// them, then sets with their elements, then the rules that use the sets.
func create(t *table) []op {
	ops := []op{{kind: opAddTable, family: t.family}}
	for _, c := range t.chains {
		ops = append(ops, op{kind: opAddChain, family: t.family, chain: c})
	}
	for _, s := range t.sets {
		ops = append(ops, op{kind: opAddSet, family: t.family, set: s, elems: managed(s)})
	}
	for _, c := range t.chains {
		for _, r := range c.rules {
			ops = append(ops, op{kind: opAddRule, family: t.family, chain: c, rule: r})
		}
	}
	return ops
}

// managed returns the elements l4fwd writes: none for a dynamic set.
func managed(s *set) []nftables.SetElement {
	if s.def.Dynamic {
		return nil
	}
	return s.elems
}

// diff changes table o into n in an order the kernel accepts within one
// transaction: references go before what they point at (map elements
// before chains, rules before sets), creations come before the rules and
// elements that need them.
func diff(o, n *table) []op {
	fam := n.family
	var early, late []op

	// Sets: redefine those whose definition changed; else patch elements.
	redefined := map[string]bool{}
	for _, os := range o.sets {
		ns := n.set(os.def.Name)
		switch {
		case ns == nil || !sameSetDef(os.def, ns.def):
			redefined[os.def.Name] = true
		case os.def.Dynamic:
		default:
			gone, added := elementDiff(os.elems, ns.elems)
			if len(gone) > 0 {
				early = append(early, op{kind: opDelElems, family: fam, set: os, elems: gone})
			}
			if len(added) > 0 {
				late = append(late, op{kind: opAddElems, family: fam, set: ns, elems: added})
			}
		}
	}

	// Chains: rewrite those whose rules changed or that use a redefined
	// set; delete those gone.
	var flushes, deletes, adds, rules []op
	for _, oc := range o.chains {
		nc := n.chain(oc.def.Name)
		switch {
		case nc == nil || !sameChainDef(oc.def, nc.def):
			flushes = append(flushes, op{kind: opFlushChain, family: fam, chain: oc})
			deletes = append(deletes, op{kind: opDelChain, family: fam, chain: oc})
		case !reflect.DeepEqual(oc.rules, nc.rules) || usesAny(nc, redefined):
			flushes = append(flushes, op{kind: opFlushChain, family: fam, chain: oc})
			for _, r := range nc.rules {
				rules = append(rules, op{kind: opAddRule, family: fam, chain: nc, rule: r})
			}
		}
	}
	for _, nc := range n.chains {
		if oc := o.chain(nc.def.Name); oc == nil || !sameChainDef(oc.def, nc.def) {
			adds = append(adds, op{kind: opAddChain, family: fam, chain: nc})
			for _, r := range nc.rules {
				rules = append(rules, op{kind: opAddRule, family: fam, chain: nc, rule: r})
			}
		}
	}
	var setDels, setAdds []op
	for _, os := range o.sets {
		if redefined[os.def.Name] {
			setDels = append(setDels, op{kind: opDelSet, family: fam, set: os})
		}
	}
	for _, ns := range n.sets {
		if os := o.set(ns.def.Name); os == nil || redefined[ns.def.Name] {
			setAdds = append(setAdds, op{kind: opAddSet, family: fam, set: ns, elems: managed(ns)})
		}
	}
	ops := append(early, flushes...)
	ops = append(ops, setDels...)
	ops = append(ops, deletes...)
	ops = append(ops, adds...)
	ops = append(ops, setAdds...)
	ops = append(ops, rules...)
	return append(ops, late...)
}

// elementDiff returns the elements of old that next lacks or maps
// elsewhere, and the elements of next that old lacks or maps elsewhere.
func elementDiff(old, next []nftables.SetElement) (gone, added []nftables.SetElement) {
	value := func(e nftables.SetElement) string {
		if e.VerdictData != nil {
			return fmt.Sprint(e.VerdictData.Kind, e.VerdictData.Chain)
		}
		return string(e.Val)
	}
	had := map[string]string{}
	for _, e := range old {
		had[string(e.Key)] = value(e)
	}
	has := map[string]string{}
	for _, e := range next {
		has[string(e.Key)] = value(e)
		if v, ok := had[string(e.Key)]; !ok || v != value(e) {
			added = append(added, e)
		}
	}
	for _, e := range old {
		if v, ok := has[string(e.Key)]; !ok || v != value(e) {
			gone = append(gone, e)
		}
	}
	return gone, added
}

func sameSetDef(a, b nftables.Set) bool {
	return a.Name == b.Name && a.IsMap == b.IsMap && a.Interval == b.Interval &&
		a.HasTimeout == b.HasTimeout && a.Timeout == b.Timeout && a.Dynamic == b.Dynamic &&
		a.Concatenation == b.Concatenation && a.Counter == b.Counter && a.Size == b.Size &&
		a.KeyType.Name == b.KeyType.Name && a.DataType.Name == b.DataType.Name
}

func sameChainDef(a, b nftables.Chain) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Device == b.Device &&
		reflect.DeepEqual(a.Hooknum, b.Hooknum) && reflect.DeepEqual(a.Priority, b.Priority)
}

// usesAny reports whether a rule of c names one of the sets.
func usesAny(c *chain, sets map[string]bool) bool {
	for _, r := range c.rules {
		for _, e := range r {
			switch e := e.(type) {
			case *expr.Lookup:
				if sets[e.SetName] {
					return true
				}
			case *expr.Dynset:
				if sets[e.SetName] {
					return true
				}
			}
		}
	}
	return false
}

// send writes ops to c for the table called name. Nothing reaches the
// kernel before c.Flush, which commits them as one transaction.
func send(c *nftables.Conn, name string, ops []op) error {
	for _, o := range ops {
		t := &nftables.Table{Name: name, Family: o.family}
		switch o.kind {
		case opAddTable:
			c.AddTable(t)
		case opDelTable:
			c.DelTable(t)
		case opAddChain:
			def := o.chain.def
			def.Table = t
			if def.Hooknum != nil {
				accept := nftables.ChainPolicyAccept
				def.Policy = &accept
			}
			c.AddChain(&def)
		case opFlushChain:
			c.FlushChain(&nftables.Chain{Name: o.chain.def.Name, Table: t})
		case opDelChain:
			c.DelChain(&nftables.Chain{Name: o.chain.def.Name, Table: t})
		case opAddSet:
			def := o.set.def // AddSet writes an ID into its argument
			def.Table = t
			if err := c.AddSet(&def, o.elems); err != nil {
				return fmt.Errorf("set %s: %w", def.Name, err)
			}
		case opDelSet:
			c.DelSet(&nftables.Set{Name: o.set.def.Name, Table: t})
		case opAddElems, opDelElems:
			def := o.set.def
			def.Table = t
			var err error
			if o.kind == opAddElems {
				err = c.SetAddElements(&def, o.elems)
			} else {
				err = c.SetDeleteElements(&def, o.elems)
			}
			if err != nil {
				return fmt.Errorf("set %s: %w", def.Name, err)
			}
		case opAddRule:
			c.AddRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: o.chain.def.Name, Table: t}, Exprs: o.rule})
		}
	}
	return nil
}
