package haagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ProtocolVRRP is VRRP's IP protocol number.
const ProtocolVRRP = 112

// Multicast groups adverts go to when no unicast peers are configured.
var (
	GroupV4 = netip.MustParseAddr("224.0.0.18")
	GroupV6 = netip.MustParseAddr("ff02::12")
)

// Advert is one VRRPv3 advertisement (RFC 5798 section 5.1): who leads
// virtual router VRID, how loudly, how often, for which addresses.
type Advert struct {
	VRID     uint8
	Priority uint8 // 255: address owner; 0: the master is leaving
	// Interval is Max Advertise Interval in centiseconds, 12 bits (1-4095).
	Interval uint16
	// Addrs are the virtual addresses, all of one family, as the sender
	// lists them.
	Addrs []netip.Addr
}

const (
	headerLen     = 8
	versionType   = 3<<4 | 1 // version 3, type 1 (ADVERTISEMENT)
	maxInterval   = 1<<12 - 1
	maxAdvertSize = headerLen + 255*16
)

// Reasons a received advert is dropped. Each is counted apart, and none
// changes the state machine.
var (
	ErrShort    = errors.New("shorter than a VRRP header")
	ErrVersion  = errors.New("not VRRP version 3")
	ErrType     = errors.New("not an ADVERTISEMENT")
	ErrLength   = errors.New("length does not match the address count")
	ErrCount    = errors.New("address count is zero")
	ErrChecksum = errors.New("bad checksum")
	ErrInterval = errors.New("advertisement interval is zero")
	ErrFamily   = errors.New("source and destination differ in address family")
)

// Marshal encodes a as sent from src to dst. The checksum covers the
// pseudo-header of the destination actually used (the multicast group or
// a unicast peer), as RFC 5798 section 5.2.8 requires and keepalived does
// since 1.3.6; the family of src decides the address length.
func (a *Advert) Marshal(src, dst netip.Addr) ([]byte, error) {
	if src.Is4() != dst.Is4() {
		return nil, ErrFamily
	}
	if len(a.Addrs) == 0 || len(a.Addrs) > 255 {
		return nil, fmt.Errorf("advert with %d addresses: want 1-255", len(a.Addrs))
	}
	if a.Interval == 0 || a.Interval > maxInterval {
		return nil, fmt.Errorf("advert interval %d cs: want 1-%d", a.Interval, maxInterval)
	}
	alen := 16
	if src.Is4() {
		alen = 4
	}
	b := make([]byte, headerLen, headerLen+alen*len(a.Addrs))
	b[0] = versionType
	b[1] = a.VRID
	b[2] = a.Priority
	b[3] = uint8(len(a.Addrs))
	binary.BigEndian.PutUint16(b[4:], a.Interval)
	for _, ip := range a.Addrs {
		if ip.Is4() != src.Is4() || ip.Is4In6() {
			return nil, fmt.Errorf("virtual address %s is not of the advert's family", ip)
		}
		b = append(b, ip.AsSlice()...)
	}
	binary.BigEndian.PutUint16(b[6:], checksum(b, src, dst))
	return b, nil
}

// ParseAdvert decodes an advert received from src for dst (the
// destination address of the IP packet) and checks what RFC 5798 section
// 7.1 asks of the VRRP part: version, type, length, count and checksum. The
// IP layer's checks (TTL or hop limit 255) and the VRID are the caller's.
func ParseAdvert(b []byte, src, dst netip.Addr) (*Advert, error) {
	if src.Is4() != dst.Is4() {
		return nil, ErrFamily
	}
	if len(b) < headerLen {
		return nil, ErrShort
	}
	if b[0]>>4 != 3 {
		return nil, ErrVersion
	}
	if b[0]&0x0f != 1 {
		return nil, ErrType
	}
	alen := 16
	if src.Is4() {
		alen = 4
	}
	n := int(b[3])
	if n == 0 {
		return nil, ErrCount
	}
	if len(b) != headerLen+n*alen {
		return nil, ErrLength
	}
	if checksum(b, src, dst) != 0 {
		return nil, ErrChecksum
	}
	a := &Advert{
		VRID:     b[1],
		Priority: b[2],
		Interval: binary.BigEndian.Uint16(b[4:]) & maxInterval, // the top 4 bits are reserved
		Addrs:    make([]netip.Addr, n),
	}
	if a.Interval == 0 {
		return nil, ErrInterval
	}
	for i := range n {
		p := b[headerLen+i*alen : headerLen+(i+1)*alen]
		if alen == 4 {
			a.Addrs[i] = netip.AddrFrom4([4]byte(p))
		} else {
			a.Addrs[i] = netip.AddrFrom16([16]byte(p))
		}
	}
	return a, nil
}

// checksum is the Internet checksum of the pseudo-header for src and dst
// followed by msg. Over a message whose checksum field is filled in, it
// is zero when the checksum is right.
func checksum(msg []byte, src, dst netip.Addr) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	// IPv4: zero, protocol, 16-bit length. IPv6: 32-bit length, three
	// zero bytes, next header. Both sum to length + protocol.
	sum += ProtocolVRRP + uint32(len(msg))
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
