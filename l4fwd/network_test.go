package l4fwd

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// routes is a host whose routing table the test writes.
type routes map[string]Route // address → route; missing: unreachable

func (r routes) Route(a netip.Addr) (Route, error) {
	if rt, ok := r[a.String()]; ok {
		return rt, nil
	}
	return Route{}, unix.ENETUNREACH
}
func (routes) Device(name string) (Device, error) {
	if name != "eth0" {
		return Device{}, unix.ENODEV
	}
	return Device{Index: 2, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}, nil
}
func (routes) Neighbor(int, netip.Addr) (net.HardwareAddr, error) { return nil, errNoARP }
func (routes) Connections() (map[uint32]int, error)               { return nil, nil }
func (routes) ForgetConnections(uint32) (int, error)              { return 0, nil }

func TestCheckNetwork(t *testing.T) {
	host := routes{
		"10.0.2.11": {Device: "eth0"},
		"10.0.9.11": {Device: "eth1", Gateway: netip.MustParseAddr("10.0.1.254")},
		"10.0.3.11": {Device: "eth1"},
		"10.0.0.1":  {Local: true},
	}
	svc := func(mode, real string) string {
		return "service web {\n\tvip 192.0.2.10\n\tport 80\n\tmode " + mode + "\n\tinterface eth0\n\treal " + real + "\n}\n"
	}
	nat := func(real string) string { return strings.Replace(svc("nat", real), "\tinterface eth0\n", "", 1) }
	tests := []struct {
		name, text, want string
	}{
		{"nat on a connected subnet", nat("10.0.2.11"), ""},
		{"nat through a gateway", nat("10.0.9.11"), ""},
		{"nat unreachable", nat("10.7.7.7"), "n.conf:5: real 10.7.7.7 is outside every reachable subnet"},
		{"nat to this host", nat("10.0.0.1"), "n.conf:5: real 10.0.0.1 is an address of this host"},
		{"dr on the segment", svc("dr", "10.0.2.11"), ""},
		{"dr through a gateway", svc("dr", "10.0.9.11"), "n.conf:6: dr real 10.0.9.11 is not on the same L2 segment as eth0: it is reached through gateway 10.0.1.254"},
		{"dr on another device", svc("dr", "10.0.3.11"), "n.conf:6: dr real 10.0.3.11 is not on the same L2 segment as eth0: its subnet is on eth1"},
		{"dr no such device", strings.Replace(svc("dr", "10.0.2.11"), "interface eth0", "interface eth9", 1), "n.conf:1: service web: interface eth9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig("n.conf", tc.text)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckNetwork(cfg, host)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error = %v, want %q", err, tc.want)
			}
		})
	}
}
