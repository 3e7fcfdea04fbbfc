package haagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// announcer tells the link that the virtual addresses have moved: a
// gratuitous ARP for each IPv4 one, an unsolicited neighbour
// advertisement for each IPv6 one, so that clients and switches send to
// the new master at once rather than when their caches expire.
type announcer struct {
	ifi  *net.Interface
	arp  int              // AF_PACKET socket, IPv4 routers
	icmp *ipv6.PacketConn // raw ICMPv6 socket, IPv6 routers
}

func openAnnouncer(ifi *net.Interface, ipv6Router bool) (*announcer, error) {
	a := &announcer{ifi: ifi, arp: -1}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%s has no Ethernet address to announce from", ifi.Name)
	}
	if !ipv6Router {
		// Protocol 0: this socket only sends, so it queues nothing.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open packet socket for gratuitous ARP: %w", err)
		}
		a.arp = fd
		return a, nil
	}
	pc, err := net.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("open ICMPv6 socket for neighbour advertisements: %w", err)
	}
	p := ipv6.NewPacketConn(pc)
	var f ipv6.ICMPFilter
	f.SetAll(true) // send only: let no ICMPv6 queue up on it
	if err := errors.Join(p.SetICMPFilter(&f), p.SetMulticastHopLimit(255), p.SetMulticastInterface(ifi)); err != nil {
		pc.Close()
		return nil, fmt.Errorf("set up ICMPv6 socket: %w", err)
	}
	a.icmp = p
	return a, nil
}

func (a *announcer) close() {
	if a.arp >= 0 {
		unix.Close(a.arp)
	}
	if a.icmp != nil {
		a.icmp.Close()
	}
}

// announce sends one announcement for each address.
func (a *announcer) announce(ips []netip.Addr) error {
	var errs []error
	for _, ip := range ips {
		var err error
		if ip.Is4() {
			err = a.garp(ip)
		} else {
			err = a.unsolicitedNA(ip)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// garpFrame is the ARP request keepalived sends as gratuitous ARP: sender
// and target both the virtual address, from the interface's MAC, to
// broadcast (RFC 5227 section 3 calls it an ARP Announcement).
func garpFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 1} // Ethernet, IPv4, lengths, request
	b = append(b, mac...)
	b = append(b, ip.AsSlice()...)
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	return append(b, ip.AsSlice()...)
}

// garp is: arping -U -I $link $vip.
func (a *announcer) garp(ip netip.Addr) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: a.ifi.Index, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(a.arp, garpFrame(a.ifi.HardwareAddr, ip), 0, to); err != nil {
		return fmt.Errorf("gratuitous ARP for %s on %s: %w", ip, a.ifi.Name, err)
	}
	return nil
}

// naMessage is an unsolicited neighbour advertisement (RFC 4861 section
// 4.4) for ip: Override set, so caches take the new MAC; Router clear, as
// a load balancer's address is no router; the target link-layer address
// option carries the MAC. The kernel fills in the checksum.
func naMessage(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := []byte{136, 0, 0, 0, 0x20, 0, 0, 0}
	b = append(b, ip.AsSlice()...)
	b = append(b, 2, 1) // target link-layer address, 8 bytes
	return append(b, mac...)
}

// unsolicitedNA is: ndsend $vip $link. It goes from the virtual address
// itself to all nodes, hop limit 255 as RFC 4861 requires.
func (a *announcer) unsolicitedNA(ip netip.Addr) error {
	cm := &ipv6.ControlMessage{Src: ip.AsSlice(), HopLimit: 255, IfIndex: a.ifi.Index}
	to := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: a.ifi.Name}
	if _, err := a.icmp.WriteTo(naMessage(a.ifi.HardwareAddr, ip), cm, to); err != nil {
		return fmt.Errorf("unsolicited neighbour advertisement for %s on %s: %w", ip, a.ifi.Name, err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
