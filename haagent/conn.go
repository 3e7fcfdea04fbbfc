package haagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// conn carries one virtual router's adverts on its interface: to the
// VRRP group, or to each unicast peer.
type conn struct {
	ifi  *net.Interface
	src  netip.Addr   // the address adverts are sent from
	dsts []netip.Addr // the group, or the unicast peers
	pc   net.PacketConn
	p4   *ipv4.PacketConn // one of p4 and p6 is set
	p6   *ipv6.PacketConn
}

// packet is one received datagram with what the IP layer said of it.
type packet struct {
	data     []byte
	src, dst netip.Addr
	ttl      int // TTL or hop limit
	ifindex  int
	// at is when the datagram was read: timers start from here, not
	// from whenever the router's goroutine gets to it on a busy host.
	at time.Time
}

// openConn opens the raw IP protocol 112 socket for ifi, bound to it so
// that other links' adverts never reach us, and joins the VRRP group
// unless peers are given.
func openConn(ifi *net.Interface, src netip.Addr, peers []netip.Addr) (*conn, error) {
	c := &conn{ifi: ifi, src: src, dsts: peers}
	network, wildcard := "ip4:112", "0.0.0.0"
	if src.Is6() {
		network, wildcard = "ip6:112", "::"
	}
	pc, err := net.ListenPacket(network, wildcard)
	if err != nil {
		return nil, fmt.Errorf("open VRRP socket: %w", err)
	}
	c.pc = pc
	if err := bindToDevice(pc, ifi.Name); err != nil {
		pc.Close()
		return nil, err
	}
	if err := c.setup(len(peers) == 0); err != nil {
		pc.Close()
		return nil, fmt.Errorf("set up VRRP socket on %s: %w", ifi.Name, err)
	}
	return c, nil
}

func (c *conn) setup(multicast bool) error {
	// RFC 5798 section 5.1.1.3: TTL and hop limit 255, so a receiver can
	// tell the advert was not forwarded from another link. TOS 0xc0
	// (network control) as keepalived sends.
	if c.src.Is4() {
		p := ipv4.NewPacketConn(c.pc)
		c.p4 = p
		if multicast {
			c.dsts = []netip.Addr{GroupV4}
			if err := p.JoinGroup(c.ifi, &net.IPAddr{IP: GroupV4.AsSlice()}); err != nil {
				return err
			}
		}
		return errors.Join(
			p.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true),
			p.SetTTL(255), p.SetMulticastTTL(255), p.SetTOS(0xc0),
			p.SetMulticastLoopback(false), p.SetMulticastInterface(c.ifi))
	}
	p := ipv6.NewPacketConn(c.pc)
	c.p6 = p
	if multicast {
		c.dsts = []netip.Addr{GroupV6}
		if err := p.JoinGroup(c.ifi, &net.IPAddr{IP: GroupV6.AsSlice()}); err != nil {
			return err
		}
	}
	return errors.Join(
		p.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true),
		p.SetHopLimit(255), p.SetMulticastHopLimit(255), p.SetTrafficClass(0xc0),
		p.SetMulticastLoopback(false), p.SetMulticastInterface(c.ifi))
}

// bindToDevice is: setsockopt(SO_BINDTODEVICE, name).
func bindToDevice(pc net.PacketConn, name string) error {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return errors.New("VRRP socket has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, name)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("bind VRRP socket to %s: %w", name, serr)
	}
	return nil
}

// send sends a to every destination, each with the checksum for its own
// destination address.
func (c *conn) send(a *Advert) error {
	var errs []error
	for _, dst := range c.dsts {
		b, err := a.Marshal(c.src, dst)
		if err != nil {
			return err
		}
		to := &net.IPAddr{IP: dst.AsSlice()}
		if c.p4 != nil {
			_, err = c.p4.WriteTo(b, &ipv4.ControlMessage{IfIndex: c.ifi.Index, Src: c.src.AsSlice()}, to)
		} else {
			if dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() {
				to.Zone = c.ifi.Name
			}
			_, err = c.p6.WriteTo(b, &ipv6.ControlMessage{IfIndex: c.ifi.Index, Src: c.src.AsSlice(), HopLimit: 255}, to)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("send advert to %s: %w", dst, err))
		}
	}
	return errors.Join(errs...)
}

// read waits for the next datagram. buf must hold the largest advert.
func (c *conn) read(buf []byte) (packet, error) {
	var p packet
	var from net.Addr
	var err error
	var n int
	if c.p4 != nil {
		var cm *ipv4.ControlMessage
		n, cm, from, err = c.p4.ReadFrom(buf)
		if cm != nil {
			p.ttl, p.ifindex = cm.TTL, cm.IfIndex
			p.dst, _ = netip.AddrFromSlice(cm.Dst)
		}
	} else {
		var cm *ipv6.ControlMessage
		n, cm, from, err = c.p6.ReadFrom(buf)
		if cm != nil {
			p.ttl, p.ifindex = cm.HopLimit, cm.IfIndex
			p.dst, _ = netip.AddrFromSlice(cm.Dst)
		}
	}
	if err != nil {
		return p, err
	}
	p.at = time.Now()
	if ip, ok := from.(*net.IPAddr); ok {
		p.src, _ = netip.AddrFromSlice(ip.IP)
	}
	p.src, p.dst = p.src.Unmap(), p.dst.Unmap()
	p.data = append([]byte(nil), buf[:n]...)
	return p, nil
}

func (c *conn) close() error { return c.pc.Close() }
