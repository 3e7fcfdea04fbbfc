package haagent

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// Golden adverts sent by keepalived 2.2.7 (Debian 12), captured with
// tcpdump in a namespace (see ../shared/reference/vrrp.md section 5): the
// VRRP payload after the IP header, with the addresses the packet went
// between, since the checksum covers them.
var golden = []struct {
	name     string
	src, dst string
	hex      string
	want     Advert
}{
	{
		name: "ipv4 multicast", src: "10.99.0.11", dst: "224.0.0.18",
		hex:  "313396010064 42a3 0a630064",
		want: Advert{VRID: 51, Priority: 150, Interval: 100, Addrs: addrs("10.99.0.100")},
	},
	{
		name: "ipv4 priority 0 on shutdown", src: "10.99.0.11", dst: "224.0.0.18",
		hex:  "313300010064d8a30a630064",
		want: Advert{VRID: 51, Priority: 0, Interval: 100, Addrs: addrs("10.99.0.100")},
	},
	{
		name: "ipv4 unicast two addresses", src: "10.99.0.11", dst: "10.99.0.12",
		hex:  "3135960200320da80a6300650a630066",
		want: Advert{VRID: 53, Priority: 150, Interval: 50, Addrs: addrs("10.99.0.101", "10.99.0.102")},
	},
	{
		name: "ipv6 multicast", src: "fe80::ff:fe00:11", dst: "ff02::12",
		hex:  "313496020064ebb8" + "fe800000000000000000000000005252" + "fd990000000000000000000000000100",
		want: Advert{VRID: 52, Priority: 150, Interval: 100, Addrs: addrs("fe80::5252", "fd99::100")},
	},
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func goldenBytes(t testing.TB, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(string(bytes.ReplaceAll([]byte(h), []byte(" "), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAdvertGolden(t *testing.T) {
	for _, g := range golden {
		t.Run(g.name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(g.src), netip.MustParseAddr(g.dst)
			wire := goldenBytes(t, g.hex)
			a, err := ParseAdvert(wire, src, dst)
			if err != nil {
				t.Fatalf("ParseAdvert(keepalived's advert) = %v", err)
			}
			if a.VRID != g.want.VRID || a.Priority != g.want.Priority || a.Interval != g.want.Interval || !slices.Equal(a.Addrs, g.want.Addrs) {
				t.Errorf("ParseAdvert = %+v, want %+v", *a, g.want)
			}
			got, err := g.want.Marshal(src, dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wire) {
				t.Errorf("Marshal = %x\nkeepalived sent %x", got, wire)
			}
		})
	}
}

// TestAdvertChecksumUsesDestination checks that the checksum covers the
// address actually sent to: keepalived's unicast advert does not verify
// as if it had gone to the multicast group, nor with a v2-style checksum
// over the message alone.
func TestAdvertChecksumUsesDestination(t *testing.T) {
	g := golden[2]
	wire := goldenBytes(t, g.hex)
	if _, err := ParseAdvert(wire, netip.MustParseAddr(g.src), GroupV4); !errors.Is(err, ErrChecksum) {
		t.Errorf("unicast advert checked against the group: err = %v, want ErrChecksum", err)
	}
	var sum uint32
	for i := 0; i < len(wire); i += 2 {
		sum += uint32(wire[i])<<8 | uint32(wire[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if uint16(sum) == 0xffff {
		t.Error("keepalived's advert also passes a checksum without pseudo-header; the vector proves nothing")
	}
}

func TestParseAdvertRejects(t *testing.T) {
	v4 := goldenBytes(t, golden[0].hex)
	src, dst := netip.MustParseAddr(golden[0].src), GroupV4
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(v4)) }
	// carp is what ucarp sends on the same protocol and group: version 2.
	carp := mod(func(b []byte) []byte { b[0] = 0x21; return b })
	cases := []struct {
		name string
		b    []byte
		src  netip.Addr
		want error
	}{
		{"empty", nil, src, ErrShort},
		{"short header", v4[:7], src, ErrShort},
		{"version 2 (CARP, VRRPv2)", carp, src, ErrVersion},
		{"type 2", mod(func(b []byte) []byte { b[0] = 0x32; return b }), src, ErrType},
		{"count zero", mod(func(b []byte) []byte { b[3] = 0; return b[:8] }), src, ErrCount},
		{"count above payload", mod(func(b []byte) []byte { b[3] = 2; return b }), src, ErrLength},
		{"trailing bytes", append(bytes.Clone(v4), 0, 0, 0, 0), src, ErrLength},
		{"truncated address", v4[:10], src, ErrLength},
		{"flipped bit", mod(func(b []byte) []byte { b[2] ^= 1; return b }), src, ErrChecksum},
		{"other source", v4, netip.MustParseAddr("10.99.0.13"), ErrChecksum},
		{"ipv6 source for ipv4 group", v4, netip.MustParseAddr("fe80::1"), ErrFamily},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if a, err := ParseAdvert(c.b, c.src, dst); !errors.Is(err, c.want) {
				t.Errorf("ParseAdvert = %+v, %v; want error %v", a, err, c.want)
			}
		})
	}
}

func TestAdvertMarshalRejects(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), GroupV4
	cases := []struct {
		name string
		a    Advert
	}{
		{"no addresses", Advert{VRID: 1, Priority: 100, Interval: 100}},
		{"zero interval", Advert{VRID: 1, Priority: 100, Addrs: addrs("10.0.0.9")}},
		{"interval over 12 bits", Advert{VRID: 1, Priority: 100, Interval: 4096, Addrs: addrs("10.0.0.9")}},
		{"mixed family", Advert{VRID: 1, Priority: 100, Interval: 100, Addrs: addrs("10.0.0.9", "fd00::9")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if b, err := c.a.Marshal(src, dst); err == nil {
				t.Errorf("Marshal = %x, want an error", b)
			}
		})
	}
}

// FuzzParseAdvert feeds the decoder arbitrary bytes: it must never panic,
// and whatever it accepts must encode back to an advert that decodes to
// the same thing.
func FuzzParseAdvert(f *testing.F) {
	for _, g := range golden {
		f.Add(goldenBytes(f, g.hex), g.src == "fe80::ff:fe00:11")
	}
	f.Add([]byte{0x21, 1, 100, 1, 1, 0, 0, 0, 10, 0, 0, 1}, false)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		src, dst := netip.MustParseAddr("10.99.0.11"), GroupV4
		if v6 {
			src, dst = netip.MustParseAddr("fe80::ff:fe00:11"), GroupV6
		}
		a, err := ParseAdvert(b, src, dst)
		if err != nil {
			return
		}
		out, err := a.Marshal(src, dst)
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode %+v: %v", b, *a, err)
		}
		again, err := ParseAdvert(out, src, dst)
		if err != nil {
			t.Fatalf("own encoding %x does not decode: %v", out, err)
		}
		if again.VRID != a.VRID || again.Priority != a.Priority || again.Interval != a.Interval || !slices.Equal(again.Addrs, a.Addrs) {
			t.Fatalf("round trip changed %+v into %+v", *a, *again)
		}
	})
}
