package l4fwd

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/health"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// fakeKernel records what it is asked to serve, and fails when told.
type fakeKernel struct {
	mu      sync.Mutex
	applied []*Desired
	fail    error
	removed bool
}

func (k *fakeKernel) Apply(d *Desired) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail != nil {
		return nil, k.fail
	}
	k.applied = append(k.applied, d)
	return nil, nil
}

func (k *fakeKernel) Counters(d *Desired) ([][]Counters, error) {
	out := make([][]Counters, len(d.Services))
	for i, s := range d.Services {
		out[i] = make([]Counters, len(s.Reals))
	}
	return out, nil
}

func (k *fakeKernel) ForgetFlows(*Desired, int, int) (int, error) { return 0, nil }

func (k *fakeKernel) Remove() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removed = true
	return nil
}

// eligible returns, from the last state applied, whether each real server
// of the first service takes new connections.
func (k *fakeKernel) eligible() []bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []bool
	for _, r := range k.applied[len(k.applied)-1].Services[0].Reals {
		out = append(out, r.Eligible)
	}
	return out
}

// fakeNet is a host where every address is on eth0.
type fakeNet struct{}

func (fakeNet) Route(netip.Addr) (Route, error) { return Route{Device: "eth0"}, nil }
func (fakeNet) Device(string) (Device, error) {
	return Device{Index: 2, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}, nil
}
func (fakeNet) Connections() (map[uint32]int, error)  { return nil, nil }
func (fakeNet) ForgetConnections(uint32) (int, error) { return 0, nil }
func (fakeNet) Neighbor(_ int, a netip.Addr) (net.HardwareAddr, error) {
	b := a.As4()
	return net.HardwareAddr{2, 0, b[0], b[1], b[2], b[3]}, nil
}

// scripted fails its check for the targets it is told to.
type scripted struct {
	mu      sync.Mutex
	failing map[string]bool
}

func (s *scripted) Name() string { return "scripted" }
func (s *scripted) Check(_ context.Context, target string) health.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing[target] {
		return health.Result{Err: errors.New("scripted failure")}
	}
	return health.Result{}
}
func (s *scripted) set(target string, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing[target] = fail
}

const timedConfig = `
service web {
	vip 192.0.2.10
	port 80
	interval 2s
	rise 2
	fall 3
	real 10.0.2.11
	real 10.0.2.12
}
`

func newTestBalancer(t *testing.T, k Kernel, chk health.Checker) *Balancer {
	b := NewBalancer(zap.NewNop(), k, fakeNet{})
	b.newChecker = func(HealthConfig) health.Checker { return chk }
	t.Cleanup(func() { b.Close() })
	return b
}

// TestHealthTiming runs the daemon's health loop in virtual time: a real
// server that starts failing leaves the kernel's maps within interval ×
// fall, and comes back after rise passed rounds.
func TestHealthTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval, fall, rise = 2 * time.Second, 3, 2
		cfg, err := ParseConfig("t.conf", timedConfig)
		if err != nil {
			t.Fatal(err)
		}
		k := &fakeKernel{}
		chk := &scripted{failing: map[string]bool{}}
		b := newTestBalancer(t, k, chk)
		start := time.Now()
		if err := b.Load(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		at := func(d time.Duration) { // advance to start+d and let the loop settle
			time.Sleep(time.Until(start.Add(d)))
			synctest.Wait()
		}
		at(3 * time.Second) // one passed round, at 2s
		chk.set("10.0.2.12:80", true)
		// Rounds at 4s, 6s and 8s fail; the third takes it out.
		at(8*time.Second - time.Millisecond)
		if got := k.eligible(); !got[1] {
			t.Fatalf("r2 left after %d failed rounds, before fall (%d)", 2, fall)
		}
		at(8 * time.Second)
		if got := k.eligible(); got[1] || !got[0] {
			t.Fatalf("after %d failed rounds eligible = %v, want only r1", fall, got)
		}
		chk.set("10.0.2.12:80", false)
		// Rounds at 10s and 12s pass; the second brings it back.
		at(12*time.Second - time.Millisecond)
		if got := k.eligible(); got[1] {
			t.Fatalf("r2 returned after one passed round, before rise (%d)", rise)
		}
		at(12 * time.Second)
		if got := k.eligible(); !got[1] {
			t.Fatalf("r2 not back after %d passed rounds", rise)
		}
		if n := len(k.applied); n != 3 {
			t.Errorf("%d kernel transactions, want 3 (load, down, up)", n)
		}
	})
}

// forgetNet records which ct marks' connections it was told to forget.
type forgetNet struct {
	fakeNet
	mu     sync.Mutex
	forgot []uint32
}

func (n *forgetNet) ForgetConnections(mark uint32) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.forgot = append(n.forgot, mark)
	return 1, nil
}

func (n *forgetNet) marks() []uint32 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.forgot)
}

// TestResetOnDown: a reset_on_down service forgets a real server's
// connections once, when health checks take it out, and again only after
// it came back and went down anew; a service without it forgets nothing.
func TestResetOnDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, err := ParseConfig("t.conf", strings.Replace(timedConfig, "port 80", "port 80\n\treset_on_down", 1)+`
service api {
	vip 192.0.2.10
	port 81
	interval 2s
	real 10.0.2.12:80
}
`)
		if err != nil {
			t.Fatal(err)
		}
		n := &forgetNet{}
		chk := &scripted{failing: map[string]bool{}}
		b := NewBalancer(zap.NewNop(), &fakeKernel{}, n)
		b.newChecker = func(HealthConfig) health.Checker { return chk }
		t.Cleanup(func() { b.Close() })
		start := time.Now()
		if err := b.Load(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		at := func(d time.Duration) {
			time.Sleep(time.Until(start.Add(d)))
			synctest.Wait()
		}
		r2 := b.desired.Services[0].Reals[1].Mark
		chk.set("10.0.2.12:80", true)
		at(7 * time.Second) // failed rounds at 0s (the first decides at once), 2s, 4s, 6s
		if got := n.marks(); !slices.Equal(got, []uint32{r2}) {
			t.Fatalf("forgotten marks %#x, want r2's of web only (%#x)", got, r2)
		}
		chk.set("10.0.2.12:80", false)
		at(11 * time.Second) // back after rise (2) passed rounds
		if !b.desired.Services[0].Reals[1].Eligible {
			t.Fatal("r2 did not come back")
		}
		chk.set("10.0.2.12:80", true)
		at(19 * time.Second)
		if got := n.marks(); !slices.Equal(got, []uint32{r2, r2}) {
			t.Errorf("forgotten marks %#x, want r2's twice (down, up, down)", got)
		}
	})
}

// TestReloadRefusedByKernel: when the kernel refuses a new configuration,
// the old one stays in force, operator states included.
func TestReloadRefusedByKernel(t *testing.T) {
	k := &fakeKernel{}
	b := newTestBalancer(t, k, nil)
	old, err := ParseConfig("t.conf", timedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Load(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	next, err := ParseConfig("t.conf", strings.Replace(timedConfig, "real 10.0.2.12", "real 10.0.2.12 state drain", 1))
	if err != nil {
		t.Fatal(err)
	}
	k.fail = errors.New("netlink receive: invalid argument")
	if err := b.Load(t.Context(), next); err == nil {
		t.Fatal("Load succeeded although the kernel refused it")
	}
	st, _ := b.Status()
	if st.Failures != 1 || st.LastError == "" {
		t.Errorf("status after the refusal: %+v", st)
	}
	if r := st.Services[0].Reals[1]; r.State != "active" || r.Share != 0.5 {
		t.Errorf("r2 after a refused drain: %+v, want active with half the slots", r)
	}
	be, _ := b.backends.Lookup("10.0.2.12:80")
	if be.Admin() != pool.Active {
		t.Errorf("backend admin state %v after the refused reload, want active", be.Admin())
	}
	k.fail = nil
	before := len(k.applied)
	b.reconcile("test")
	if len(k.applied) != before+1 {
		t.Fatalf("reconcile made %d kernel transactions, want 1", len(k.applied)-before)
	}
	if got := k.eligible(); !got[1] {
		t.Error("the next commit lost r2: it must follow the configuration in force")
	}
}

// TestStatusEndpoint reads /status, /metrics and the -status command's
// output from a balancer with counters.
func TestStatusEndpoint(t *testing.T) {
	k := &countingKernel{fakeKernel: &fakeKernel{}}
	b := newTestBalancer(t, k, nil)
	cfg, err := ParseConfig("t.conf", timedConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Load(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(b.Handler())
	defer srv.Close()

	var out strings.Builder
	if err := printStatus(t.Context(), strings.TrimPrefix(srv.URL, "http://"), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"service web tcp 192.0.2.10:80 (nat)",
		"10.0.2.11:80 active weight 1 share 50.0% packets 10 bytes 1000 new 2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`sluice_l4_real_packets_total{real="10.0.2.12:80",service="web"} 20`,
		`sluice_l4_real_new_connections_total{real="10.0.2.11:80",service="web"} 2`,
		`sluice_l4_commits_total 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// countingKernel reports made-up counters: server j has 10×(j+1) packets.
type countingKernel struct{ *fakeKernel }

func (k *countingKernel) Counters(d *Desired) ([][]Counters, error) {
	out := make([][]Counters, len(d.Services))
	for i, s := range d.Services {
		for j := range s.Reals {
			n := uint64(10 * (j + 1))
			out[i] = append(out[i], Counters{Packets: n, Bytes: 100 * n, NewConns: uint64(2 * (j + 1))})
		}
	}
	return out, nil
}

// connNet reports the open connections it is given, by ct mark.
type connNet struct {
	fakeNet
	open map[uint32]int
}

func (n *connNet) Connections() (map[uint32]int, error) { return n.open, nil }

// TestFullPrimaryLeavesItToTheStandby: a primary at max_conns is held in
// its pool, so the standby takes new connections until the primary is
// below min_conns again, rather than nobody.
func TestFullPrimaryLeavesItToTheStandby(t *testing.T) {
	k, n := &fakeKernel{}, &connNet{}
	b := NewBalancer(zap.NewNop(), k, n)
	b.newChecker = func(HealthConfig) health.Checker { return nil }
	t.Cleanup(func() { b.Close() })
	cfg, err := ParseConfig("t.conf", `
service db {
	vip 192.0.2.10
	port 5432
	health none
	real 10.0.2.11 max_conns 10 min_conns 5
	real 10.0.2.12 state standby
}
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Load(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := k.eligible(); !slices.Equal(got, []bool{true, false}) {
		t.Fatalf("at start eligible = %v, want the primary only", got)
	}
	l := b.services[0]
	mark := markOf(l.id, l.realIDs[0])
	for _, step := range []struct {
		open int
		want []bool
	}{
		{10, []bool{false, true}}, // full: the standby serves
		{6, []bool{false, true}},  // still above min_conns
		{4, []bool{true, false}},  // below it: the primary is back
	} {
		n.open = map[uint32]int{mark: step.open}
		before := l.pool.Snapshot()
		held := before.Members[0].Held
		b.round(t.Context(), l)
		if got := k.eligible(); !slices.Equal(got, step.want) {
			t.Fatalf("with %d open connections eligible = %v, want %v", step.open, got, step.want)
		}
		if before.Members[0].Held != held {
			t.Fatal("holding the primary wrote into a snapshot already published")
		}
	}
}
