package haagent

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicelb/sluice/lbcore/notify"
)

// More reasons an advert is dropped, found above the codec.
var (
	ErrTTL  = errors.New("TTL or hop limit is not 255: forwarded from another link")
	ErrVRID = errors.New("VRID is not ours")
	ErrPeer = errors.New("unicast advert from an address that is not a configured peer")
)

// drops counts dropped adverts by reason. Safe for concurrent use.
type drops struct {
	mu sync.Mutex
	n  map[string]uint64
}

// add counts one drop and returns the count so far for that reason.
func (d *drops) add(reason error) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = map[string]uint64{}
	}
	d.n[reason.Error()]++
	return d.n[reason.Error()]
}

func (d *drops) snapshot() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]uint64, len(d.n))
	for k, v := range d.n {
		out[k] = v
	}
	return out
}

// instance runs one virtual router: its state machine, sockets, addresses
// and tracked items. Everything but the socket reader and the trackers
// happens on the goroutine of run, so none of it needs a lock.
type instance struct {
	cfg     *RouterConfig
	log     *zap.Logger
	h       *netlink.Handle
	ifi     *net.Interface
	conn    *conn
	vips    *vips
	ann     *announcer
	m       *Machine
	publish func(notify.Event)
	notes   *notifier

	items    []*trackItem
	started  bool
	stopping bool           // shutting down: addresses are released by handOver
	held     []netip.Prefix // the virtual addresses we put on the link
	stopAnn  context.CancelFunc

	inbox   chan packet
	updates chan trackUpdate
	reloads chan *RouterConfig
	done    chan struct{}

	drops        drops
	foreignLists atomic.Uint64 // adverts (processed) whose address list differs from ours, counted once per change
	foreign      string        // the last differing address list logged
	lastSendErr  string
	status       statusBox
}

// statusBox holds what the agent reports of a router, written by the
// router's goroutine.
type statusBox struct {
	mu       sync.Mutex
	state    State
	priority uint8
}

// newInstance opens what a router needs on its interface and takes down
// any virtual address a previous run left there.
func newInstance(cfg *RouterConfig, h *netlink.Handle, log *zap.Logger, publish func(notify.Event)) (*instance, error) {
	link, err := h.LinkByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("router %s: interface %s: %w", cfg.Name, cfg.Interface, err)
	}
	ifi, err := net.InterfaceByIndex(link.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("router %s: interface %s: %w", cfg.Name, cfg.Interface, err)
	}
	in := &instance{
		cfg: cfg, log: log.With(zap.String("router", cfg.Name), zap.Uint8("vrid", cfg.VRID)),
		h: h, ifi: ifi, vips: &vips{h: h, link: link}, publish: publish,
		inbox: make(chan packet, 64), updates: make(chan trackUpdate, 16),
		reloads: make(chan *RouterConfig, 1), done: make(chan struct{}),
	}
	if err := in.vips.remove(cfg.VIPs); err != nil {
		return nil, fmt.Errorf("router %s: %w", cfg.Name, err)
	}
	src := cfg.Source
	if !src.IsValid() {
		if src, err = in.vips.sourceAddr(cfg.IPv6(), len(cfg.Peers) > 0, cfg.VIPs); err != nil {
			return nil, fmt.Errorf("router %s: %w", cfg.Name, err)
		}
	}
	if in.conn, err = openConn(ifi, src, cfg.Peers); err != nil {
		return nil, fmt.Errorf("router %s: %w", cfg.Name, err)
	}
	if in.ann, err = openAnnouncer(ifi, cfg.IPv6()); err != nil {
		in.conn.close()
		return nil, fmt.Errorf("router %s: %w", cfg.Name, err)
	}
	in.m = NewMachine(in.params(cfg.Priority), in)
	in.notes = newNotifier(in.log)
	return in, nil
}

func (in *instance) params(priority uint8) Params {
	return Params{Priority: priority, Interval: in.cfg.Interval, Preempt: in.cfg.Preempt,
		PreemptDelay: in.cfg.PreemptDelay, Addr: in.conn.src}
}

// run drives the router until ctx ends, then shuts it down as RFC 5798
// says: a master sends priority 0 and gives its addresses up.
func (in *instance) run(ctx context.Context) {
	defer close(in.done)
	tctx, stopTracks := context.WithCancel(ctx)
	defer stopTracks()
	go in.readLoop()
	in.startTracks(tctx, in.cfg.Tracks, nil)
	in.log.Info("router starting", zap.String("interface", in.cfg.Interface), zap.Stringer("source", in.conn.src),
		zap.Stringers("peers", in.conn.dsts), zap.Duration("advert", in.cfg.Interval), zap.Uint8("priority", in.cfg.Priority))

	// Tracked items get one round before the machine starts, so a host
	// whose load balancer is down never becomes master on the way up.
	var firstRound <-chan time.Time
	if len(in.items) == 0 {
		in.start(time.Now())
	} else {
		wait := time.Duration(0)
		for _, it := range in.items {
			wait = max(wait, it.cfg.Timeout)
		}
		firstRound = time.After(wait + 100*time.Millisecond)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if d := in.m.Deadline(); !d.IsZero() {
			timer.Reset(time.Until(d))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			in.shutdown()
			return
		case p, ok := <-in.inbox:
			if !ok {
				in.log.Error("VRRP socket failed: stopping the router")
				in.shutdown()
				return
			}
			in.receive(p.at, p)
		case u := <-in.updates:
			in.track(time.Now(), u)
		case cfg := <-in.reloads:
			in.reload(tctx, time.Now(), cfg)
		case <-firstRound:
			firstRound = nil
			if !in.started {
				in.log.Warn("tracked items gave no verdict in time: starting with what is known")
				in.start(time.Now())
			}
		case now := <-timer.C:
			in.m.Tick(now)
		}
	}
}

func (in *instance) start(now time.Time) {
	in.started = true
	in.applyTracking(now)
	in.m.Start(now)
	in.setStatus()
}

func (in *instance) shutdown() {
	in.stopping = true
	in.m.Stop(time.Now()) // a master sends priority 0…
	if in.held != nil {
		in.handOver() // …and lets its addresses go once the backup has them
	}
	in.conn.close()
	in.ann.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	in.notes.close(ctx)
	in.log.Info("router stopped", zap.Any("dropped_adverts", in.drops.snapshot()))
}

// handOver keeps a stopping master's addresses until a new master
// advertises, and then handoverGrace more, for its gratuitous ARPs to
// reach the clients: until then the clients still send to us, and a
// master that let go at once would leave them a gap of Skew_Time. The
// two hosts hold the addresses together only while the clients move,
// and this host no longer advertises. With no backup to take over, the
// addresses go after two advert intervals, by which the backup's
// Skew_Time has long passed.
func (in *instance) handOver() {
	deadline := time.After(2 * in.cfg.Interval)
wait:
	for {
		select {
		case p, ok := <-in.inbox:
			if !ok {
				break wait
			}
			if a, err := in.check(p); err == nil && a.Priority > 0 {
				in.log.Info("new master advertises: releasing the addresses", zap.Stringer("master", p.src))
				time.Sleep(handoverGrace)
				break wait
			}
		case <-deadline:
			in.log.Info("no new master within two advert intervals: releasing the addresses")
			break wait
		}
	}
	in.releaseVIPs()
}

// handoverGrace is how long a stopping master keeps its addresses after
// the new master's advert: the new master sends its gratuitous ARPs right
// after that advert, and a LAN delivers them well within this.
const handoverGrace = 20 * time.Millisecond

// readLoop hands received datagrams to run until the socket is closed.
func (in *instance) readLoop() {
	defer close(in.inbox)
	buf := make([]byte, 65536)
	for {
		p, err := in.conn.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			in.log.Warn("reading VRRP socket", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // a persistent error must not spin
			continue
		}
		select {
		case in.inbox <- p:
		case <-in.done:
			return
		}
	}
}

// check applies RFC 5798 section 7.1's receive checks to a datagram.
func (in *instance) check(p packet) (*Advert, error) {
	if p.ttl != 255 {
		return nil, ErrTTL
	}
	a, err := ParseAdvert(p.data, p.src, p.dst)
	if err != nil {
		return nil, err
	}
	if a.VRID != in.cfg.VRID {
		return nil, ErrVRID
	}
	if len(in.cfg.Peers) > 0 && !slices.Contains(in.cfg.Peers, p.src) {
		return nil, ErrPeer
	}
	return a, nil
}

func (in *instance) receive(now time.Time, p packet) {
	a, err := in.check(p)
	if err != nil {
		n := in.drops.add(err)
		// Every drop is counted; the log gets the 1st, 2nd, 4th, 8th…
		// of each kind, so a flood cannot flood the log.
		lvl := zapcore.DebugLevel
		if bits.OnesCount64(n) == 1 {
			lvl = zapcore.WarnLevel
		}
		in.log.Check(lvl, "advert dropped").Write(zap.Stringer("from", p.src), zap.String("reason", err.Error()),
			zap.Uint64("count", n))
		return
	}
	in.checkAddrs(a, p.src)
	in.m.Receive(now, a, p.src)
	in.setStatus()
}

// checkAddrs logs, loudly and once per change, a peer that advertises our
// VRID with other addresses than ours: two routers that disagree on what
// floats is a configuration error an operator must fix (RFC 5798 section
// 6.4.2 leaves the advert itself to be processed).
func (in *instance) checkAddrs(a *Advert, src netip.Addr) {
	theirs := make([]string, len(a.Addrs))
	for i, ip := range a.Addrs {
		theirs[i] = ip.String()
	}
	ours := make([]string, len(in.cfg.VIPs))
	for i, p := range in.cfg.VIPs {
		ours[i] = p.Addr().String()
	}
	sort.Strings(theirs)
	sort.Strings(ours)
	key := src.String() + " " + strings.Join(theirs, ",")
	if slices.Equal(theirs, ours) {
		in.foreign = ""
		return
	}
	if key == in.foreign {
		return
	}
	in.foreign = key
	in.foreignLists.Add(1)
	in.log.Error("PEER ADVERTISES OUR VRID WITH A DIFFERENT ADDRESS LIST: check both configurations",
		zap.Stringer("peer", src), zap.Strings("peer_addresses", theirs), zap.Strings("our_addresses", ours))
}

// Send implements Effects.
func (in *instance) Send(priority uint8) {
	a := &Advert{VRID: in.cfg.VRID, Priority: priority, Interval: uint16(in.cfg.Interval / (10 * time.Millisecond))}
	for _, p := range in.cfg.VIPs {
		a.Addrs = append(a.Addrs, p.Addr())
	}
	err := in.conn.send(a)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != in.lastSendErr { // log when it starts failing and when it recovers
		if err != nil {
			in.log.Error("sending adverts fails", zap.Error(err))
		} else {
			in.log.Info("sending adverts works again")
		}
		in.lastSendErr = msg
	}
}

// Enter implements Effects: addresses up on becoming master, down on
// leaving, and everyone told.
func (in *instance) Enter(from, to State, why string) {
	if to == Master {
		in.takeVIPs(in.cfg.VIPs)
	}
	if from == Master && !in.stopping { // a stopping master hands over in shutdown
		in.releaseVIPs()
	}
	prio := in.m.Params().Priority
	lvl := zapcore.InfoLevel
	if to == Fault {
		lvl = zapcore.WarnLevel
	}
	name := to.String()
	if to == Init {
		name = "STOP"
	}
	in.log.Check(lvl, "state changed").Write(zap.String("from", from.String()), zap.String("to", name),
		zap.Uint8("priority", prio), zap.String("reason", why))
	t := transition{router: in.cfg.Name, vrid: in.cfg.VRID, iface: in.cfg.Interface, from: from.String(), to: name,
		priority: prio, why: why, at: time.Now(), scripts: in.cfg.Notify}
	in.publish(t.event())
	in.notes.submit(t)
	in.setStatus()
}

// takeVIPs adds addresses and announces them.
func (in *instance) takeVIPs(ps []netip.Prefix) {
	if err := in.vips.add(ps); err != nil {
		in.log.Error("adding virtual addresses", zap.Error(err))
	}
	for _, p := range ps {
		if !slices.Contains(in.held, p) {
			in.held = append(in.held, p)
		}
	}
	in.announce(ps, 0)
}

// Reclaim implements Effects: the addresses are announced now and again
// one advert interval later, by when the other master has heard our
// advert and stopped announcing them (its announcements may well have
// gone out after our first ones).
func (in *instance) Reclaim(why string) {
	in.log.Info("another master seen: announcing the addresses again", zap.String("reason", why))
	in.announce(in.cfg.VIPs, in.cfg.Interval)
}

// announce sends the configured burst of announcements for ps: the first
// at once, the rest in the background; with again > 0, the whole burst
// once more after again.
func (in *instance) announce(ps []netip.Prefix, again time.Duration) {
	count := in.cfg.Announce
	if count == 0 {
		return
	}
	ips := make([]netip.Addr, len(ps))
	for i, p := range ps {
		ips[i] = p.Addr()
	}
	if err := in.ann.announce(ips); err != nil {
		in.log.Warn("announcing virtual addresses", zap.Error(err))
	}
	waits := slices.Repeat([]time.Duration{in.cfg.AnnounceEvery}, count-1)
	if again > 0 {
		waits = append(waits, again)
		waits = append(waits, slices.Repeat([]time.Duration{in.cfg.AnnounceEvery}, count-1)...)
	}
	if len(waits) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	prev := in.stopAnn
	in.stopAnn = func() { cancel(); prevCancel(prev) }
	ann, log := in.ann, in.log
	go func() {
		for _, wait := range waits {
			if wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			} else if ctx.Err() != nil {
				return
			}
			if err := ann.announce(ips); err != nil {
				log.Debug("announcing virtual addresses", zap.Error(err))
			}
		}
	}()
}

func prevCancel(c context.CancelFunc) {
	if c != nil {
		c()
	}
}

func (in *instance) releaseVIPs() {
	prevCancel(in.stopAnn)
	in.stopAnn = nil
	if err := in.vips.remove(in.held); err != nil {
		in.log.Error("removing virtual addresses", zap.Error(err))
	}
	in.held = nil
}

// startTracks starts a checker for each configured item, keeping those of
// keep whose definition is unchanged (and their state).
func (in *instance) startTracks(ctx context.Context, cfgs []TrackConfig, keep []*trackItem) {
	var items []*trackItem
	for _, c := range cfgs {
		if i := slices.IndexFunc(keep, func(it *trackItem) bool { return it.cfg.String() == c.String() }); i >= 0 {
			items = append(items, keep[i])
			keep = slices.Delete(keep, i, i+1)
			continue
		}
		it := &trackItem{cfg: c, up: true}
		ictx, cancel := context.WithCancel(ctx)
		it.cancel = cancel
		go it.run(ictx, in.h, in.updates)
		items = append(items, it)
	}
	for _, it := range keep {
		it.cancel()
	}
	in.items = items
}

func (in *instance) track(now time.Time, u trackUpdate) {
	if !slices.Contains(in.items, u.item) {
		return // from an item a reload removed
	}
	it := u.item
	first := !it.known
	it.known, it.up, it.reason = true, u.up, u.reason
	if !first || !u.up {
		lvl := zapcore.InfoLevel
		if !u.up {
			lvl = zapcore.WarnLevel
		}
		in.log.Check(lvl, "tracked item changed").Write(zap.String("track", it.cfg.Kind+" "+it.cfg.Target),
			zap.Bool("up", u.up), zap.String("reason", u.reason), zap.Int("weight", it.cfg.Weight))
	}
	if !in.started {
		if !slices.ContainsFunc(in.items, func(it *trackItem) bool { return !it.known }) {
			in.start(now)
		}
		return
	}
	in.applyTracking(now)
}

// applyTracking sets the priority and fault state the tracked items call
// for.
func (in *instance) applyTracking(now time.Time) {
	prio, fault := effectivePriority(in.cfg.Priority, in.items)
	if in.m.Params().Priority != prio {
		in.log.Info("priority changed by tracking", zap.Uint8("from", in.m.Params().Priority), zap.Uint8("to", prio))
	}
	in.m.SetParams(now, in.params(prio))
	why := "tracked items recovered"
	if fault != "" {
		why = fault
	}
	in.m.SetFault(now, fault != "", why)
	in.setStatus()
}

// reload applies a new configuration of the same router (same interface,
// VRID, family, source and peers) without leaving the current state: a
// master stays master, with the addresses the new configuration lists.
func (in *instance) reload(ctx context.Context, now time.Time, cfg *RouterConfig) {
	old := in.cfg
	in.cfg = cfg
	if in.m.State() == Master {
		var gone []netip.Prefix
		for _, p := range in.held {
			if !slices.Contains(cfg.VIPs, p) {
				gone = append(gone, p)
			}
		}
		if err := in.vips.remove(gone); err != nil {
			in.log.Error("removing virtual addresses", zap.Error(err))
		}
		in.held = slices.DeleteFunc(in.held, func(p netip.Prefix) bool { return slices.Contains(gone, p) })
		var added []netip.Prefix
		for _, p := range cfg.VIPs {
			if !slices.Contains(old.VIPs, p) {
				added = append(added, p)
			}
		}
		if len(added) > 0 {
			in.takeVIPs(added)
		}
	}
	in.startTracks(ctx, cfg.Tracks, in.items)
	if in.started {
		in.applyTracking(now)
	}
	in.log.Info("router reloaded", zap.String("state", in.m.State().String()), zap.Uint8("priority", in.m.Params().Priority))
}

func (in *instance) setStatus() {
	in.status.mu.Lock()
	in.status.state, in.status.priority = in.m.State(), in.m.Params().Priority
	in.status.mu.Unlock()
}

// sameRouter tells whether b can replace a's configuration in place: the
// sockets a router opened depend on its interface, VRID, family, source
// and peers.
func sameRouter(a, b *RouterConfig) bool {
	return a.Interface == b.Interface && a.VRID == b.VRID && a.IPv6() == b.IPv6() &&
		a.Source == b.Source && slices.Equal(a.Peers, b.Peers)
}
