package haagent_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/sluicelb/sluice/haagent"
	"github.com/sluicelb/sluice/internal/nstest"
)

// captured is a VRRP datagram with the addresses its checksum covers.
type captured struct {
	b        []byte
	src, dst netip.Addr
}

// captureAdverts reads n VRRP datagrams in namespace ns, as tcpdump
// would.
func captureAdverts(t *testing.T, ns string, v6 bool, n int, timeout time.Duration) []captured {
	t.Helper()
	var out []captured
	err := nstest.In(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		network, group := "ip4:112", haagent.GroupV4
		if v6 {
			network, group = "ip6:112", haagent.GroupV6
		}
		c, err := net.ListenPacket(network, "")
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		// read returns one datagram with its source and destination.
		var read func(b []byte) (int, net.IP, net.Addr, error)
		if v6 {
			p := ipv6.NewPacketConn(c)
			if err := errors.Join(p.JoinGroup(ifi, &net.IPAddr{IP: group.AsSlice()}), p.SetControlMessage(ipv6.FlagDst, true)); err != nil {
				return err
			}
			read = func(b []byte) (int, net.IP, net.Addr, error) {
				n, cm, from, err := p.ReadFrom(b)
				if err != nil {
					return 0, nil, nil, err
				}
				return n, cm.Dst, from, nil
			}
		} else {
			p := ipv4.NewPacketConn(c)
			if err := errors.Join(p.JoinGroup(ifi, &net.IPAddr{IP: group.AsSlice()}), p.SetControlMessage(ipv4.FlagDst, true)); err != nil {
				return err
			}
			read = func(b []byte) (int, net.IP, net.Addr, error) {
				n, cm, from, err := p.ReadFrom(b)
				if err != nil {
					return 0, nil, nil, err
				}
				return n, cm.Dst, from, nil
			}
		}
		buf := make([]byte, 2048)
		for len(out) < n {
			k, dstIP, from, err := read(buf)
			if err != nil {
				return err
			}
			src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
			dst, _ := netip.AddrFromSlice(dstIP)
			out = append(out, captured{bytes.Clone(buf[:k]), src.Unmap(), dst.Unmap()})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("capturing adverts in %s: %v", ns, err)
	}
	return out
}

// TestKeepalivedAdvertsRoundTrip captures the adverts of the keepalived
// installed here, live, in IPv4 and IPv6: the codec must decode each and
// encode it again byte for byte, as it does the committed vectors in
// packet_test.go.
func TestKeepalivedAdvertsRoundTrip(t *testing.T) {
	for _, vip := range []string{"10.99.0.100", "fd99::100"} {
		t.Run(vip, func(t *testing.T) {
			l := newLab(t, vip)
			l.keepalived(l.net.LB1.NS, 150, "", "")
			l.settled("lb1", 5*time.Second)
			for _, c := range captureAdverts(t, l.net.C.NS, l.vip.Is6(), 3, 3*time.Second) {
				a, err := haagent.ParseAdvert(c.b, c.src, c.dst)
				if err != nil {
					t.Fatalf("keepalived's advert %x from %v to %v: %v", c.b, c.src, c.dst, err)
				}
				if a.VRID != 51 || a.Priority != 150 || a.Interval != 10 || len(a.Addrs) != 1 || a.Addrs[0] != l.vip {
					t.Errorf("decoded %+v, want VRID 51, priority 150, 10 cs, [%v]", *a, l.vip)
				}
				again, err := a.Marshal(c.src, c.dst)
				if err != nil || !bytes.Equal(again, c.b) {
					t.Errorf("re-encoded %x (%v), keepalived sent %x", again, err, c.b)
				}
			}
		})
	}
}
