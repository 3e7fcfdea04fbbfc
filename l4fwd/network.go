package l4fwd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Network is the host as l4fwd needs to know it: routes to real servers,
// devices, and neighbours' MAC addresses. Host is the real one.
type Network interface {
	Route(dst netip.Addr) (Route, error)
	Device(name string) (Device, error)
	// Neighbor returns the MAC address of addr on device index dev, asking
	// for it (ARP) when the kernel does not know it yet.
	Neighbor(dev int, addr netip.Addr) (net.HardwareAddr, error)
	// Connections counts the open connections conntrack holds, by ct mark.
	Connections() (map[uint32]int, error)
	// ForgetConnections deletes the conntrack entries of ct mark mark and
	// says how many went.
	ForgetConnections(mark uint32) (int, error)
}

// Route is how the host reaches an address.
type Route struct {
	Device  string
	Gateway netip.Addr // invalid when the address is on a connected subnet
	Local   bool       // the address is the host's own
}

// Device is a network device.
type Device struct {
	Index int
	MAC   net.HardwareAddr
}

// Host reads the kernel's routes, devices and neighbours over netlink.
type Host struct {
	h *netlink.Handle
	// ARPWait bounds how long Neighbor waits for an answer. Default: 1s.
	ARPWait time.Duration
}

// NewHost returns a Host for the current network namespace.
func NewHost() (*Host, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	return &Host{h: h, ARPWait: time.Second}, nil
}

// Route looks the address up in the routing table.
//
// Equivalent to: ip route get $dst
func (n *Host) Route(dst netip.Addr) (Route, error) {
	rs, err := n.h.RouteGet(dst.AsSlice())
	if err != nil {
		return Route{}, err
	}
	if len(rs) == 0 {
		return Route{}, unix.ENETUNREACH
	}
	r := rs[0]
	switch r.Type {
	case unix.RTN_LOCAL:
		return Route{Local: true}, nil
	case unix.RTN_UNREACHABLE, unix.RTN_BLACKHOLE, unix.RTN_PROHIBIT:
		return Route{}, unix.ENETUNREACH
	}
	out := Route{}
	if l, err := n.h.LinkByIndex(r.LinkIndex); err == nil {
		out.Device = l.Attrs().Name
	}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && !gw.Unmap().IsUnspecified() {
		out.Gateway = gw.Unmap()
	}
	return out, nil
}

// Device looks a device up by name.
//
// Equivalent to: ip link show $name
func (n *Host) Device(name string) (Device, error) {
	l, err := n.h.LinkByName(name)
	if err != nil {
		return Device{}, err
	}
	return Device{Index: l.Attrs().Index, MAC: l.Attrs().HardwareAddr}, nil
}

// Connections dumps conntrack and counts its IPv4 entries by mark. Like
// connlimit, it leaves out TCP connections already closed (TIME_WAIT,
// CLOSE), which conntrack keeps a while longer.
//
// Equivalent to: conntrack -L -f ipv4 -o extended | count by mark=
func (n *Host) Connections() (map[uint32]int, error) {
	flows, err := n.h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("read conntrack: %w", err)
	}
	counts := map[uint32]int{}
	for _, f := range flows {
		if tcp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && (tcp.State == nl.TCP_CONNTRACK_TIME_WAIT || tcp.State == nl.TCP_CONNTRACK_CLOSE) {
			continue
		}
		counts[f.Mark]++
	}
	return counts, nil
}

// ForgetConnections deletes every IPv4 conntrack entry with ct mark
// mark: a real server's connections, whose next packets conntrack then
// takes up as new ones (nf_conntrack_tcp_loose) and l4fwd schedules.
//
// Equivalent to: conntrack -D -f ipv4 --mark $mark
func (n *Host) ForgetConnections(mark uint32) (int, error) {
	gone, err := n.h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, markFilter(mark))
	if err != nil {
		return int(gone), fmt.Errorf("delete conntrack entries of mark %#x: %w", mark, err)
	}
	return int(gone), nil
}

// markFilter matches conntrack entries by ct mark.
type markFilter uint32

func (m markFilter) MatchConntrackFlow(f *netlink.ConntrackFlow) bool { return f.Mark == uint32(m) }

// usable neighbour states: the kernel has a MAC it believes, or believed
// recently.
const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE |
	netlink.NUD_PERMANENT | netlink.NUD_NOARP

// Neighbor finds addr's MAC in the neighbour table; when it is missing it
// sends one UDP datagram to addr's discard port, which makes the kernel
// resolve it, and waits for the answer.
//
// Equivalent to: ip neigh show $addr dev $dev
func (n *Host) Neighbor(dev int, addr netip.Addr) (net.HardwareAddr, error) {
	if mac := n.lookup(dev, addr); mac != nil {
		return mac, nil
	}
	if c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 9))); err == nil {
		_, _ = c.Write([]byte{0})
		c.Close()
	}
	wait := n.ARPWait
	if wait <= 0 {
		wait = time.Second
	}
	for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if mac := n.lookup(dev, addr); mac != nil {
			return mac, nil
		}
	}
	return nil, errNoARP
}

var errNoARP = errors.New("no ARP answer")

func (n *Host) lookup(dev int, addr netip.Addr) net.HardwareAddr {
	ns, err := n.h.NeighList(dev, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	for _, e := range ns {
		if a, ok := netip.AddrFromSlice(e.IP); ok && a.Unmap() == addr && e.State&usable != 0 && len(e.HardwareAddr) == 6 {
			return e.HardwareAddr
		}
	}
	return nil
}

// CheckNetwork checks cfg against the host before anything is changed in
// the kernel: every NAT real server must be reachable, every DR real
// server on a connected subnet of the service's interface.
func CheckNetwork(cfg *Config, n Network) error {
	fail := func(line int, format string, args ...any) error {
		return &ConfigError{cfg.File, line, fmt.Sprintf(format, args...)}
	}
	for _, s := range cfg.Services {
		if s.Mode == DR {
			if _, err := n.Device(s.Interface); err != nil {
				return fail(s.Line, "service %s: interface %s: %v", s.Name, s.Interface, err)
			}
		}
		for _, r := range s.Reals {
			rt, err := n.Route(r.Addr)
			switch {
			case err != nil:
				return fail(r.Line, "real %s is outside every reachable subnet: no route to it from this host (%v)", r.Addr, err)
			case rt.Local:
				return fail(r.Line, "real %s is an address of this host, not a real server", r.Addr)
			case s.Mode == DR && rt.Gateway.IsValid():
				return fail(r.Line, "dr real %s is not on the same L2 segment as %s: it is reached through gateway %s on %s", r.Addr, s.Interface, rt.Gateway, rt.Device)
			case s.Mode == DR && rt.Device != s.Interface:
				return fail(r.Line, "dr real %s is not on the same L2 segment as %s: its subnet is on %s", r.Addr, s.Interface, rt.Device)
			}
		}
	}
	return nil
}
