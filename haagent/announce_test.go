package haagent

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestAnnouncementFrames(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// keepalived's gratuitous ARP as captured (vrrp.md section 2): a
	// request, sender and target both the VIP, target MAC broadcast.
	wantARP := unhex("0001 0800 06 04 0001 020000000011 0a630064 ffffffffffff 0a630064")
	if got := garpFrame(mac, netip.MustParseAddr("10.99.0.100")); !bytes.Equal(got, wantARP) {
		t.Errorf("garpFrame = %x\nwant        %x", got, wantARP)
	}
	// RFC 4861 section 4.4: type 136, checksum left to the kernel,
	// Override only, the target, then the target link-layer address.
	wantNA := unhex("88 00 0000 20000000 fd990000000000000000000000000100 02 01 020000000011")
	if got := naMessage(mac, netip.MustParseAddr("fd99::100")); !bytes.Equal(got, wantNA) {
		t.Errorf("naMessage = %x\nwant        %x", got, wantNA)
	}
}
