package haagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vips puts a router's virtual addresses on its link and takes them off.
type vips struct {
	h    *netlink.Handle
	link netlink.Link
}

func toNetlink(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		// No duplicate address detection: the address must answer at
		// once, and the unsolicited NA is sent from it.
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// add is: ip addr replace $vip dev $link [nodad]. Replace, not add, so
// that re-entering MASTER, or finding an address left by a crash, is no
// error.
func (v *vips) add(ps []netip.Prefix) error {
	var errs []error
	for _, p := range ps {
		if err := v.h.AddrReplace(v.link, toNetlink(p)); err != nil {
			errs = append(errs, fmt.Errorf("add VIP %s on %s: %w", p, v.link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// remove is: ip addr del $vip dev $link. An address already gone is fine.
func (v *vips) remove(ps []netip.Prefix) error {
	var errs []error
	for _, p := range ps {
		err := v.h.AddrDel(v.link, toNetlink(p))
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove VIP %s from %s: %w", p, v.link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// sourceAddr picks the address adverts go out from when none is
// configured: for IPv4 the link's first address, for IPv6 its link-local
// one (RFC 5798 section 5.1.2.1), or its first global one when adverts go
// by unicast to global peers. Virtual addresses never count.
func (v *vips) sourceAddr(ipv6, unicast bool, exclude []netip.Prefix) (netip.Addr, error) {
	family := netlink.FAMILY_V4
	if ipv6 {
		family = netlink.FAMILY_V6
	}
	list, err := v.h.AddrList(v.link, family)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses of %s: %w", v.link.Attrs().Name, err)
	}
	wantLinkLocal := ipv6 && !unicast
next:
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		for _, x := range exclude {
			if x.Addr() == ip {
				continue next
			}
		}
		if ipv6 && ip.IsLinkLocalUnicast() != wantLinkLocal {
			continue
		}
		return ip, nil
	}
	what := "an IPv4 address"
	switch {
	case wantLinkLocal:
		what = "a link-local IPv6 address"
	case ipv6:
		what = "a global IPv6 address"
	}
	return netip.Addr{}, fmt.Errorf("%s has no %s to send adverts from (set source)", v.link.Attrs().Name, what)
}
