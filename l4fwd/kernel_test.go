package l4fwd

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/sluicelb/sluice/internal/nstest"
)

// kernelIn returns an NFT programming a fresh namespace of the test's own.
func kernelIn(t *testing.T) (*NFT, *nftables.Conn) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("Test requires root privileges: it programs nftables in a network namespace.")
	}
	const ns = "l4t-k"
	_ = nstest.RemoveNS(ns) // a leftover of a run that died
	if err := nstest.IP("netns", "add", ns); err != nil {
		t.Skipf("Test requires ip netns (iproute2): %v", err)
	}
	t.Cleanup(func() { _ = nstest.RemoveNS(ns) })
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	k, err := NewNFT(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return k, c
}

func chainNames(t *testing.T, c *nftables.Conn, fam nftables.TableFamily) []string {
	t.Helper()
	chains, err := c.ListChainsOfTableFamily(fam)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range chains {
		out = append(out, ch.Name)
	}
	return out
}

// TestKernel commits real rulesets: the first replaces a stale table, one
// the kernel refuses leaves the previous in force, and Remove cleans up.
func TestKernel(t *testing.T) {
	k, c := kernelIn(t)

	// A stale table from a run that died, with a chain l4fwd never makes.
	stale := c.AddTable(&nftables.Table{Name: "l4fwd", Family: nftables.TableFamilyIPv4})
	c.AddChain(&nftables.Chain{Name: "leftover", Table: stale})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	d := desiredFrom(t, natText("\n\tpersist 1m\n\tclient_limit 20\n\tsynproxy")+`
service db {
	vip 192.0.2.20
	port all
	health none
	snat 10.0.9.1
	real 10.0.2.21 max_conns 100
}
`)
	if _, err := k.Apply(d); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	chains := strings.Join(chainNames(t, c, nftables.TableFamilyIPv4), " ")
	if strings.Contains(chains, "leftover") || !strings.Contains(chains, "s1-new") || !strings.Contains(chains, "synproxy_input") {
		t.Errorf("chains after the first apply: %s", chains)
	}

	// A DR service whose real server has a malformed MAC: the kernel
	// refuses the element, and with it the whole transaction.
	bad := desiredFrom(t, natText(""))
	dr := desiredFrom(t, drText()).Services[0]
	dr.ID = 9
	dr.Reals[0].MAC = net.HardwareAddr{1, 2, 3}
	bad.Services = append(bad.Services, dr)
	if _, err := k.Apply(bad); err == nil {
		t.Fatal("the kernel accepted a 3-byte MAC address")
	} else {
		t.Logf("refused as expected: %v", err)
	}
	if got := chainNames(t, c, nftables.TableFamilyNetdev); len(got) != 0 {
		t.Errorf("netdev chains %v after a refused transaction, want none", got)
	}
	if !strings.Contains(strings.Join(chainNames(t, c, nftables.TableFamilyIPv4), " "), "s2-new") {
		t.Error("the refused transaction removed the previous ruleset's service db")
	}

	// The next transaction starts from what the kernel really holds.
	next := desiredFrom(t, natText(""), "10.0.2.12:80")
	if _, err := k.Apply(next); err != nil {
		t.Fatalf("apply after a refusal: %v", err)
	}
	elems, err := c.GetSetElements(&nftables.Set{Table: stale, Name: "s1-ok"})
	if err != nil || len(elems) != 1 {
		t.Errorf("s1-ok = %d elements (%v), want r1 alone", len(elems), err)
	}
	counters, err := k.Counters(next)
	if err != nil || len(counters[0]) != 2 {
		t.Errorf("counters: %v %v", counters, err)
	}

	if err := k.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyNetdev} {
		if tables, _ := c.ListTablesOfFamily(fam); len(tables) != 0 {
			t.Errorf("%d tables of family %d left after Remove", len(tables), fam)
		}
	}
}
