package l4fwd_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/sluicelb/sluice/internal/wait"
)

// drTopology builds one L2 segment (a bridge in its own namespace) with
// the client, the load balancer and two real servers. The LB holds the
// VIP and answers ARP for it; the real servers hold it on lo and, with
// arp_ignore=1 and arp_announce=2, never claim it.
//
//	l4t-dc 10.79.0.50   l4t-dlb 10.79.0.1 + VIP 10.79.0.100   l4t-dr1 10.79.0.11   l4t-dr2 10.79.0.12
//	      └──────────────────── l4t-dsw: bridge l4t-br ─────────────────────┘
func drTopology(t *testing.T) (client, lb string, rs []string) {
	t.Helper()
	needRoot(t)
	removeStale()
	sw := addNS(t, prefix+"dsw")
	ip(t, "-n", sw, "link", "add", prefix+"br", "type", "bridge")
	ip(t, "-n", sw, "link", "set", prefix+"br", "up")
	node := func(name, addr string) string {
		ns := addNS(t, prefix+"d"+name)
		ip(t, "link", "add", prefix+"e", "netns", ns, "type", "veth", "peer", "name", prefix+name, "netns", sw)
		ip(t, "-n", sw, "link", "set", prefix+name, "master", prefix+"br", "up")
		ip(t, "-n", ns, "addr", "add", addr+"/24", "dev", prefix+"e")
		ip(t, "-n", ns, "link", "set", prefix+"e", "up")
		return ns
	}
	client = node("c", "10.79.0.50")
	lb = node("lb", "10.79.0.1")
	ip(t, "-n", lb, "addr", "add", "10.79.0.100/32", "dev", prefix+"e")
	for i := 1; i <= 2; i++ {
		r := node(fmt.Sprintf("r%d", i), fmt.Sprintf("10.79.0.1%d", i))
		ip(t, "-n", r, "addr", "add", "10.79.0.100/32", "dev", "lo")
		sysctl(t, r, "net.ipv4.conf.all.arp_ignore", "1", "net.ipv4.conf.all.arp_announce", "2")
		rs = append(rs, r)
	}
	return client, lb, rs
}

const drService = `
service web {
	vip 10.79.0.100
	port 80
	mode dr
	interface l4t-e
	interval 500ms
	real 10.79.0.11 weight %d state %s
	real 10.79.0.12 weight %d state %s
}
`

// TestDR runs l4fwd in direct-routing mode: connections spread by weight,
// the real servers' replies never cross the load balancer, and a drained
// server keeps its established connections.
func TestDR(t *testing.T) {
	client, lb, rs := drTopology(t)
	server(t, rs[0], "r1", ":80")
	server(t, rs[1], "r2", ":80")
	vip := netip.MustParsePrefix("10.79.0.100/32")
	seen := newProbe(t, lb, nftables.TableFamilyNetdev, prefix+"e")
	seen.count(t, true, vip)  // replies from the VIP reaching the LB
	seen.count(t, false, vip) // requests to the VIP reaching the LB
	d := startDaemon(t, lb, fmt.Sprintf(drService, 3, "active", 1, "active"))
	k := nftIn(t, lb)
	ok := func() int { return setLen(k, nftables.TableFamilyNetdev, "d1-ok") }
	wait.Until(t, "the ruleset", 10*time.Second, func() bool { return ok() == 2 })
	const url = "http://10.79.0.100/"

	t.Run("weights and replies bypass the LB", func(t *testing.T) {
		checkThreeToOne(t, client, url)
		pk := seen.packets(t)
		t.Logf("LB ingress: %d packets from the VIP, %d to it", pk[0], pk[1])
		if pk[0] != 0 {
			t.Errorf("%d reply packets from the VIP reached the LB; in DR they go straight to the client", pk[0])
		}
		if pk[1] < 400*3 { // SYN, ACK, request, FIN... of 400 connections
			t.Errorf("only %d packets to the VIP reached the LB for 400 connections", pk[1])
		}
		// Closed connections keep their flow entry only briefly, so churn
		// cannot fill the flow map.
		flows, err := k.GetSetElements(&nftables.Set{Table: &nftables.Table{Name: "l4fwd", Family: nftables.TableFamilyNetdev}, Name: "d1-flows"})
		if err != nil {
			t.Fatal(err)
		}
		short := 0
		for _, f := range flows {
			if f.Timeout <= 10*time.Second {
				short++
			}
		}
		t.Logf("flow map: %d entries, %d cut to the closing timeout", len(flows), short)
		// Connections that share an address and port are one entry, and
		// this client does reuse ports within seconds (seen across the
		// subtests); one run in a hundred held 391 entries.
		if len(flows) < 380 || short < len(flows)-5 {
			t.Errorf("flow map holds %d entries, %d of them closing; want the 400 closed connections' flows closing", len(flows), short)
		}
	})

	t.Run("drain", func(t *testing.T) {
		checkDrain(t, d, client, url, ok, func(r1, r2 string) string { return fmt.Sprintf(drService, 1, r1, 1, r2) })
	})

	t.Run("a reload that changes flow_timeout keeps the flows", func(t *testing.T) {
		d.reload(t, fmt.Sprintf(drService, 1, "active", 1, "active"))
		wait.Until(t, "both servers", 5*time.Second, func() bool { return ok() == 2 })
		// The drain comes with a new flow_timeout: the held connection's
		// flow must survive the rewrite, or its next packet is hashed to
		// the other server.
		checkDrain(t, d, client, url, ok, func(r1, r2 string) string {
			return strings.Replace(fmt.Sprintf(drService, 1, r1, 1, r2), "mode dr", "mode dr\n\tflow_timeout 1m", 1)
		})
	})

	t.Run("reset_on_down", func(t *testing.T) {
		d.reload(t, strings.Replace(fmt.Sprintf(drService, 1, "active", 1, "active"), "mode dr", "mode dr\n\treset_on_down", 1))
		checkResetOnDown(t, d, client, url, rs[1], ok)
	})

	t.Run("a reused source port is scheduled anew", func(t *testing.T) {
		// Clients reuse a source port as soon as its connection is gone.
		// The old flow's entries, closing for 10 s, must not carry the new
		// connection to a server that takes no new ones.
		d.reload(t, fmt.Sprintf(drService, 1, "active", 1, "active"))
		wait.Until(t, "both servers", 5*time.Second, func() bool { return ok() == 2 })
		const from = "10.79.0.50:47001"
		first := askOnce(t, client, url, from)
		other := map[string]string{"r1": "r2", "r2": "r1"}[first]
		if other == "" {
			t.Fatalf("answered by %q", first)
		}
		states := map[string]string{first: "drain", other: "active"}
		d.reload(t, fmt.Sprintf(drService, 1, states["r1"], 1, states["r2"]))
		wait.Until(t, first+" to drain", 5*time.Second, func() bool { return ok() == 1 })
		if got := askOnce(t, client, url, from); got != other {
			t.Errorf("a new connection from %s, the port of a closed one to %s, went to %q with %s drained; want %s",
				from, first, got, first, other)
		}
	})

	t.Run("source hashing keeps a client on one server", func(t *testing.T) {
		loaded := d.logs.count("configuration in force")
		d.reload(t, strings.Replace(fmt.Sprintf(drService, 1, "active", 1, "active"), "mode dr", "mode dr\n\tscheduler source_hash", 1))
		wait.Until(t, "the reload", 5*time.Second, func() bool { return d.logs.count("configuration in force") > loaded })
		counts := requests(t, client, url, 40)
		if len(counts) != 1 || counts["error"] > 0 {
			t.Errorf("40 connections from one client went %v, want all to one server", counts)
		}
	})

	t.Run("one-arm NAT beside DR", func(t *testing.T) {
		// The same segment, a NAT service on another port: without SNAT
		// the servers would answer the client directly from their own
		// address, and the client would reset the connection.
		sysctl(t, lb, "net.ipv4.ip_forward", "1")
		d.reload(t, fmt.Sprintf(drService, 1, "active", 1, "active")+`
service onearm {
	vip 10.79.0.100
	port 8080
	snat masquerade
	real 10.79.0.11:80
	real 10.79.0.12:80
}
`)
		wait.Until(t, "the NAT service", 5*time.Second, func() bool { return setLen(k, nftables.TableFamilyIPv4, "s2-ok") == 2 })
		counts := requests(t, client, "http://10.79.0.100:8080/", 40)
		if counts["error"] > 0 || counts["r1"] == 0 || counts["r2"] == 0 {
			t.Errorf("one-arm NAT with snat went %v, want all answered by both servers", counts)
		}
		if counts := requests(t, client, url, 20); counts["error"] > 0 {
			t.Errorf("DR beside it: %v", counts)
		}
	})

	t.Run("exit removes the table", func(t *testing.T) {
		d.stop()
		for _, fam := range []nftables.TableFamily{nftables.TableFamilyNetdev, nftables.TableFamilyIPv4} {
			if tableExists(t, k, fam, "l4fwd") {
				t.Errorf("table l4fwd (family %d) still there after l4fwd exited", fam)
			}
		}
	})
}
