package l4fwd_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/sluicelb/sluice/internal/wait"
)

// natTopology builds a two-arm NAT set-up: the client on 10.78.1.0/24,
// the load balancer (VIP 10.78.1.100) routing to the real servers on
// 10.78.2.0/24, whose gateway it is.
//
//	l4t-nc [l4t-c 10.78.1.2-.20] ── [l4t-lc 10.78.1.1, VIP] l4t-nlb [l4t-br 10.78.2.1] ── l4t-nr1 10.78.2.11
//	                                                                                  └─ l4t-nr2 10.78.2.12
func natTopology(t *testing.T) (client, lb string, rs []string) {
	t.Helper()
	needRoot(t)
	removeStale()
	client, lb = addNS(t, prefix+"nc"), addNS(t, prefix+"nlb")
	ip(t, "link", "add", prefix+"c", "netns", client, "type", "veth", "peer", "name", prefix+"lc", "netns", lb)
	for i := 2; i <= 20; i++ {
		ip(t, "-n", client, "addr", "add", fmt.Sprintf("10.78.1.%d/24", i), "dev", prefix+"c")
	}
	ip(t, "-n", client, "link", "set", prefix+"c", "up")
	ip(t, "-n", client, "route", "add", "default", "via", "10.78.1.1")
	ip(t, "-n", lb, "addr", "add", "10.78.1.1/24", "dev", prefix+"lc")
	ip(t, "-n", lb, "addr", "add", "10.78.1.100/32", "dev", prefix+"lc")
	ip(t, "-n", lb, "link", "set", prefix+"lc", "up")
	ip(t, "-n", lb, "link", "add", prefix+"br", "type", "bridge")
	ip(t, "-n", lb, "addr", "add", "10.78.2.1/24", "dev", prefix+"br")
	ip(t, "-n", lb, "link", "set", prefix+"br", "up")
	sysctl(t, lb, "net.ipv4.ip_forward", "1")
	for i := 1; i <= 2; i++ {
		r := addNS(t, fmt.Sprintf("%snr%d", prefix, i))
		port := fmt.Sprintf("%sp%d", prefix, i)
		ip(t, "link", "add", prefix+"e", "netns", r, "type", "veth", "peer", "name", port, "netns", lb)
		ip(t, "-n", lb, "link", "set", port, "master", prefix+"br", "up")
		ip(t, "-n", r, "addr", "add", fmt.Sprintf("10.78.2.1%d/24", i), "dev", prefix+"e")
		ip(t, "-n", r, "link", "set", prefix+"e", "up")
		ip(t, "-n", r, "route", "add", "default", "via", "10.78.2.1")
		rs = append(rs, r)
	}
	return client, lb, rs
}

const natService = `
service web {
	vip 10.78.1.100
	port 80
	mode nat
	health http /health
	interval 500ms
	timeout 400ms
	rise 2
	fall 2
	real 10.78.2.11 weight %d state %s
	real 10.78.2.12 weight %d state %s
}
`

func natConfig(w1 int, s1 string, w2 int, s2 string) string {
	return fmt.Sprintf(natService, w1, s1, w2, s2)
}

// share is count's fraction of every answer, failing on errors.
func share(t *testing.T, counts map[string]int, name string) float64 {
	t.Helper()
	if counts["error"] > 0 {
		t.Fatalf("%d requests failed: %v", counts["error"], counts)
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(counts[name]) / float64(total)
}

// checkThreeToOne makes 400 new connections to url from ns and checks
// that r1, weighted 3 to r2's 1, took 75% ± 7% of them.
func checkThreeToOne(t *testing.T, ns, url string) map[string]int {
	t.Helper()
	counts := requests(t, ns, url, 400)
	got := share(t, counts, "r1")
	t.Logf("3:1 over 400 new connections: %v (r1 %.1f%%)", counts, got*100)
	if got < 0.68 || got > 0.82 {
		t.Errorf("r1 took %.1f%% of new connections, want 75%% ± 7%%", got*100)
	}
	return counts
}

// TestNAT runs l4fwd as a two-arm NAT balancer and exercises, in order:
// weights, health, persistence, drain, a refused reload and clean exit.
func TestNAT(t *testing.T) {
	client, lb, rs := natTopology(t)
	top := t // a process that outlives its subtest starts here
	servers := []*proc{server(t, rs[0], "r1", ":80"), server(t, rs[1], "r2", ":80")}
	replies := newProbe(t, lb, nftables.TableFamilyIPv4, "")
	replies.count(t, true, netip.MustParsePrefix("10.78.2.0/24"))  // real servers → client
	replies.count(t, false, netip.MustParsePrefix("10.78.2.0/24")) // client → real servers
	d := startDaemon(t, lb, natConfig(3, "active", 1, "active"))
	k := nftIn(t, lb)
	ok := func() int { return setLen(k, nftables.TableFamilyIPv4, "s1-ok") }
	wait.Until(t, "the ruleset", 10*time.Second, func() bool { return ok() == 2 })
	const vip = "http://10.78.1.100/"

	t.Run("weights", func(t *testing.T) {
		counts := checkThreeToOne(t, client, vip)
		// NAT deals new connections in turn (a a b a), so any 400 in a
		// row hold exactly 300 for r1; a random draw would miss by ±9.
		if counts["r1"] != 300 {
			t.Errorf("r1 took %d of 400 new connections, want 300: NAT should take the servers in turn", counts["r1"])
		}
		pk := replies.packets(t)
		if pk[0] == 0 || pk[1] == 0 {
			t.Errorf("LB forwarded %d reply and %d request packets; in NAT replies must pass the LB", pk[0], pk[1])
		}
		c := newConnCounters(t, k, nftables.TableFamilyIPv4, "s1-new")
		if c[0] != uint64(counts["r1"]) || c[1] != uint64(counts["r2"]) {
			t.Errorf("kernel new-connection counters %v, clients saw %v", c, counts)
		}
	})

	t.Run("health", func(t *testing.T) {
		const bound = 2 * 500 * time.Millisecond // interval × fall
		// A server's first round decides at once; wait until r2 has passed
		// two, so it is known up and must fall through fall failed rounds.
		wait.Until(t, "r2 to answer two health checks", 3*time.Second, func() bool {
			return servers[1].logs.count("health check answered") >= 2
		})
		servers[1].stop()
		stopped := time.Now()
		wait.Until(t, "r2 to leave the scheduler", bound+time.Second, func() bool { return ok() == 1 })
		took := time.Since(stopped)
		t.Logf("r2 left the kernel maps %v after its listener stopped (interval × fall = %v)", took, bound)
		if took > bound+500*time.Millisecond { // slack for a loaded machine
			t.Errorf("r2 left after %v, want within interval × fall = %v", took, bound)
		}
		if counts := requests(t, client, vip, 40); counts["r1"] != 40 {
			t.Errorf("with r2 down, new connections went %v, want all 40 to r1", counts)
		}
		servers[1] = server(top, rs[1], "r2", ":80")
		wait.Until(t, "r2 to return", 2*time.Second+time.Second, func() bool { return ok() == 2 })
		if counts := requests(t, client, vip, 100); counts["r2"] < 5 {
			t.Errorf("r2 came back but took %v", counts)
		}
	})

	t.Run("persistence", func(t *testing.T) {
		cfg := strings.Replace(natConfig(1, "active", 1, "active"), "mode nat", "mode nat\n\tpersist 30s", 1) + `
service plain {
	vip 10.78.1.100
	port 8080
	real 10.78.2.11:80
	real 10.78.2.12:80
}
`
		d.reload(t, cfg)
		wait.Until(t, "persistence", 5*time.Second, func() bool {
			return setLen(k, nftables.TableFamilyIPv4, "s1-persist") >= 0 && setLen(k, nftables.TableFamilyIPv4, "s2-ok") == 2
		})
		one := requestsFrom(t, client, vip, 100, "10.78.1.2")["10.78.1.2"]
		if len(one) != 1 || one["error"] > 0 {
			t.Errorf("100 connections of one client went %v, want all to one real server", one)
		}
		var others []string
		for i := 3; i <= 18; i++ {
			others = append(others, fmt.Sprintf("10.78.1.%d", i))
		}
		perClient := requestsFrom(t, client, vip, 3, others...)
		landed := map[string]int{}
		for src, counts := range perClient {
			if len(counts) != 1 || counts["error"] > 0 {
				t.Errorf("client %s went %v, want one real server", src, counts)
			}
			for name := range counts {
				landed[name]++
			}
		}
		if len(landed) != 2 {
			t.Errorf("16 persistent clients landed %v: they should spread over both servers", landed)
		}
		spread := requestsFrom(t, client, "http://10.78.1.100:8080/", 100, "10.78.1.19")["10.78.1.19"]
		if spread["r1"] < 25 || spread["r2"] < 25 {
			t.Errorf("a client of the service without persistence went %v, want spread over both", spread)
		}
	})

	t.Run("drain", func(t *testing.T) {
		d.reload(t, natConfig(1, "active", 1, "active"))
		wait.Until(t, "reload", 5*time.Second, func() bool { return setLen(k, nftables.TableFamilyIPv4, "s2-ok") == -1 })
		checkDrain(t, d, client, vip, ok, func(r1, r2 string) string { return natConfig(1, r1, 1, r2) })
	})

	t.Run("reset_on_down", func(t *testing.T) {
		d.reload(t, strings.Replace(natConfig(1, "active", 1, "active"), "mode nat", "mode nat\n\treset_on_down", 1))
		checkResetOnDown(t, d, client, vip, rs[1], ok)
	})

	t.Run("client limit", func(t *testing.T) {
		d.reload(t, strings.Replace(natConfig(1, "active", 1, "active"), "mode nat", "mode nat\n\tclient_limit 2", 1))
		// Wait for the client set to exist.
		wait.Until(t, "the client limit", 5*time.Second, func() bool { return setLen(k, nftables.TableFamilyIPv4, "s1-clients") != -1 })
		for range 2 { // two connections held open from 10.78.1.2
			if name, _ := start(t, client, "hold", vip).ask(t); name == "error" {
				t.Fatal("a connection within the limit failed")
			}
		}
		third := requestsWithin(t, client, vip, 1, 2*time.Second, "10.78.1.2")["10.78.1.2"]
		if third["error"] != 1 {
			t.Errorf("a third connection from a client limited to 2 went %v, want it dropped", third)
		}
		if other := requestsFrom(t, client, vip, 5, "10.78.1.20")["10.78.1.20"]; other["error"] > 0 {
			t.Errorf("another client was limited too: %v", other)
		}
	})

	t.Run("max_conns", func(t *testing.T) {
		capped := func(r2 string) string {
			return strings.Replace(natConfig(1, "active", 19, r2), "10.78.2.11 weight 1", "10.78.2.11 weight 1 max_conns 1", 1)
		}
		d.reload(t, capped("offline"))
		wait.Until(t, "r2 offline", 5*time.Second, func() bool { return ok() == 1 })
		if name, _ := start(t, client, "hold", vip).ask(t); name != "r1" {
			t.Fatalf("the only eligible server is r1, the held connection went to %q", name)
		}
		// r2 back: r1's limit chain is untouched, so its count still holds
		// the connection above.
		d.reload(t, capped("active"))
		wait.Until(t, "r2 active", 5*time.Second, func() bool { return ok() == 2 })
		// A connection drawn to full r1 is dropped; its SYN, retransmitted
		// after a second, is drawn anew.
		if counts := requestsWithin(t, client, vip, 20, 10*time.Second)[""]; counts["r2"] != 20 {
			t.Errorf("with r1 at max_conns 1, new connections went %v, want all 20 to r2", counts)
		}
	})

	t.Run("min_conns", func(t *testing.T) {
		thresholds := func(r2 string) string {
			return strings.Replace(natConfig(1, "active", 1, r2), "10.78.2.11 weight 1", "10.78.2.11 weight 1 max_conns 2 min_conns 1", 1)
		}
		d.reload(t, thresholds("offline"))
		wait.Until(t, "r2 offline", 5*time.Second, func() bool { return slices.Equal(members(k, "s1-ok"), []int{1}) })
		var holds []*proc
		for range 2 {
			h := start(t, client, "hold", vip)
			if name, _ := h.ask(t); name != "r1" {
				t.Fatalf("the only eligible server is r1, a held connection went to %q", name)
			}
			holds = append(holds, h)
		}
		d.reload(t, thresholds("active"))
		// r1 holds max_conns: the daemon's next count takes it out.
		wait.Until(t, "r1 to leave the scheduler when full", 5*time.Second, func() bool { return slices.Equal(members(k, "s1-ok"), []int{2}) })
		if counts := requests(t, client, vip, 10); counts["r2"] != 10 {
			t.Errorf("with r1 full, new connections went %v, want all 10 to r2 and none dropped", counts)
		}
		for _, h := range holds {
			h.stop()
		}
		wait.Until(t, "r1 to return below min_conns", 5*time.Second, func() bool { return slices.Equal(members(k, "s1-ok"), []int{1, 2}) })
	})

	t.Run("synproxy", func(t *testing.T) {
		d.reload(t, strings.Replace(natConfig(1, "active", 1, "active"), "mode nat", "mode nat\n\tsynproxy", 1))
		wait.Until(t, "synproxy", 5*time.Second, func() bool { return setLen(k, nftables.TableFamilyIPv4, "synproxy") == 1 })
		if loose := strings.TrimSpace(ip(t, "netns", "exec", lb, "sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose")); loose != "0" {
			t.Errorf("nf_conntrack_tcp_loose = %s under synproxy, want 0", loose)
		}
		// A handshake the real server refuses to complete shows as its
		// TcpExtTSEcrRejected counter, and as a request that waits for
		// the server's SYN-ACK retransmit, a second or more.
		rejected := func() (n int64) {
			for _, ns := range rs {
				n += tcpExtCounter(t, ns, "TSEcrRejected")
			}
			return n
		}
		before := rejected()
		counts := requestsWithin(t, client, vip, 40, 900*time.Millisecond)[""]
		t.Logf("through synproxy: %v", counts)
		if counts["error"] > 0 || counts["r1"] == 0 || counts["r2"] == 0 {
			t.Errorf("40 connections through synproxy went %v, want all answered within 900ms by both servers", counts)
		}
		if n := rejected() - before; n != 0 {
			t.Errorf("the real servers refused %d handshake ACKs from synproxy (TcpExtTSEcrRejected)", n)
		}
	})

	t.Run("bad reload keeps the old configuration", func(t *testing.T) {
		// The configuration in force has synproxy on (the previous
		// subtest); the refused one has it off and adds a service.
		d.reload(t, natConfig(1, "active", 1, "active")+strings.Replace(natConfig(1, "active", 1, "active"), "service web", "service web2", 1))
		wait.Until(t, "the refusal", 5*time.Second, func() bool { return d.logs.count("reload refused") == 1 })
		if !strings.Contains(d.logs.text.String(), "overlaps service web") {
			t.Error("the refusal does not say the VIPs overlap")
		}
		if got := setLen(k, nftables.TableFamilyIPv4, "synproxy"); got != 1 {
			t.Errorf("synproxy set has %d elements after a refused reload, want the 1 in force", got)
		}
		if got := setLen(k, nftables.TableFamilyIPv4, "s2-ok"); got != -1 {
			t.Errorf("the refused service web2 has kernel objects (%d elements)", got)
		}
		if counts := requests(t, client, vip, 10); counts["error"] > 0 {
			t.Errorf("traffic after a refused reload: %v", counts)
		}
	})

	t.Run("exit removes the table", func(t *testing.T) {
		d.stop()
		if tableExists(t, k, nftables.TableFamilyIPv4, "l4fwd") {
			t.Error("table ip l4fwd still there after l4fwd exited")
		}
	})
}
