package haagent_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/internal/nstest"
)

// TestAnnouncementsAreRepeated counts the gratuitous ARPs the client
// sees when lb1 becomes master: as many as configured, from lb1's MAC.
func TestAnnouncementsAreRepeated(t *testing.T) {
	l := newLab(t, "10.99.0.100")
	var fd int
	err := nstest.In(l.net.C.NS, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var mac net.HardwareAddr
	if err := nstest.In(l.net.LB1.NS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if ifi != nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	l.haagent(l.net.LB1.NS, l.routerConf(150, "announce 4 every 30ms"))
	if l.w1.Wait(within(t, 5*time.Second), true).IsZero() {
		t.Fatal("lb1 never became master")
	}
	vip := l.vip.AsSlice()
	count := 0
	buf := make([]byte, 128)
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout: look at the clock again
		}
		b := buf[:n]
		// An ARP request for the VIP from the VIP, sent by lb1.
		if n >= 28 && b[7] == 1 && bytes.Equal(b[8:14], mac) && bytes.Equal(b[14:18], vip) && bytes.Equal(b[24:28], vip) {
			count++
		}
	}
	if count != 4 {
		t.Errorf("client saw %d gratuitous ARPs for %v from lb1, want 4", count, l.vip)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
