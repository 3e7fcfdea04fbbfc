package l4fwd

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
)

// Kernel receives desired states. NFT is the real one; tests of the
// daemon's timing use a recording fake.
type Kernel interface {
	// Apply makes the kernel serve d, all or nothing, and says what it
	// changed. On error the previous ruleset stays in force.
	Apply(d *Desired) (changes []string, err error)
	// Counters reads each real server's counters, indexed like d's
	// services and their real servers.
	Counters(d *Desired) ([][]Counters, error)
	// ForgetFlows deletes the DR flows that d's service svc sends to its
	// real server real, and says how many went.
	ForgetFlows(d *Desired, svc, real int) (int, error)
	// Remove deletes everything l4fwd put in the kernel.
	Remove() error
}

// Counters are one real server's totals, kept by the kernel: packets and
// bytes clients sent it, and connections (DR: flows) scheduled to it.
type Counters struct {
	Packets, Bytes, NewConns uint64
}

// NFT programs nftables over netlink. It remembers the ruleset of its last
// successful commit and sends only the difference.
type NFT struct {
	conn    *nftables.Conn
	table   string   // the tables' name as last committed
	applied *ruleset // nil until the first commit succeeds
}

// NewNFT connects to nftables; opts may place it in another network
// namespace (nftables.WithNetNSFd).
func NewNFT(opts ...nftables.ConnOption) (*NFT, error) {
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	return &NFT{conn: c}, nil
}

// Apply commits the changes from the last committed ruleset to d's in one
// netlink batch. The first Apply replaces any table of the same name (a
// stale one from a run that did not clean up).
func (k *NFT) Apply(d *Desired) ([]string, error) {
	next := buildRuleset(d)
	old := k.applied
	if k.table != "" && k.table != d.Table {
		// Renamed: drop the old tables in the same transaction.
		if err := send(k.conn, k.table, plan(old, &ruleset{})); err != nil {
			return nil, err
		}
		old = nil
	}
	ops := plan(old, next)
	if err := send(k.conn, d.Table, ops); err != nil {
		return nil, err
	}
	if err := k.conn.Flush(); err != nil {
		return nil, fmt.Errorf("commit nftables ruleset (%d commands; the previous ruleset stays in force): %w", len(ops), err)
	}
	k.applied, k.table = next, d.Table
	changes := make([]string, len(ops))
	for i, o := range ops {
		changes[i] = o.String()
	}
	return changes, nil
}

// Counters reads the per-server counter sets ("<svc>-traffic", "<svc>-new").
//
// Equivalent to: nft list set ip l4fwd s1-traffic
func (k *NFT) Counters(d *Desired) ([][]Counters, error) {
	out := make([][]Counters, len(d.Services))
	for i, s := range d.Services {
		out[i] = make([]Counters, len(s.Reals))
		fam := nftables.TableFamilyIPv4
		if s.Mode == DR {
			fam = nftables.TableFamilyNetdev
		}
		t := &nftables.Table{Name: d.Table, Family: fam}
		index := map[string]int{}
		for j, r := range s.Reals {
			if s.Mode == DR {
				index[string(r.MAC)] = j
			} else {
				index[string(keyMark(r.Mark))] = j
			}
		}
		for _, suffix := range []string{"-traffic", "-new"} {
			elems, err := k.conn.GetSetElements(&nftables.Set{Table: t, Name: svcName(s) + suffix})
			if err != nil {
				return nil, fmt.Errorf("read counters of service %s: %w", s.Name, err)
			}
			for _, e := range elems {
				j, ok := index[string(e.Key)]
				if !ok || e.Counter == nil {
					continue
				}
				if suffix == "-new" {
					out[i][j].NewConns = e.Counter.Packets
				} else {
					out[i][j].Packets, out[i][j].Bytes = e.Counter.Packets, e.Counter.Bytes
				}
			}
		}
	}
	return out, nil
}

// ForgetFlows deletes the flow-map entries ("<svc>-flows") that hold the
// real server's MAC, so each of those flows' next packet is scheduled
// anew among the eligible servers. Entries added while it reads the map
// stay: they were scheduled after the server left the scheduler. A flow
// that times out between the read and the delete fails the whole batch
// (the kernel has no such element), so it reads and tries again.
//
// Equivalent to: nft list map netdev l4fwd d1-flows, then
// nft delete element netdev l4fwd d1-flows { ... } for each entry to MAC
func (k *NFT) ForgetFlows(d *Desired, svc, real int) (int, error) {
	s := d.Services[svc]
	mac := s.Reals[real].MAC
	if s.Mode != DR || mac == nil {
		return 0, nil
	}
	set := &nftables.Set{Table: &nftables.Table{Name: d.Table, Family: nftables.TableFamilyNetdev},
		Name: svcName(s) + "-flows", IsMap: true, KeyType: typeAddrPort, DataType: nftables.TypeEtherAddr}
	var err error
	for range 3 {
		var elems []nftables.SetElement
		if elems, err = k.conn.GetSetElements(set); err != nil {
			return 0, fmt.Errorf("read flows of service %s: %w", s.Name, err)
		}
		var gone []nftables.SetElement
		for _, e := range elems {
			if slices.Equal(e.Val, mac) {
				gone = append(gone, nftables.SetElement{Key: e.Key})
			}
		}
		if len(gone) == 0 {
			return 0, nil
		}
		if err = k.conn.SetDeleteElements(set, gone); err == nil {
			if err = k.conn.Flush(); err == nil {
				return len(gone), nil
			}
		}
	}
	return 0, fmt.Errorf("delete flows of service %s: %w", s.Name, err)
}

// Remove deletes both of l4fwd's tables, if present.
//
// Equivalent to: nft delete table ip l4fwd; nft delete table netdev l4fwd
func (k *NFT) Remove() error {
	if k.table == "" {
		return nil
	}
	if err := send(k.conn, k.table, plan(nil, &ruleset{})); err != nil {
		return err
	}
	if err := k.conn.Flush(); err != nil {
		return fmt.Errorf("remove nftables tables %s: %w", k.table, err)
	}
	k.applied, k.table = nil, ""
	return nil
}
