package l4fwd_test

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftIn opens an nftables connection inside a named namespace: the tests
// read the kernel by netlink, never by parsing `nft list`.
func nftIn(t *testing.T, ns string) *nftables.Conn {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tableExists reports whether ns has a table of that family and name.
func tableExists(t *testing.T, c *nftables.Conn, fam nftables.TableFamily, name string) bool {
	t.Helper()
	tables, err := c.ListTablesOfFamily(fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}

// setLen counts the elements of a set of l4fwd's table, -1 if it cannot
// be read.
func setLen(c *nftables.Conn, fam nftables.TableFamily, set string) int {
	elems, err := c.GetSetElements(&nftables.Set{Table: &nftables.Table{Name: "l4fwd", Family: fam}, Name: set})
	if err != nil {
		return -1
	}
	return len(elems)
}

// probe is a table of the test's own with counting rules, to see what
// passes through the load balancer.
type probe struct {
	c     *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain
}

// matchAddr is "ip saddr|daddr & MASK == NET": [ payload load 4b @ network
// header + off => reg 1 ] [ bitwise ] [ cmp eq ].
func matchAddr(offset uint32, p netip.Prefix) []expr.Any {
	a := p.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
	}
}

// newProbe adds the probe chain: in the netdev family on an ingress
// device, or in the ip family on the forward hook.
func newProbe(t *testing.T, ns string, fam nftables.TableFamily, device string) *probe {
	t.Helper()
	c := nftIn(t, ns)
	tb := c.AddTable(&nftables.Table{Name: "l4t_probe", Family: fam})
	ch := &nftables.Chain{Name: "count", Table: tb, Type: nftables.ChainTypeFilter, Priority: nftables.ChainPriorityRef(-500)}
	if fam == nftables.TableFamilyNetdev {
		ch.Hooknum, ch.Device = nftables.ChainHookIngress, device
	} else {
		ch.Hooknum = nftables.ChainHookForward
	}
	c.AddChain(ch)
	if err := c.Flush(); err != nil {
		t.Fatalf("probe table: %v", err)
	}
	return &probe{c: c, table: tb, chain: ch}
}

// count adds a rule counting IPv4 packets whose source (src) or
// destination address is in p.
func (pr *probe) count(t *testing.T, src bool, p netip.Prefix) {
	t.Helper()
	off := uint32(16)
	if src {
		off = 12
	}
	var e []expr.Any
	if pr.table.Family == nftables.TableFamilyNetdev {
		e = append(e, &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)})
	}
	e = append(append(e, matchAddr(off, p)...), &expr.Counter{})
	pr.c.AddRule(&nftables.Rule{Table: pr.table, Chain: pr.chain, Exprs: e})
	if err := pr.c.Flush(); err != nil {
		t.Fatal(err)
	}
}

// packets returns each counting rule's packets, in the order added.
func (pr *probe) packets(t *testing.T) []uint64 {
	t.Helper()
	rules, err := pr.c.GetRules(pr.table, pr.chain)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				out = append(out, c.Packets)
			}
		}
	}
	return out
}

// newConnCounters reads a NAT service's per-server counter set: element
// keys are ct marks (host order), whose low half numbers the server from 1.
func newConnCounters(t *testing.T, c *nftables.Conn, fam nftables.TableFamily, set string) []uint64 {
	t.Helper()
	elems, err := c.GetSetElements(&nftables.Set{Table: &nftables.Table{Name: "l4fwd", Family: fam}, Name: set})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint64, len(elems))
	for _, e := range elems {
		i := int(binaryutil.NativeEndian.Uint32(e.Key)&0xffff) - 1
		if i >= 0 && i < len(out) && e.Counter != nil {
			out[i] = e.Counter.Packets
		}
	}
	return out
}

// members lists the servers (numbered from 1) in a NAT service's set keyed
// by ct mark, such as s1-ok, in ascending order.
func members(c *nftables.Conn, set string) []int {
	elems, err := c.GetSetElements(&nftables.Set{Table: &nftables.Table{Name: "l4fwd", Family: nftables.TableFamilyIPv4}, Name: set})
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range elems {
		out = append(out, int(binaryutil.NativeEndian.Uint32(e.Key)&0xffff))
	}
	slices.Sort(out)
	return out
}
