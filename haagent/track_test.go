package haagent

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestEffectivePriority(t *testing.T) {
	item := func(weight int, up bool) *trackItem {
		return &trackItem{cfg: TrackConfig{Kind: "tcp", Target: "127.0.0.1:80", Weight: weight}, up: up, reason: "refused"}
	}
	cases := []struct {
		name      string
		base      uint8
		items     []*trackItem
		want      uint8
		wantFault bool
	}{
		{"nothing tracked", 100, nil, 100, false},
		{"negative weight passing", 150, []*trackItem{item(-60, true)}, 150, false},
		{"negative weight failing", 150, []*trackItem{item(-60, false)}, 90, false},
		{"positive weight passing", 100, []*trackItem{item(20, true)}, 120, false},
		{"positive weight failing", 100, []*trackItem{item(20, false)}, 100, false},
		{"weights add up", 150, []*trackItem{item(-60, false), item(-30, false), item(10, true)}, 70, false},
		{"floor at 1", 50, []*trackItem{item(-253, false)}, 1, false},
		{"ceiling at 254", 250, []*trackItem{item(100, true)}, 254, false},
		{"owner keeps 255", 255, []*trackItem{item(-100, false)}, 255, false},
		{"weight 0 failing forces fault", 150, []*trackItem{item(0, false), item(-10, true)}, 150, true},
		{"weight 0 passing", 150, []*trackItem{item(0, true)}, 150, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, fault := effectivePriority(c.base, c.items)
			if got != c.want || (fault != "") != c.wantFault {
				t.Errorf("effectivePriority = %d, fault %q; want %d, fault %v", got, fault, c.want, c.wantFault)
			}
		})
	}
}

func TestRunScript(t *testing.T) {
	if err := runScript(context.Background(), "exit 0"); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	if err := runScript(context.Background(), "exit 3"); err == nil {
		t.Error("exit 3 passed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	// The child of the shell must die too: the whole process group is
	// killed, or Wait would hold until sleep ends.
	err := runScript(ctx, "sleep 30 & sleep 30")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Errorf("hanging script: %v after %v, want a timeout soon after 100ms", err, time.Since(start))
	}
}

func TestReceiveChecks(t *testing.T) {
	src, peer := netip.MustParseAddr("10.99.0.12"), netip.MustParseAddr("10.99.0.13")
	adv := func(vrid uint8) []byte {
		b, err := (&Advert{VRID: vrid, Priority: 100, Interval: 10, Addrs: addrs("10.99.0.100")}).Marshal(src, GroupV4)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name  string
		peers []netip.Addr
		p     packet
		want  error
	}{
		{"good", nil, packet{data: adv(51), src: src, dst: GroupV4, ttl: 255}, nil},
		{"ttl 254", nil, packet{data: adv(51), src: src, dst: GroupV4, ttl: 254}, ErrTTL},
		{"other vrid", nil, packet{data: adv(52), src: src, dst: GroupV4, ttl: 255}, ErrVRID},
		{"unicast from a peer", []netip.Addr{src}, packet{data: adv(51), src: src, dst: GroupV4, ttl: 255}, nil},
		{"unicast from a stranger", []netip.Addr{peer}, packet{data: adv(51), src: src, dst: GroupV4, ttl: 255}, ErrPeer},
		{"bad checksum", nil, packet{data: adv(51), src: peer, dst: GroupV4, ttl: 255}, ErrChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := &instance{cfg: &RouterConfig{VRID: 51, Peers: c.peers}}
			if _, err := in.check(c.p); !errors.Is(err, c.want) {
				t.Errorf("check = %v, want %v", err, c.want)
			}
		})
	}
}
