package l4fwd

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ruleset is the whole kernel state l4fwd owns, as values that can be
// compared: a table in the ip family for NAT services and one in the
// netdev family for DR services, both under the configured name.
type ruleset struct {
	tables []*table
}

type table struct {
	family nftables.TableFamily
	chains []*chain
	sets   []*set
}

// set is a named set or map. Elements of dynamic sets belong to the packet
// path (persistence, flows, per-client counts): l4fwd defines those sets
// but never writes or compares their elements.
type set struct {
	def   nftables.Set // Table and ID are filled in when it is sent
	elems []nftables.SetElement
}

type chain struct {
	def   nftables.Chain // Table is filled in when it is sent
	rules [][]expr.Any
}

func (t *table) set(name string) *set {
	for _, s := range t.sets {
		if s.def.Name == name {
			return s
		}
	}
	return nil
}

func (t *table) chain(name string) *chain {
	for _, c := range t.chains {
		if c.def.Name == name {
			return c
		}
	}
	return nil
}

func (t *table) addSet(def nftables.Set, elems ...nftables.SetElement) *set {
	s := &set{def: def, elems: elems}
	t.sets = append(t.sets, s)
	return s
}

func (t *table) addChain(def nftables.Chain, rules ...[]expr.Any) *chain {
	c := &chain{def: def, rules: rules}
	t.chains = append(t.chains, c)
	return c
}

func (t *table) add(s *set, e nftables.SetElement) { s.elems = append(s.elems, e) }

// Key and data types of l4fwd's sets.
var (
	typeDispatchPort = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	typeDispatchAll  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto)
	typeAddrPort     = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
)

// Set and chain names. Per-service objects are named by the service's ID
// ("s3-sched" for NAT, "d3-sched" for DR), which stays the same across
// reloads while the service keeps its name.
func svcName(s *ServiceState) string {
	if s.Mode == DR {
		return fmt.Sprintf("d%d", s.ID)
	}
	return fmt.Sprintf("s%d", s.ID)
}

// DR flow maps: how many flows they hold, and how long a flow is kept
// after its connection closed (FIN or RST seen).
const (
	flowMapSize    = 262144
	closingTimeout = 10 * time.Second
)

func limitChain(mark uint32) string { return fmt.Sprintf("r%x", mark) }

// seed keeps a service's hash the same across restarts and rule rewrites,
// so source hashing and DR flows survive them; without one the kernel
// draws a random seed per rule.
func seed(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32() | 1
}

// buildRuleset turns the desired state into the ruleset that serves it.
func buildRuleset(d *Desired) *ruleset {
	var nat, dr []*ServiceState
	for _, s := range d.Services {
		if s.Mode == DR {
			dr = append(dr, s)
		} else {
			nat = append(nat, s)
		}
	}
	rs := &ruleset{}
	if len(nat) > 0 {
		rs.tables = append(rs.tables, buildNAT(nat))
	}
	if len(dr) > 0 {
		rs.tables = append(rs.tables, buildDR(dr))
	}
	return rs
}

// buildNAT makes the ip table:
//
//	table ip l4fwd {
//		map nat_port { typeof ip daddr . meta l4proto . th dport : verdict }  # VIP → jump s<ID>
//		map nat_all  { typeof ip daddr . meta l4proto : verdict }             # VIPs of "port all"
//		map dnat_port { type mark : ipv4_addr . inet_service }
//		map dnat_addr { type mark : ipv4_addr }
//		chain prerouting { type filter hook prerouting priority mangle
//			ip daddr . meta l4proto . th dport vmap @nat_port
//			ip daddr . meta l4proto vmap @nat_all }
//		chain nat_prerouting { type nat hook prerouting priority dstnat
//			dnat ip to ct mark map @dnat_port
//			dnat ip to ct mark map @dnat_addr }
//		... one chain pair per service (natService), SNAT and synproxy chains when used
//	}
//
// Scheduling sets the connection's ct mark in mangle; the nat chain, which
// sees only a connection's first packet, turns the mark into an address.
// Draining is then only "leave the scheduler": conntrack keeps existing
// connections on their server.
func buildNAT(svcs []*ServiceState) *table {
	t := &table{family: nftables.TableFamilyIPv4}
	t.addChain(nftables.Chain{Name: "prerouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle},
		dispatchRules(svcs, ctOriginal(), "nat_port", "nat_all")...)
	t.addChain(nftables.Chain{Name: "nat_prerouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest},
		dnatRules()...)
	natPort := t.addSet(nftables.Set{Name: "nat_port", IsMap: true, Concatenation: true,
		KeyType: typeDispatchPort, DataType: nftables.TypeVerdict})
	natAll := t.addSet(nftables.Set{Name: "nat_all", IsMap: true, Concatenation: true,
		KeyType: typeDispatchAll, DataType: nftables.TypeVerdict})
	dnatPort := t.addSet(nftables.Set{Name: "dnat_port", IsMap: true,
		KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: typeAddrPort})
	dnatAddr := t.addSet(nftables.Set{Name: "dnat_addr", IsMap: true,
		KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeIPAddr})
	var snat, synproxy *set
	for _, s := range svcs {
		name := svcName(s)
		key := keyDispatch(s.VIP, s.Proto, s.Port)
		to := &expr.Verdict{Kind: expr.VerdictGoto, Chain: name}
		if s.Port != 0 {
			t.add(natPort, nftables.SetElement{Key: key, VerdictData: to})
		} else {
			t.add(natAll, nftables.SetElement{Key: key, VerdictData: to})
		}
		for _, r := range s.Reals {
			port := r.Port
			if port == 0 {
				port = s.Port
			}
			if port == 0 {
				t.add(dnatAddr, nftables.SetElement{Key: keyMark(r.Mark), Val: keyAddr(r.Addr)})
			} else {
				val := append(keyAddr(r.Addr), keyPadded(keyPort(port))...)
				t.add(dnatPort, nftables.SetElement{Key: keyMark(r.Mark), Val: val})
			}
		}
		natService(t, s)
		if s.SNAT != "" {
			if snat == nil {
				snat = t.addSet(nftables.Set{Name: "snat", IsMap: true,
					KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict})
				t.addChain(nftables.Chain{Name: "nat_postrouting", Type: nftables.ChainTypeNAT,
					Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource},
					// ct mark & 0xffff0000 vmap @snat
					[]expr.Any{loadCtMark(reg1), &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
						Mask: keyMark(0xffff0000), Xor: make([]byte, 4)}, vmap(reg1, "snat")})
			}
			t.add(snat, nftables.SetElement{Key: keyMark(markOf(s.ID, 0)),
				VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: name + "-snat"}})
			t.addChain(nftables.Chain{Name: name + "-snat"}, snatRule(s.SNAT))
		}
		if s.SynProxy {
			if synproxy == nil {
				synproxy = synproxyChains(t)
			}
			t.add(synproxy, nftables.SetElement{Key: key})
		}
	}
	return t
}

// dispatchRules send a packet to its service's chain: "ip daddr . meta
// l4proto . th dport vmap @port" and, only when some service takes every
// port, "ip daddr . meta l4proto vmap @all" (a lookup every packet would
// pay for nothing). The maps hold goto verdicts: the service chain has
// the last word, so nothing is looked up after it.
func dispatchRules(svcs []*ServiceState, prefix []expr.Any, port, all string) [][]expr.Any {
	var withPort, allPorts bool
	for _, s := range svcs {
		withPort = withPort || s.Port != 0
		allPorts = allPorts || s.Port == 0
	}
	var rules [][]expr.Any
	if withPort {
		rules = append(rules, append(append(append([]expr.Any{}, prefix...), dispatchKey(true)...), vmap(reg1, port)))
	}
	if allPorts {
		rules = append(rules, append(append(append([]expr.Any{}, prefix...), dispatchKey(false)...), vmap(reg1, all)))
	}
	return rules
}

// ctOriginal is "ct direction original": [ ct load direction => reg 1 ]
// [ cmp eq reg 1 0x00 ]. Replies from the real servers are half of a NAT
// balancer's packets; this sends them past the dispatch lookup.
func ctOriginal() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL,
	}
}

// dnatRules are "dnat ip to ct mark map @dnat_port" and "... @dnat_addr":
// [ ct load mark => reg 1 ] [ lookup reg 1 set dnat_port dreg 1 ]
// [ nat dnat ip addr_min reg 1 proto_min reg 9 ].
func dnatRules() [][]expr.Any {
	return [][]expr.Any{
		{loadCtMark(reg1), mapTo(reg1, "dnat_port", reg1),
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1,
				RegProtoMin: sub(reg1, 1), Specified: true}},
		{loadCtMark(reg1), mapTo(reg1, "dnat_addr", reg1),
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1}},
	}
}

// snatRule is "masquerade" or "snat ip to ADDR".
func snatRule(to string) []expr.Any {
	if to == "masquerade" {
		return []expr.Any{&expr.Masq{}}
	}
	a := netip.MustParseAddr(to) // ParseConfig checked it
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: keyAddr(a)},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1},
	}
}

// natService adds one NAT service's sets and chains:
//
//	map s3-sched { typeof numgen inc mod 1000 : ct mark }  # 1000 values dealt by weight, interleaved
//	set s3-ok { type mark }              # servers that take new connections
//	set s3-traffic { type mark; counter } # packets and bytes per server
//	set s3-new { type mark; counter }    # new connections per server
//	map s3-persist { type ipv4_addr : mark; flags dynamic,timeout; timeout T }
//	chain s3 {
//		ct state new jump s3-new
//		ct mark @s3-ok update @s3-persist { ip saddr & MASK : ct mark }  # only servers still taking sessions
//		ct mark @s3-traffic
//	}
//	chain s3-new {
//		add @s3-clients { ip saddr ct count over N } counter drop
//		ct mark set ip saddr & MASK map @s3-persist
//		ct mark != @s3-ok ct mark set numgen inc mod 1000 map @s3-sched  # servers in turn
//		ct mark != @s3-ok counter drop                                  # no server
//		ct mark vmap @s3-limits                                         # max_conns
//		ct mark @s3-new
//	}
func natService(t *table, s *ServiceState) {
	name := svcName(s)
	sched := t.addSet(nftables.Set{Name: name + "-sched", IsMap: true,
		KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeMark})
	ok := t.addSet(nftables.Set{Name: name + "-ok", KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian})
	traffic := t.addSet(nftables.Set{Name: name + "-traffic", KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, Counter: true})
	newConns := t.addSet(nftables.Set{Name: name + "-new", KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, Counter: true})
	for v, real := range s.Slots {
		t.add(sched, nftables.SetElement{Key: keySlot(v), Val: keyMark(s.Reals[real].Mark)})
	}
	var limits *set
	for _, r := range s.Reals {
		t.add(traffic, nftables.SetElement{Key: keyMark(r.Mark)})
		t.add(newConns, nftables.SetElement{Key: keyMark(r.Mark)})
		if r.Eligible {
			t.add(ok, nftables.SetElement{Key: keyMark(r.Mark)})
		}
		if r.MaxConns > 0 {
			if limits == nil {
				limits = t.addSet(nftables.Set{Name: name + "-limits", IsMap: true,
					KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict})
			}
			t.add(limits, nftables.SetElement{Key: keyMark(r.Mark),
				VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: limitChain(r.Mark)}})
			// ct count over MAX counter drop: connlimit keeps the list of
			// this server's connections, and forgets those conntrack forgets.
			t.addChain(nftables.Chain{Name: limitChain(r.Mark)}, []expr.Any{
				&expr.Connlimit{Count: uint32(r.MaxConns), Flags: expr.NFT_CONNLIMIT_F_INV},
				counter(), verdict(expr.VerdictDrop)})
		}
	}
	main := [][]expr.Any{append(ctStateIn(expr.CtStateBitNEW), jump(name+"-new"))}
	var fresh [][]expr.Any
	if s.ClientLimit > 0 {
		t.addSet(nftables.Set{Name: name + "-clients", KeyType: nftables.TypeIPAddr, Dynamic: true, Size: 65535})
		fresh = append(fresh, []expr.Any{loadIPSaddr(reg1),
			&expr.Dynset{SetName: name + "-clients", SrcRegKey: reg1, Operation: unix.NFT_DYNSET_OP_ADD,
				Exprs: []expr.Any{&expr.Connlimit{Count: uint32(s.ClientLimit), Flags: expr.NFT_CONNLIMIT_F_INV}}},
			counter(), verdict(expr.VerdictDrop)})
	}
	var pick []expr.Any
	if s.Persist > 0 {
		t.addSet(nftables.Set{Name: name + "-persist", IsMap: true, KeyType: nftables.TypeIPAddr,
			DataType: nftables.TypeMark, Dynamic: true, HasTimeout: true, Timeout: s.Persist, Size: 65535})
		main = append(main, []expr.Any{loadCtMark(reg1), inSet(reg1, ok.def.Name),
			loadIPSaddr(reg2), maskPrefix(reg2, s.PersistPrefix),
			update(name+"-persist", reg2, reg1, s.Persist)})
		fresh = append(fresh, []expr.Any{loadIPSaddr(reg1), maskPrefix(reg1, s.PersistPrefix),
			mapTo(reg1, name+"-persist", reg1), setCtMark(reg1)})
		pick = []expr.Any{loadCtMark(reg1), notInSet(reg1, ok.def.Name)}
	}
	if s.Scheduler == SourceHash {
		pick = append(pick, loadIPSaddr(reg1), jhash(reg1, reg1, 4, seed(s.Name)))
	} else {
		pick = append(pick, numgen(reg1))
	}
	pick = append(pick, mapTo(reg1, sched.def.Name, reg1), setCtMark(reg1))
	fresh = append(fresh, pick,
		[]expr.Any{loadCtMark(reg1), notInSet(reg1, ok.def.Name), counter(), verdict(expr.VerdictDrop)})
	if limits != nil {
		fresh = append(fresh, []expr.Any{loadCtMark(reg1), vmap(reg1, limits.def.Name)})
	}
	fresh = append(fresh, []expr.Any{loadCtMark(reg1), inSet(reg1, newConns.def.Name)})
	main = append(main, []expr.Any{loadCtMark(reg1), inSet(reg1, traffic.def.Name)})
	t.addChain(nftables.Chain{Name: name}, main...)
	t.addChain(nftables.Chain{Name: name + "-new"}, fresh...)
}

// synproxyChains adds the "under attack" chains, after the prototype:
//
//	chain raw_prerouting { type filter hook prerouting priority raw
//		ip daddr . meta l4proto . th dport @synproxy tcp flags & (fin|syn|rst|ack) == syn notrack }
//	chain synproxy_input { type filter hook input priority filter
//		ip daddr . meta l4proto . th dport @synproxy ct state invalid,untracked synproxy mss 1460
//		ip daddr . meta l4proto . th dport @synproxy ct state invalid drop }
//	chain output { type filter hook output priority mangle; ... vmap @nat_port }
//	chain nat_output { type nat hook output priority -100; dnat as nat_prerouting }
//
// The SYN that synproxy sends the real server once the client has proved
// itself is generated locally, so scheduling and DNAT must also run on
// output.
//
// No timestamp option (and so, in SYN cookies, no window scaling or SACK
// either): with it, the ACK synproxy sends to complete the real server's
// handshake carries a TSecr shifted by the client's timestamp offset, which
// current kernels refuse in SYN_RECV (TcpExtTSEcrRejected on the server).
// The server then waits for its SYN-ACK retransmit, about a second, on
// most connections: the prototype's "stalls". In bench/l4, new
// connections per second through synproxy went from 0.04× plain NAT's to
// 0.95× without the option.
func synproxyChains(t *table) *set {
	s := t.addSet(nftables.Set{Name: "synproxy", Concatenation: true, KeyType: typeDispatchPort})
	match := append(dispatchKey(true), inSet(reg1, "synproxy"))
	bareSYN := tcpFlags(reg1, tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpEq, tcpSYN)
	t.addChain(nftables.Chain{Name: "raw_prerouting", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw},
		append(append(append([]expr.Any{}, match...), bareSYN...), &expr.Notrack{}))
	t.addChain(nftables.Chain{Name: "synproxy_input", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter},
		append(append(append([]expr.Any{}, match...), ctStateIn(expr.CtStateBitINVALID|expr.CtStateBitUNTRACKED)...),
			&expr.SynProxy{Mss: 1460, MssValueSet: true}),
		append(append(append([]expr.Any{}, match...), ctStateIn(expr.CtStateBitINVALID)...), verdict(expr.VerdictDrop)))
	t.addChain(nftables.Chain{Name: "output", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle},
		append(dispatchKey(true), vmap(reg1, "nat_port")))
	t.addChain(nftables.Chain{Name: "nat_output", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest},
		dnatRules()...)
	return s
}

// buildDR makes the netdev table: an ingress chain on each device that
// carries a DR service, and per service a chain that rewrites the MAC
// addresses and sends the frame back out of the same device. netdev
// ingress runs before conntrack, so a flow map keeps each flow on its
// server (and lets draining finish flows), and the scheduler hashes the
// flow rather than drawing per packet, which would spray one TCP
// connection over every server.
//
//	table netdev l4fwd {
//		chain ingress-eth0 { type filter hook ingress device "eth0" priority filter
//			meta protocol ip ip daddr . meta l4proto . th dport vmap @dr_port
//			meta protocol ip ip daddr . meta l4proto vmap @dr_all }
//		chain d3 {  (drService) }
//	}
func buildDR(svcs []*ServiceState) *table {
	t := &table{family: nftables.TableFamilyNetdev}
	drPort := t.addSet(nftables.Set{Name: "dr_port", IsMap: true, Concatenation: true,
		KeyType: typeDispatchPort, DataType: nftables.TypeVerdict})
	drAll := t.addSet(nftables.Set{Name: "dr_all", IsMap: true, Concatenation: true,
		KeyType: typeDispatchAll, DataType: nftables.TypeVerdict})
	devices := map[string]bool{}
	for _, s := range svcs {
		if !devices[s.Interface] {
			devices[s.Interface] = true
			t.addChain(nftables.Chain{Name: "ingress-" + s.Interface, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookIngress, Priority: nftables.ChainPriorityFilter, Device: s.Interface},
				dispatchRules(svcs, isIPv4(), "dr_port", "dr_all")...)
		}
		to := &expr.Verdict{Kind: expr.VerdictGoto, Chain: svcName(s)}
		key := keyDispatch(s.VIP, s.Proto, s.Port)
		if s.Port != 0 {
			t.add(drPort, nftables.SetElement{Key: key, VerdictData: to})
		} else {
			t.add(drAll, nftables.SetElement{Key: key, VerdictData: to})
		}
		drService(t, s)
	}
	return t
}

// drService adds one DR service's sets and chain:
//
//	map d3-flows { typeof ip saddr . th sport : ether daddr; flags dynamic,timeout; timeout 5m }  # updates: FLOW
//	map d3-persist { typeof ip saddr : ether daddr; flags dynamic,timeout; timeout T }
//	map d3-sched { typeof jhash ... mod 1000 : ether daddr }
//	set d3-closing { typeof ip saddr . th sport; flags dynamic,timeout; timeout 10s }  # tcp
//	set d3-ok, d3-traffic (counter), d3-new (counter) { type ether_addr }
//	chain d3 {
//		# tcp: a bare SYN forgets its flow's old entries and goes on to be scheduled
//		tcp flags & (fin|syn|rst|ack) == syn delete @d3-closing {...} delete @d3-flows {...}
//		# tcp: a closing flow is sent without refreshing it; a FIN or RST starts the close
//		ip saddr . th sport @d3-closing ether daddr set ip saddr . th sport map @d3-flows ... dup to DEV drop
//		tcp flags & (fin|rst) != 0 ... update @d3-closing {...} update @d3-flows { ... timeout 10s } ... drop
//		# a known flow keeps its server, drained or not
//		ether daddr set ip saddr . th sport map @d3-flows ether saddr set LBMAC
//			update @d3-flows {...} ether daddr @d3-traffic dup to DEV drop
//		# a returning client keeps its server while that server takes sessions
//		ip saddr & MASK map @d3-persist @d3-ok ... (commit)
//		# otherwise the flow's hash picks by weight
//		jhash ip saddr . th sport mod 1000 map @d3-sched ... (commit)
//		jhash ... (commit without the map updates: a full flow map)
//		counter drop    # no server
//	}
//
// where commit is: ether daddr set, ether saddr set LBMAC (else the
// bridge learns the client's MAC on the LB's port and replies come back
// here), update flows and persistence, count, dup to DEV, drop.
func drService(t *table, s *ServiceState) {
	name := svcName(s)
	// Every update names its timeout; the map's own is fixed, so a reload
	// that changes flow_timeout rewrites the rules but keeps the map, and
	// the flows it keeps on their servers.
	flows := t.addSet(nftables.Set{Name: name + "-flows", IsMap: true, Concatenation: true,
		KeyType: typeAddrPort, DataType: nftables.TypeEtherAddr, Dynamic: true,
		HasTimeout: true, Timeout: DefaultFlowTimeout, Size: flowMapSize})
	sched := t.addSet(nftables.Set{Name: name + "-sched", IsMap: true,
		KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeEtherAddr})
	ok := t.addSet(nftables.Set{Name: name + "-ok", KeyType: nftables.TypeEtherAddr})
	traffic := t.addSet(nftables.Set{Name: name + "-traffic", KeyType: nftables.TypeEtherAddr, Counter: true})
	newFlows := t.addSet(nftables.Set{Name: name + "-new", KeyType: nftables.TypeEtherAddr, Counter: true})
	for v, real := range s.Slots {
		t.add(sched, nftables.SetElement{Key: keySlot(v), Val: s.Reals[real].MAC})
	}
	for _, r := range s.Reals {
		if r.MAC == nil {
			continue // not resolved: not in any map, so not eligible either
		}
		t.add(traffic, nftables.SetElement{Key: r.MAC})
		t.add(newFlows, nftables.SetElement{Key: r.MAC})
		if r.Eligible {
			t.add(ok, nftables.SetElement{Key: r.MAC})
		}
	}
	lbMAC := &expr.Immediate{Register: reg4, Data: s.LBMAC}
	flowKey := []expr.Any{loadIPSaddr(reg1), loadSport(sub(reg1, 1))}
	send := []expr.Any{etherWrite(reg2, 0), lbMAC, etherWrite(reg4, 6)}
	out := append(dupToDevice(s.IfIndex, reg4), verdict(expr.VerdictDrop))
	rule := func(parts ...[]expr.Any) []expr.Any {
		var r []expr.Any
		for _, p := range parts {
			r = append(r, p...)
		}
		return r
	}
	known := []expr.Any{mapTo(reg1, flows.def.Name, reg2)}
	count := []expr.Any{inSet(reg2, traffic.def.Name)}

	var rules [][]expr.Any
	if s.Proto == "tcp" {
		// A closed connection's flow is kept only briefly, so connection
		// churn cannot fill the flow map: a FIN or RST puts the flow in
		// "closing" and cuts its timeout, and a closing flow's packets
		// no longer refresh it.
		closing := t.addSet(nftables.Set{Name: name + "-closing", Concatenation: true, KeyType: typeAddrPort,
			Dynamic: true, HasTimeout: true, Timeout: closingTimeout, Size: flowMapSize})
		rules = append(rules,
			// A bare SYN starts a new connection, even from a source port
			// that a closed one used seconds ago (clients reuse them):
			// forget that flow, so the SYN is scheduled now — a drained or
			// failed server gets no new connection — rather than sent
			// where the old one went. No verdict: the rules below go on.
			rule(tcpFlags(reg3, tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpEq, tcpSYN), flowKey, []expr.Any{
				remove(closing.def.Name, reg1, 0),
				&expr.Immediate{Register: reg2, Data: make([]byte, 6)}, remove(flows.def.Name, reg1, reg2)}),
			rule(flowKey, []expr.Any{inSet(reg1, closing.def.Name)}, known, send, count, out),
			rule(tcpFlags(reg3, tcpFIN|tcpRST, expr.CmpOpNeq, 0), flowKey, known, []expr.Any{
				update(closing.def.Name, reg1, 0, closingTimeout),
				update(flows.def.Name, reg1, reg2, closingTimeout)}, send, count, out))
	}
	rules = append(rules, rule(flowKey, known, []expr.Any{update(flows.def.Name, reg1, reg2, s.FlowTimeout)}, send, count, out))

	// commit sends a new flow: it expects the server's MAC in reg 2 and,
	// with persistence, the client's masked address in reg 3.
	remember := rule(flowKey, []expr.Any{update(flows.def.Name, reg1, reg2, s.FlowTimeout)})
	var persistKey []expr.Any
	if s.Persist > 0 {
		t.addSet(nftables.Set{Name: name + "-persist", IsMap: true, KeyType: nftables.TypeIPAddr,
			DataType: nftables.TypeEtherAddr, Dynamic: true, HasTimeout: true, Timeout: s.Persist, Size: 65535})
		persistKey = []expr.Any{loadIPSaddr(reg3), maskPrefix(reg3, s.PersistPrefix)}
		remember = append(remember, update(name+"-persist", reg3, reg2, s.Persist))
	}
	counted := append(append([]expr.Any{}, count...), inSet(reg2, newFlows.def.Name))
	if s.Persist > 0 {
		hit := rule(persistKey, []expr.Any{mapTo(reg3, name+"-persist", reg2), inSet(reg2, ok.def.Name)})
		rules = append(rules, rule(hit, send, remember, counted, out))
	}
	var pick []expr.Any
	if s.Scheduler == SourceHash {
		pick = []expr.Any{loadIPSaddr(reg1), jhash(reg1, reg1, 4, seed(s.Name))}
	} else {
		pick = rule(flowKey, []expr.Any{jhash(reg1, reg1, 8, seed(s.Name))})
	}
	pick = rule(pick, []expr.Any{mapTo(reg1, sched.def.Name, reg2)}, persistKey)
	rules = append(rules,
		rule(pick, send, remember, counted, out),
		// With the flow or persistence map full, the update above fails
		// and so does its rule: the flow is still sent by its hash, which
		// keeps it on its server while the scheduler map stands.
		rule(pick, send, counted, out),
		[]expr.Any{counter(), verdict(expr.VerdictDrop)})
	t.addChain(nftables.Chain{Name: name}, rules...)
}
