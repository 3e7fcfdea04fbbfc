package haagent_test

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/sluicelb/sluice/haagent"
	"github.com/sluicelb/sluice/internal/nstest"
	"github.com/sluicelb/sluice/internal/wait"
)

// TestBadAdvertsAreDroppedAndCounted sends a master adverts from the
// client that would make it step down if any were accepted (priority 254
// against its 100), each broken in one way, and checks that the master
// stays master and counts every one. A correct advert then does make it
// step down, which proves the broken ones reached it.
func TestBadAdvertsAreDroppedAndCounted(t *testing.T) {
	l := newLab(t, "10.99.0.100")
	lb1 := l.haagent(l.net.LB1.NS, l.routerConf(100))
	if l.w1.Wait(within(t, 5*time.Second), true).IsZero() {
		t.Fatal("lb1 never became master")
	}
	changes := len(l.w1.Events())

	var pc *ipv4.PacketConn
	err := nstest.In(l.net.C.NS, func() error {
		c, err := net.ListenPacket("ip4:112", "0.0.0.0")
		if err != nil {
			return err
		}
		pc = ipv4.NewPacketConn(c)
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return pc.SetMulticastInterface(ifi)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	src := netip.MustParseAddr("10.99.0.50")
	send := func(b []byte, ttl int) {
		t.Helper()
		if err := pc.SetMulticastTTL(ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(b, nil, &net.IPAddr{IP: haagent.GroupV4.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	good := func(vrid, prio uint8, vips ...string) []byte {
		a := &haagent.Advert{VRID: vrid, Priority: prio, Interval: 10}
		for _, v := range vips {
			a.Addrs = append(a.Addrs, netip.MustParseAddr(v))
		}
		b, err := a.Marshal(src, haagent.GroupV4)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	broken := func(f func(b []byte) []byte) []byte { return f(good(51, 254, "10.99.0.100")) }
	bad := []struct {
		reason error
		b      []byte
		ttl    int
	}{
		{haagent.ErrTTL, good(51, 254, "10.99.0.100"), 64},
		{haagent.ErrChecksum, broken(func(b []byte) []byte { b[7] ^= 0xff; return b }), 255},
		{haagent.ErrVersion, broken(func(b []byte) []byte { b[0] = 0x21; return b }), 255},
		{haagent.ErrVRID, good(52, 254, "10.99.0.100"), 255},
		{haagent.ErrLength, broken(func(b []byte) []byte { b[3] = 2; return b }), 255},
		{haagent.ErrCount, broken(func(b []byte) []byte { b[3] = 0; return b[:8] }), 255},
		{haagent.ErrShort, []byte{0x31, 51, 254}, 255},
	}
	const each = 3
	for range each {
		for _, p := range bad {
			send(p.b, p.ttl)
		}
		time.Sleep(advert)
	}
	// A peer with our VRID and another address list, at a priority that
	// does not change anything: logged loudly.
	send(good(51, 50, "10.99.0.200"), 255)

	time.Sleep(2 * haagent.MasterDownInterval(100, advert))
	if len(l.w1.Events()) != changes || !l.w1.Has() {
		t.Fatalf("lb1 lost the VIP to broken adverts (changes %d → %d)", changes, len(l.w1.Events()))
	}
	lb1.signal(syscall.SIGUSR1)
	var status struct {
		State   string            `json:"state"`
		Dropped map[string]uint64 `json:"dropped_adverts"`
		Foreign int               `json:"foreign_address_lists"`
	}
	if !wait.For(3*time.Second, func() bool {
		for line := range strings.Lines(lb1.out.String()) {
			if strings.Contains(line, `"msg":"status"`) {
				return json.Unmarshal([]byte(line), &status) == nil
			}
		}
		return false
	}) {
		t.Fatal("no status line after SIGUSR1")
	}
	if status.State != "MASTER" {
		t.Errorf("status state %q, want MASTER", status.State)
	}
	for _, p := range bad {
		if got := status.Dropped[p.reason.Error()]; got != each {
			t.Errorf("dropped for %q: %d, want %d (all: %v)", p.reason, got, each, status.Dropped)
		}
	}
	if status.Foreign != 1 || !strings.Contains(lb1.out.String(), "PEER ADVERTISES OUR VRID WITH A DIFFERENT ADDRESS LIST") {
		t.Errorf("a peer advertising other addresses was not logged and counted once (count %d)", status.Foreign)
	}

	// The same advert, unbroken, is obeyed.
	send(good(51, 254, "10.99.0.100"), 255)
	if l.w1.Wait(within(t, 2*time.Second), false).IsZero() {
		t.Fatal("lb1 did not step down for a correct higher-priority advert: were the broken ones even delivered?")
	}
	// With that master silent, lb1 takes the VIP back.
	if l.w1.Wait(within(t, 3*time.Second), true).IsZero() {
		t.Error("lb1 did not take the VIP back once the higher-priority master went silent")
	}
}
