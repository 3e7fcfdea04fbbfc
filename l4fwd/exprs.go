package l4fwd

import (
	"net"
	"net/netip"
	"time"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The expression pieces rules are made of. Each names the nft text it
// stands for and, where it helps, the kernel's debug form
// (`nft --debug=netlink`). Registers: 1..4 are the 16-byte registers; a
// concatenation fills 4-byte sub-registers from 8 (reg 1) upwards, so
// "ip daddr . meta l4proto . th dport" sits in 8, 9 and 10.
const (
	reg1 = unix.NFT_REG_1 // sub-registers 8..11
	reg2 = unix.NFT_REG_2 // sub-registers 12..15
	reg3 = unix.NFT_REG_3 // sub-registers 16..19
	reg4 = unix.NFT_REG_4 // sub-registers 20..23

	regVerdict = unix.NFT_REG_VERDICT
)

// sub returns the 4-byte sub-register n places into a 16-byte register.
func sub(reg uint32, n uint32) uint32 { return 8 + (reg-1)*4 + n }

// loadIPSaddr is "ip saddr": [ payload load 4b @ network header + 12 => reg ].
func loadIPSaddr(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

// loadIPDaddr is "ip daddr": [ payload load 4b @ network header + 16 => reg ].
func loadIPDaddr(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

// loadSport is "th sport": [ payload load 2b @ transport header + 0 => reg ].
func loadSport(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}
}

// loadDport is "th dport": [ payload load 2b @ transport header + 2 => reg ].
func loadDport(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// loadL4Proto is "meta l4proto": [ meta load l4proto => reg ].
func loadL4Proto(reg uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg} }

// loadCtMark is "ct mark": [ ct load mark => reg ].
func loadCtMark(reg uint32) expr.Any { return &expr.Ct{Key: expr.CtKeyMARK, Register: reg} }

// setCtMark is "ct mark set <reg>": [ ct set mark with reg ].
func setCtMark(reg uint32) expr.Any {
	return &expr.Ct{Key: expr.CtKeyMARK, Register: reg, SourceRegister: true}
}

// isIPv4 is "meta protocol ip", which a netdev chain must check before it
// reads an IP header: [ meta load protocol => reg 1 ] [ cmp eq reg 1 0x0008 ].
func isIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)},
	}
}

// ctStateIn is "ct state { states }": [ ct load state => reg 1 ]
// [ bitwise reg 1 = ( reg 1 & bits ) ^ 0 ] [ cmp neq reg 1 0 ].
func ctStateIn(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// dispatchKey loads "ip daddr . meta l4proto [. th dport]" into reg 1.
func dispatchKey(withPort bool) []expr.Any {
	e := []expr.Any{loadIPDaddr(reg1), loadL4Proto(sub(reg1, 1))}
	if withPort {
		e = append(e, loadDport(sub(reg1, 2)))
	}
	return e
}

// vmap is "<reg> vmap @name": [ lookup reg set name dreg 0 ].
func vmap(reg uint32, name string) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: name, DestRegister: regVerdict, IsDestRegSet: true}
}

// mapTo is "<reg> map @name" into dst: [ lookup reg set name dreg dst ].
func mapTo(reg uint32, name string, dst uint32) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: name, DestRegister: dst, IsDestRegSet: true}
}

// inSet is "<reg> @name": [ lookup reg set name ]. A set with counters
// counts every match, which is how per-server counters are kept.
func inSet(reg uint32, name string) expr.Any { return &expr.Lookup{SourceRegister: reg, SetName: name} }

// notInSet is "<reg> != @name": [ lookup reg set name 0x1 ].
func notInSet(reg uint32, name string) expr.Any {
	return &expr.Lookup{SourceRegister: reg, SetName: name, Invert: true}
}

// maskPrefix is "<reg> & <netmask>" for a /bits IPv4 prefix.
func maskPrefix(reg uint32, bits int) expr.Any {
	m := net.CIDRMask(bits, 32)
	return &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: m, Xor: make([]byte, 4)}
}

// numgen is "numgen inc mod Modulus": [ numgen reg = inc mod 1000 ], a
// counter that walks the scheduler's interleaved values in turn.
func numgen(reg uint32) expr.Any {
	return &expr.Numgen{Register: reg, Modulus: Modulus, Type: unix.NFT_NG_INCREMENTAL}
}

// jhash is "jhash <src, n bytes> mod Modulus seed <seed>".
func jhash(src, dst, n, seed uint32) expr.Any {
	return &expr.Hash{SourceRegister: src, DestRegister: dst, Length: n, Modulus: Modulus,
		Seed: seed, Type: expr.HashTypeJenkins}
}

// update is "update @set { <key> : <data> }" (data 0: a set), which adds
// the element or restarts its timeout.
func update(set string, key, data uint32, timeout time.Duration) expr.Any {
	return &expr.Dynset{SetName: set, SrcRegKey: key, SrcRegData: data, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: timeout}
}

// TCP flag bits, as tcpFlags masks and compares them.
const tcpFIN, tcpSYN, tcpRST, tcpACK = 0x01, 0x02, 0x04, 0x10

// tcpFlags is "tcp flags & mask <op> val", through reg:
// [ payload load 1b @ transport header + 13 => reg ] [ bitwise ] [ cmp ].
// tcpFlags(reg, tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpEq, tcpSYN) matches
// a bare SYN, the first packet of a connection.
func tcpFlags(reg uint32, mask byte, op expr.CmpOp, val byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 1, Mask: []byte{mask}, Xor: []byte{0}},
		&expr.Cmp{Op: op, Register: reg, Data: []byte{val}},
	}
}

// dynsetOpDelete is NFT_DYNSET_OP_DELETE of the kernel's nf_tables.h
// (5.12 on), which golang.org/x/sys does not name.
const dynsetOpDelete = 2

// remove is "delete @set { <key> }" from the packet path. For a map the
// kernel wants a data register even here, loaded (it refuses a rule that
// reads a register nothing wrote: ENODATA) though it ignores the value.
func remove(set string, key, data uint32) expr.Any {
	return &expr.Dynset{SetName: set, SrcRegKey: key, SrcRegData: data, Operation: dynsetOpDelete}
}

// counter is "counter": its values are read back with GetRules.
func counter() expr.Any { return &expr.Counter{} }

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// etherWrite is "ether daddr set <reg>" (offset 0) or "ether saddr set
// <reg>" (offset 6): [ payload write reg => 6b @ link header + off ].
func etherWrite(reg, offset uint32) expr.Any {
	return &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg,
		Base: expr.PayloadBaseLLHeader, Offset: offset, Len: 6}
}

// dupToDevice is `dup to "<dev>"` in the netdev family. With a drop after
// it, it does what `fwd to "<dev>"` does: google/nftables has no fwd
// expression, and the prototype measured dup+drop as fast.
func dupToDevice(ifindex int, reg uint32) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg, Data: binaryutil.NativeEndian.PutUint32(uint32(ifindex))},
		&expr.Dup{RegDev: reg, IsRegDevSet: true},
	}
}

// Keys and values as the kernel stores them.

// keyAddr is an IPv4 address as a set key (network order).
func keyAddr(a netip.Addr) []byte { b := a.As4(); return b[:] }

// keyPadded returns b padded to a multiple of 4 bytes, as each field of a
// concatenation is.
func keyPadded(b []byte) []byte {
	out := append([]byte(nil), b...)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

// keyDispatch is "addr . proto [. port]", each field padded to 4 bytes.
func keyDispatch(a netip.Addr, proto string, port uint16) []byte {
	p := byte(unix.IPPROTO_TCP)
	if proto == "udp" {
		p = unix.IPPROTO_UDP
	}
	k := append(keyAddr(a), keyPadded([]byte{p})...)
	if port != 0 {
		k = append(k, keyPadded(keyPort(port))...)
	}
	return k
}

// keyPort is a port as a key or value (network order).
func keyPort(p uint16) []byte { return binaryutil.BigEndian.PutUint16(p) }

// keyMark is a ct mark as a set key or value: host order, as the ct
// expression writes it.
func keyMark(m uint32) []byte { return binaryutil.NativeEndian.PutUint32(m) }

// keySlot is a scheduler value as a map key: in host order, as numgen and
// jhash write it. The scheduler maps hold every value rather than ranges:
// interleaved, a server's values are mostly one to three wide, so an exact
// map is smaller than an interval map of their boundaries, a hash lookup,
// and a change is element updates of the values that change hands. (An
// interval map would compare keys as big-endian bytes and need the result
// converted with hton first, as nft does silently.)
func keySlot(v int) []byte { return binaryutil.NativeEndian.PutUint32(uint32(v)) }
