package haagent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// recorder is an Effects that remembers what the machine asked for.
type recorder struct {
	sent     []uint8
	moves    []string // "BACKUP>MASTER"
	reclaims int
}

func (r *recorder) Send(p uint8)   { r.sent = append(r.sent, p) }
func (r *recorder) Reclaim(string) { r.reclaims++ }
func (r *recorder) Enter(from, to State, _ string) {
	r.moves = append(r.moves, from.String()+">"+to.String())
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const ms = time.Millisecond

func newTestMachine(prio uint8, preempt bool) (*Machine, *recorder) {
	r := &recorder{}
	m := NewMachine(Params{Priority: prio, Interval: 100 * ms, Preempt: preempt, Addr: netip.MustParseAddr("10.0.0.2")}, r)
	return m, r
}

func advert(prio uint8, intervalCS uint16) *Advert {
	return &Advert{VRID: 1, Priority: prio, Interval: intervalCS, Addrs: addrs("10.0.0.100")}
}

var peer = netip.MustParseAddr("10.0.0.3")

func TestTimersFollowRFC(t *testing.T) {
	cases := []struct {
		prio     uint8
		interval time.Duration
		skew     time.Duration
		down     time.Duration
	}{
		{100, 100 * ms, 60937500 * time.Nanosecond, 360937500 * time.Nanosecond},
		{150, 100 * ms, 41406250 * time.Nanosecond, 341406250 * time.Nanosecond},
		{254, time.Second, 7812500 * time.Nanosecond, 3007812500 * time.Nanosecond},
		{1, 10 * ms, 9960937 * time.Nanosecond, 39960937 * time.Nanosecond},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("priority %d every %v", c.prio, c.interval), func(t *testing.T) {
			if got := SkewTime(c.prio, c.interval); got != c.skew {
				t.Errorf("SkewTime = %v, want %v", got, c.skew)
			}
			if got := MasterDownInterval(c.prio, c.interval); got != c.down {
				t.Errorf("MasterDownInterval = %v, want %v", got, c.down)
			}
		})
	}
}

func TestBackupTakesOverAfterMasterDownInterval(t *testing.T) {
	m, r := newTestMachine(100, true)
	m.Start(t0)
	if m.State() != Backup {
		t.Fatalf("after Start: %v, want BACKUP", m.State())
	}
	down := MasterDownInterval(100, 100*ms)
	if got := m.Deadline(); !got.Equal(t0.Add(down)) {
		t.Fatalf("Deadline = %v after start, want start + %v", got.Sub(t0), down)
	}
	m.Tick(t0.Add(down - time.Nanosecond))
	if m.State() != Backup || len(r.sent) != 0 {
		t.Fatalf("a nanosecond early: state %v, sent %v; want BACKUP and silence", m.State(), r.sent)
	}
	m.Tick(t0.Add(down))
	if m.State() != Master {
		t.Fatalf("at Master_Down_Interval: %v, want MASTER", m.State())
	}
	if !slices.Equal(r.sent, []uint8{100}) || !slices.Equal(r.moves, []string{"INIT>BACKUP", "BACKUP>MASTER"}) {
		t.Errorf("sent %v, moves %v", r.sent, r.moves)
	}
	// A master advertises every interval, counted from its last advert.
	now := t0.Add(down)
	for range 3 {
		now = now.Add(100 * ms)
		m.Tick(now)
	}
	if len(r.sent) != 4 {
		t.Errorf("after 3 intervals as master: %d adverts, want 4", len(r.sent))
	}
}

func TestBackupLearnsMasterInterval(t *testing.T) {
	m, _ := newTestMachine(100, true)
	m.Start(t0)
	now := t0.Add(50 * ms)
	m.Receive(now, advert(200, 25), peer) // master advertises every 250 ms
	want := now.Add(MasterDownInterval(100, 250*ms))
	if got := m.Deadline(); !got.Equal(want) {
		t.Errorf("down timer %v after the advert, want %v (from the master's 250 ms, not our 100)", got.Sub(now), want.Sub(now))
	}
	if m.MasterInterval() != 250*ms {
		t.Errorf("MasterInterval = %v, want 250ms", m.MasterInterval())
	}
	// Adverts keep it a backup for as long as they come.
	for range 20 {
		now = now.Add(250 * ms)
		m.Tick(now)
		m.Receive(now, advert(200, 25), peer)
	}
	if m.State() != Backup {
		t.Errorf("with a master advertising: %v, want BACKUP", m.State())
	}
}

func TestPriorityZeroHandsOverAfterSkew(t *testing.T) {
	m, _ := newTestMachine(100, true)
	m.Start(t0)
	m.Receive(t0, advert(200, 10), peer)
	m.Receive(t0.Add(10*ms), advert(0, 10), peer)
	if got, want := m.Deadline().Sub(t0.Add(10*ms)), SkewTime(100, 100*ms); got != want {
		t.Fatalf("after priority 0 the down timer runs %v, want Skew_Time %v", got, want)
	}
	m.Tick(m.Deadline())
	if m.State() != Master {
		t.Errorf("after Skew_Time: %v, want MASTER", m.State())
	}
}

func TestPreemption(t *testing.T) {
	for _, preempt := range []bool{true, false} {
		t.Run(fmt.Sprintf("preempt %v", preempt), func(t *testing.T) {
			m, _ := newTestMachine(150, preempt)
			m.Start(t0)
			now := t0
			for range 10 { // a lower-priority master keeps advertising
				now = now.Add(100 * ms)
				m.Receive(now, advert(100, 10), peer)
				m.Tick(now)
			}
			want := Backup
			if preempt {
				want = Master
			}
			if m.State() != want {
				t.Errorf("under a priority-100 master for 1s: %v, want %v", m.State(), want)
			}
		})
	}
}

func TestPreemptDelay(t *testing.T) {
	m, _ := newTestMachine(150, true)
	p := m.Params()
	p.PreemptDelay = 2 * time.Second
	m.SetParams(t0, p)
	m.Start(t0)
	now := t0
	var tookOver time.Time
	for now.Before(t0.Add(5 * time.Second)) {
		now = now.Add(100 * ms)
		m.Tick(now)
		if m.State() == Master {
			tookOver = now
			break
		}
		m.Receive(now, advert(100, 10), peer)
	}
	first := t0.Add(100 * ms) // the first lower-priority advert starts the delay
	lo, hi := first.Add(2*time.Second), first.Add(2*time.Second+MasterDownInterval(150, 100*ms)+100*ms)
	if tookOver.IsZero() || tookOver.Before(lo) || tookOver.After(hi) {
		t.Errorf("took over at %v, want between %v and %v", tookOver.Sub(t0), lo.Sub(t0), hi.Sub(t0))
	}
}

func TestMasterYields(t *testing.T) {
	higher, lower := netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.1")
	cases := []struct {
		name string
		prio uint8
		src  netip.Addr
		want State
	}{
		{"higher priority", 200, lower, Backup},
		{"equal priority, higher address", 100, higher, Backup},
		{"equal priority, lower address", 100, lower, Master},
		{"lower priority", 50, higher, Master},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, r := newTestMachine(100, true)
			m.Start(t0)
			m.Tick(m.Deadline())
			now := m.Deadline().Add(-50 * ms)
			m.Receive(now, advert(c.prio, 20), c.src)
			if m.State() != c.want {
				t.Fatalf("master hearing priority %d from %v: %v, want %v", c.prio, c.src, m.State(), c.want)
			}
			if c.want == Backup {
				if got := m.Deadline().Sub(now); got != MasterDownInterval(100, 200*ms) {
					t.Errorf("down timer %v, want Master_Down_Interval of the new master's 200 ms", got)
				}
				if r.moves[len(r.moves)-1] != "MASTER>BACKUP" {
					t.Errorf("moves %v", r.moves)
				}
			}
		})
	}
}

func TestMasterAnswersPriorityZero(t *testing.T) {
	m, r := newTestMachine(100, true)
	m.Start(t0)
	m.Tick(m.Deadline())
	now := m.Deadline().Add(-70 * ms)
	n := len(r.sent)
	m.Receive(now, advert(0, 10), peer)
	if len(r.sent) != n+1 || m.State() != Master {
		t.Fatalf("master hearing priority 0: state %v, %d adverts sent; want MASTER and one at once", m.State(), len(r.sent)-n)
	}
	if got := m.Deadline().Sub(now); got != 100*ms {
		t.Errorf("next advert in %v, want a full interval", got)
	}
}

func TestOwnerStartsAsMaster(t *testing.T) {
	m, r := newTestMachine(255, false)
	m.Start(t0)
	if m.State() != Master || !slices.Equal(r.sent, []uint8{255}) {
		t.Errorf("owner after Start: %v, sent %v; want MASTER, [255]", m.State(), r.sent)
	}
}

func TestStopSendsPriorityZero(t *testing.T) {
	m, r := newTestMachine(100, true)
	m.Start(t0)
	m.Tick(m.Deadline())
	m.Stop(t0.Add(time.Second))
	if m.State() != Init || r.sent[len(r.sent)-1] != 0 || r.moves[len(r.moves)-1] != "MASTER>INIT" {
		t.Errorf("after Stop: %v, sent %v, moves %v", m.State(), r.sent, r.moves)
	}
	if !m.Deadline().IsZero() {
		t.Errorf("a stopped machine still has a deadline")
	}
}

func TestFault(t *testing.T) {
	m, r := newTestMachine(100, true)
	m.Start(t0)
	m.Tick(m.Deadline())
	m.SetFault(t0.Add(time.Second), true, "link down")
	if m.State() != Fault || r.sent[len(r.sent)-1] != 0 {
		t.Fatalf("master on fault: %v, last advert priority %d; want FAULT, 0", m.State(), r.sent[len(r.sent)-1])
	}
	// Nothing moves it while the fault lasts: not adverts, not time.
	m.Receive(t0.Add(2*time.Second), advert(1, 10), peer)
	m.Tick(t0.Add(time.Hour))
	if m.State() != Fault {
		t.Fatalf("in fault after adverts and an hour: %v", m.State())
	}
	m.SetFault(t0.Add(time.Hour), false, "link up")
	if m.State() != Backup {
		t.Errorf("fault cleared: %v, want BACKUP", m.State())
	}
	want := []string{"INIT>BACKUP", "BACKUP>MASTER", "MASTER>FAULT", "FAULT>BACKUP"}
	if !slices.Equal(r.moves, want) {
		t.Errorf("moves %v, want %v", r.moves, want)
	}
	// A fault set before Start is honoured by Start.
	m2, _ := newTestMachine(255, true)
	m2.SetFault(t0, true, "link down")
	m2.Start(t0)
	if m2.State() != Fault {
		t.Errorf("start with fault: %v, want FAULT", m2.State())
	}
}

func TestMasterAnnouncesPriorityChange(t *testing.T) {
	m, r := newTestMachine(150, true)
	m.Start(t0)
	m.Tick(m.Deadline())
	p := m.Params()
	p.Priority = 90
	m.SetParams(m.Deadline().Add(-30*ms), p)
	if r.sent[len(r.sent)-1] != 90 {
		t.Errorf("after lowering the priority, adverts %v; want one with 90 at once", r.sent)
	}
}

// TestMasterAnswersALowerPriorityMaster: when two routers took over at
// once, the higher-priority master advertises at once and announces its
// addresses again, since the other one has announced them too; at most
// once every ReclaimEvery, whatever the other one sends.
func TestMasterAnswersALowerPriorityMaster(t *testing.T) {
	m, r := newTestMachine(150, true)
	m.Start(t0)
	up := t0.Add(MasterDownInterval(150, 100*ms))
	m.Tick(up)
	if m.State() != Master {
		t.Fatalf("state %v, want MASTER", m.State())
	}
	sent := len(r.sent)
	steps := []struct {
		after    time.Duration
		prio     uint8
		from     netip.Addr
		adverts  int
		reclaims int
	}{
		{10 * ms, 100, peer, 1, 1},                     // lower priority: answered
		{50 * ms, 100, peer, 1, 1},                     // again within ReclaimEvery: not
		{10*ms + ReclaimEvery, 100, peer, 2, 2},        // a second later: answered
		{10*ms + ReclaimEvery + 5*ms, 150, peer, 2, 2}, // equal priority, higher address: we yield
	}
	for i, st := range steps {
		m.Receive(up.Add(st.after), advert(st.prio, 10), st.from)
		if got := len(r.sent) - sent; got != st.adverts || r.reclaims != st.reclaims {
			t.Fatalf("step %d: %d adverts and %d reclaims, want %d and %d", i, got, r.reclaims, st.adverts, st.reclaims)
		}
	}
	if m.State() != Backup {
		t.Fatalf("after an equal-priority master with a higher address: %v, want BACKUP", m.State())
	}
}

// net is a virtual LAN of machines for simulations in virtual time: an
// advert reaches every other live machine after delay.
type simNet struct {
	now     time.Time
	delay   time.Duration
	routers []*simRouter
	queue   []simPacket
}

type simRouter struct {
	n     *simNet
	m     *Machine
	addr  netip.Addr
	alive bool
}

type simPacket struct {
	at   time.Time
	from *simRouter
	prio uint8
	ivl  uint16
}

func (r *simRouter) Send(p uint8) {
	r.n.queue = append(r.n.queue, simPacket{r.n.now.Add(r.n.delay), r, p, uint16(r.m.Params().Interval / (10 * ms))})
}
func (r *simRouter) Enter(from, to State, why string) {}
func (r *simRouter) Reclaim(string)                   {}

func (n *simNet) add(prio uint8, last byte, preempt bool) *simRouter {
	r := &simRouter{n: n, addr: netip.AddrFrom4([4]byte{10, 0, 0, last}), alive: true}
	r.m = NewMachine(Params{Priority: prio, Interval: 100 * ms, Preempt: preempt, Addr: r.addr}, r)
	n.routers = append(n.routers, r)
	return r
}

// run advances virtual time to until, delivering packets and firing timers
// in order, and calls check after every event.
func (n *simNet) run(until time.Time, check func()) {
	for {
		next, pkt := until, -1
		for i, p := range n.queue {
			if p.at.Before(next) {
				next, pkt = p.at, i
			}
		}
		for _, r := range n.routers {
			if d := r.m.Deadline(); r.alive && !d.IsZero() && d.Before(next) {
				next, pkt = d, -1
			}
		}
		n.now = next
		if pkt >= 0 {
			p := n.queue[pkt]
			n.queue = slices.Delete(n.queue, pkt, pkt+1)
			for _, r := range n.routers {
				if r != p.from && r.alive {
					r.m.Receive(n.now, &Advert{VRID: 1, Priority: p.prio, Interval: p.ivl, Addrs: addrs("10.0.0.100")}, p.from.addr)
				}
			}
		} else {
			for _, r := range n.routers {
				if r.alive {
					r.m.Tick(n.now)
				}
			}
		}
		if check != nil {
			check()
		}
		if !n.now.Before(until) {
			return
		}
	}
}

func (n *simNet) masters() []string {
	var out []string
	for _, r := range n.routers {
		if r.alive && r.m.State() == Master {
			out = append(out, r.addr.String())
		}
	}
	return out
}

// TestSimulatedElection runs three routers on a virtual LAN: the highest
// priority wins, a crash of the master hands over to the next within its
// Master_Down_Interval, and there is one master at a time throughout,
// apart from the handover instant while an advert is on the wire.
func TestSimulatedElection(t *testing.T) {
	n := &simNet{now: t0, delay: ms}
	a, b, c := n.add(100, 1, true), n.add(200, 2, true), n.add(150, 3, true)
	for _, r := range n.routers {
		r.m.Start(t0)
	}
	var dualSince time.Time
	check := func() {
		if len(n.masters()) > 1 {
			if dualSince.IsZero() {
				dualSince = n.now
			}
			if n.now.Sub(dualSince) > n.delay { // longer than an advert takes to arrive
				t.Fatalf("two masters for %v at %v: %s", n.now.Sub(dualSince), n.now.Sub(t0), strings.Join(n.masters(), ", "))
			}
		} else {
			dualSince = time.Time{}
		}
	}
	n.run(t0.Add(2*time.Second), check)
	if got := n.masters(); !slices.Equal(got, []string{b.addr.String()}) {
		t.Fatalf("masters after 2s: %v, want the priority-200 router", got)
	}
	crash := n.now.Add(37 * ms) // off the advert phase
	n.run(crash, check)
	b.alive = false
	var took time.Time
	n.run(crash.Add(2*time.Second), func() {
		check()
		if took.IsZero() && c.m.State() == Master {
			took = n.now
		}
	})
	if limit := MasterDownInterval(150, 100*ms); took.IsZero() || took.Sub(crash) > limit {
		t.Errorf("priority 150 took over %v after the crash, want within Master_Down_Interval %v", took.Sub(crash), limit)
	}
	if a.m.State() != Backup {
		t.Errorf("priority 100 is %v, want BACKUP", a.m.State())
	}
	// The crashed master comes back and preempts.
	b.alive = true
	b.m = NewMachine(b.m.Params(), b)
	b.m.Start(n.now)
	n.run(n.now.Add(2*time.Second), check)
	if got := n.masters(); !slices.Equal(got, []string{b.addr.String()}) {
		t.Errorf("after the priority-200 router returns: masters %v", got)
	}
}
