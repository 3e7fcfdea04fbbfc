package l4fwd

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/health"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// Balancer is the running forwarder: the configuration in force, the real
// servers' live state (lbcore pools and backends, so health verdicts and
// drains survive reloads), the health checks, and the kernel they are
// written to. Every change of desired state, from a health round or a
// reload, becomes one transaction.
type Balancer struct {
	log    *zap.Logger
	kernel Kernel
	net    Network
	// newChecker makes the checker a service's health config asks for.
	newChecker func(HealthConfig) health.Checker
	// sysctl writes a kernel setting of this network namespace and
	// returns its previous value.
	sysctl func(name, value string) (string, error)
	// loose is nf_conntrack_tcp_loose as it was before synproxy needed it
	// off; empty while l4fwd has not changed it.
	loose string

	backends *pool.Registry

	mu       sync.Mutex // serialises Load, reconcile and Close
	cfg      *Config
	ids      ids
	services []*live
	desired  *Desired
	macs     map[netip.Addr]net.HardwareAddr
	commits  uint64
	failures uint64
	lastErr  string
	stop     context.CancelFunc // of the running health loops
	loops    *sync.WaitGroup    // the running health loops
}

// live is a service in force: its configuration and its real servers'
// shared state.
type live struct {
	cfg      *Service
	id       uint16
	realIDs  []uint16        // parallel to cfg.Reals
	backends []*pool.Backend // parallel to cfg.Reals
	pool     *pool.Pool
	monitor  *health.Monitor // nil with health none
	changed  atomic.Bool     // a health verdict changed since the last round
	dev      Device          // DR only
	full     []bool          // parallel to cfg.Reals: reached max_conns, not yet below min_conns
}

// NewBalancer returns a Balancer with nothing loaded.
func NewBalancer(log *zap.Logger, k Kernel, n Network) *Balancer {
	return &Balancer{
		log: log, kernel: k, net: n,
		newChecker: newChecker,
		sysctl:     writeSysctl,
		backends:   pool.NewRegistry(),
		macs:       map[netip.Addr]net.HardwareAddr{},
	}
}

// writeSysctl sets /proc/sys/<name> (dots for slashes), as
// `sysctl -w name=value` does, and returns the value it replaced.
func writeSysctl(name, value string) (string, error) {
	path := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	old, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(old)), os.WriteFile(path, []byte(value), 0o644)
}

const looseSysctl = "net.netfilter.nf_conntrack_tcp_loose"

func usesSynProxy(cfg *Config) bool {
	for _, s := range cfg.Services {
		if s.SynProxy {
			return true
		}
	}
	return false
}

// restoreLoose gives nf_conntrack_tcp_loose back the value it had before
// synproxy needed it off. b.mu must be held.
func (b *Balancer) restoreLoose() {
	if b.loose == "" {
		return
	}
	if _, err := b.sysctl(looseSysctl, b.loose); err != nil {
		b.log.Warn("restore "+looseSysctl, zap.Error(err))
	}
	b.loose = ""
}

// Load puts cfg in force: it checks cfg against the host, commits the
// ruleset, and only then retires the previous configuration and starts
// cfg's health checks. On any error nothing changes: the previous
// configuration keeps running, in the kernel and in the daemon.
func (b *Balancer) Load(ctx context.Context, cfg *Config) error {
	if err := CheckNetwork(cfg, b.net); err != nil {
		return err
	}
	b.mu.Lock()
	locked := true
	defer func() {
		if locked {
			b.mu.Unlock()
		}
	}()

	ids := b.ids.clone()
	var next []*live
	var acquired []*pool.Backend
	undo := map[*pool.Backend]pool.State{}
	rollback := func() {
		for be, st := range undo {
			be.SetAdmin(st)
		}
		for _, be := range acquired {
			b.backends.Release(be.Address)
		}
	}
	for _, s := range cfg.Services {
		l := &live{cfg: s, id: ids.service(s.Name), full: make([]bool, len(s.Reals))}
		var members []pool.Member
		for _, r := range s.Reals {
			be := b.backends.Acquire(r.Target(s))
			acquired = append(acquired, be)
			if _, seen := undo[be]; !seen {
				undo[be] = be.Admin()
			}
			admin := r.State
			if admin == pool.Standby {
				admin = pool.Active
			}
			be.SetAdmin(admin)
			l.backends = append(l.backends, be)
			l.realIDs = append(l.realIDs, ids.real(s.Name, r.Target(s)))
			members = append(members, pool.Member{Backend: be, Weight: r.Weight, Standby: r.State == pool.Standby})
		}
		p, err := pool.New(s.Name, members)
		if err != nil {
			rollback()
			return &ConfigError{cfg.File, s.Line, err.Error()}
		}
		l.pool = p
		if s.Mode == DR {
			dev, err := b.net.Device(s.Interface)
			if err != nil {
				rollback()
				return &ConfigError{cfg.File, s.Line, fmt.Sprintf("interface %s: %v", s.Interface, err)}
			}
			l.dev = dev
			for _, r := range s.Reals {
				b.resolve(l, r.Addr)
			}
		}
		next = append(next, l)
	}
	synproxy := usesSynProxy(cfg)
	if synproxy {
		// synproxy must see the client's ACK as invalid to check its
		// cookie: conntrack may not pick up connections mid-stream.
		old, err := b.sysctl(looseSysctl, "0")
		if err != nil {
			rollback()
			return fmt.Errorf("%s: synproxy needs %s=0: %w", cfg.File, looseSysctl, err)
		}
		if b.loose == "" {
			b.loose = old
		}
	}
	d := b.build(cfg, next)
	changes, err := b.kernel.Apply(d)
	if err != nil {
		b.failures++
		b.lastErr = err.Error()
		rollback()
		if b.cfg == nil || !usesSynProxy(b.cfg) {
			b.restoreLoose()
		}
		return err
	}
	b.commits++
	b.lastErr = ""
	if !synproxy {
		b.restoreLoose()
	}
	b.log.Info("configuration in force", zap.String("file", cfg.File), zap.Int("services", len(cfg.Services)),
		zap.Int("kernel_changes", len(changes)))

	// Retire the previous configuration. Its health loops may be waiting
	// for b.mu to commit a verdict, so they are waited for unlocked.
	for _, l := range b.services {
		for _, be := range l.backends {
			b.backends.Release(be.Address)
		}
	}
	ids.keep(cfg)
	old := b.desired
	b.cfg, b.services, b.desired, b.ids = cfg, next, d, ids
	b.resetDown(old, d) // a verdict may have come in since the last round's commit
	oldStop, oldLoops := b.stop, b.loops
	hctx, stop := context.WithCancel(ctx)
	b.stop, b.loops = stop, &sync.WaitGroup{}
	for _, l := range next {
		b.startHealth(hctx, l, b.loops)
	}
	b.mu.Unlock()
	locked = false
	if oldStop != nil {
		oldStop()
		oldLoops.Wait()
	}
	return nil
}

// resolve learns a DR real server's MAC address. It reports whether the
// address changed. b.mu must be held.
func (b *Balancer) resolve(l *live, a netip.Addr) bool {
	mac, err := b.net.Neighbor(l.dev.Index, a)
	if err != nil {
		if _, had := b.macs[a]; had {
			return false // keep the last known address; health decides if it is gone
		}
		b.log.Warn("dr real server MAC unknown: it takes no traffic until it answers ARP",
			zap.String("service", l.cfg.Name), zap.Stringer("real", a), zap.Error(err))
		return false
	}
	old := b.macs[a]
	b.macs[a] = mac
	return old.String() != mac.String()
}

// build makes the desired state from the services' pools. b.mu must be
// held (it reads b.macs).
func (b *Balancer) build(cfg *Config, services []*live) *Desired {
	d := &Desired{Table: cfg.Table}
	for _, l := range services {
		s := &ServiceState{Service: l.cfg, ID: l.id, IfIndex: l.dev.Index, LBMAC: l.dev.MAC}
		// A full real server, or a DR one whose MAC is unknown, is held in
		// the pool, which then decides who serves (standbys included).
		members := slices.Clone(l.pool.Snapshot().Members) // a snapshot is never written
		for i, r := range l.cfg.Reals {
			members[i].Held = l.full[i] || (l.cfg.Mode == DR && b.macs[r.Addr] == nil)
		}
		if err := l.pool.SetMembers(members); err != nil {
			panic(err) // the same members, whose weights New accepted
		}
		snap := l.pool.Snapshot()
		weight := make(map[*pool.Backend]int, len(snap.Eligible))
		for _, m := range snap.Eligible {
			weight[m.Backend] = m.Weight
		}
		weights := make([]int, len(l.cfg.Reals))
		for i, r := range l.cfg.Reals {
			m := snap.Members[i]
			weights[i] = weight[m.Backend]
			rs := &RealState{Real: r, Mark: markOf(l.id, l.realIDs[i]), State: m.State(), Full: l.full[i], Eligible: weights[i] > 0}
			if l.cfg.Mode == DR {
				if rs.MAC = b.macs[r.Addr]; rs.MAC == nil {
					rs.State = pool.Down
				}
			}
			s.Reals = append(s.Reals, rs)
		}
		s.Slots = slots(weights)
		d.Services = append(d.Services, s)
	}
	return d
}

// reconcile commits the desired state after a health verdict changed.
func (b *Balancer) reconcile(why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg == nil {
		return
	}
	d := b.build(b.cfg, b.services)
	changes, err := b.kernel.Apply(d)
	if err != nil {
		b.failures++
		b.lastErr = err.Error()
		b.log.Error("kernel update failed; the previous ruleset stays in force", zap.String("cause", why), zap.Error(err))
		return
	}
	b.commits++
	b.lastErr = ""
	old := b.desired
	b.desired = d
	if len(changes) > 0 {
		b.log.Info("kernel updated", zap.String("cause", why), zap.Strings("changes", changes))
	}
	b.resetDown(old, d)
}

// resetDown forgets the connections of every real server of a
// reset_on_down service that went down between old and d, now that the
// scheduler no longer holds it: their next packets are scheduled anew and
// answered with a reset by a live server. b.mu must be held.
func (b *Balancer) resetDown(old, d *Desired) {
	if old == nil {
		return
	}
	wasDown := map[string]bool{}
	for _, s := range old.Services {
		for _, r := range s.Reals {
			wasDown[s.Name+" "+r.Target(s.Service)] = r.State == pool.Down
		}
	}
	for i, s := range d.Services {
		if !s.ResetOnDown {
			continue
		}
		for j, r := range s.Reals {
			target := r.Target(s.Service)
			if r.State != pool.Down || wasDown[s.Name+" "+target] {
				continue
			}
			var n int
			var err error
			if s.Mode == DR {
				n, err = b.kernel.ForgetFlows(d, i, j)
			} else {
				n, err = b.net.ForgetConnections(r.Mark)
			}
			if err != nil {
				b.log.Warn("reset_on_down: forget the connections of a real server that went down", zap.String("service", s.Name),
					zap.String("real", target), zap.Int("forgotten", n), zap.Error(err))
				continue
			}
			b.log.Info("reset_on_down: forgot the connections of a real server that went down", zap.String("service", s.Name),
				zap.String("real", target), zap.Int("forgotten", n))
		}
	}
}

// startHealth runs l's health rounds until ctx ends. Rounds are per
// service, every interval, all real servers at once, and whatever they
// change is committed as one transaction, so a real server that fails is
// out of the kernel's maps within interval × fall.
func (b *Balancer) startHealth(ctx context.Context, l *live, loops *sync.WaitGroup) {
	hc := l.cfg.Health
	checker := b.newChecker(hc)
	if checker == nil && l.cfg.Mode != DR && !hasMinConns(l.cfg) {
		return // nothing to check, no MAC to follow, no connections to count
	}
	if checker != nil {
		l.monitor = health.NewMonitor(health.Settings{Interval: hc.Interval, Timeout: hc.Timeout,
			Rise: hc.Rise, Fall: hc.Fall}, func(c health.Change) { b.healthChanged(l, c) })
		for _, be := range l.backends {
			l.monitor.Watch(be, "", checker)
		}
	}
	tick := time.NewTicker(hc.Interval)
	loops.Add(1)
	go func() {
		defer loops.Done()
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			b.round(ctx, l)
		}
	}()
}

// round checks every real server of l once, follows DR MAC addresses, and
// commits what changed.
func (b *Balancer) round(ctx context.Context, l *live) {
	if l.monitor != nil {
		var wg sync.WaitGroup
		for _, be := range l.backends {
			wg.Go(func() { l.monitor.Round(ctx, be) })
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return
	}
	moved := false
	if l.cfg.Mode == DR {
		b.mu.Lock()
		for _, r := range l.cfg.Reals {
			if b.resolve(l, r.Addr) {
				moved = true
			}
		}
		b.mu.Unlock()
	}
	if hasMinConns(l.cfg) && b.countConns(l) {
		moved = true
	}
	if l.changed.Swap(false) || moved {
		b.reconcile("health of service " + l.cfg.Name)
	}
}

func hasMinConns(s *Service) bool {
	for _, r := range s.Reals {
		if r.MinConns > 0 {
			return true
		}
	}
	return false
}

// countConns follows the open connections of l's servers with min_conns,
// as IPVS's thresholds do: a server that reached max_conns leaves the
// scheduler until fewer than min_conns remain. It reports a change.
func (b *Balancer) countConns(l *live) bool {
	counts, err := b.net.Connections()
	if err != nil {
		b.log.Warn("count connections for min_conns", zap.String("service", l.cfg.Name), zap.Error(err))
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for i, r := range l.cfg.Reals {
		if r.MinConns == 0 {
			continue
		}
		open := counts[markOf(l.id, l.realIDs[i])]
		full := pool.ConnLimits{Max: r.MaxConns, Min: r.MinConns}.Full(l.full[i], open)
		if full != l.full[i] {
			l.full[i], changed = full, true
			b.log.Info("real server full: out of the scheduler until below min_conns", zap.String("service", l.cfg.Name),
				zap.String("real", r.Target(l.cfg)), zap.Bool("full", full), zap.Int("open", open))
		}
	}
	return changed
}

func (b *Balancer) healthChanged(l *live, c health.Change) {
	l.changed.Store(true)
	b.log.Info("real server "+string(c.Kind), zap.String("service", l.cfg.Name),
		zap.String("real", c.Address), zap.String("reason", c.Reason))
}

// newChecker returns the lbcore checker a service's health config asks
// for, or nil for none.
func newChecker(h HealthConfig) health.Checker {
	switch h.Kind {
	case "tcp":
		return &health.TCPCheck{Port: h.Port}
	case "http", "https":
		// Real servers behind an L4 balancer present the service's
		// certificate, not one for their own address: verifying it
		// against the address would fail every check.
		return &health.HTTPCheck{TLS: h.Kind == "https", Path: h.Path, ExpectStatus: h.Status,
			Port: h.Port, InsecureSkipVerify: true}
	}
	return nil
}

// Close stops the health checks and removes l4fwd's tables.
func (b *Balancer) Close() error {
	b.mu.Lock()
	stop, loops := b.stop, b.loops
	b.stop, b.loops, b.cfg = nil, nil, nil // reconcile does nothing from here on
	b.mu.Unlock()
	if stop != nil {
		stop()
		loops.Wait()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.restoreLoose()
	return b.kernel.Remove()
}

// ids hands out the numbers that name services and real servers in the
// kernel (set names, ct marks). A name keeps its number across reloads, so
// a reload that changes one service leaves the others' kernel objects, and
// their counters, alone.
type ids struct {
	services map[string]uint16
	reals    map[string]uint16 // "service/target"
}

func (i ids) clone() ids {
	c := ids{services: map[string]uint16{}, reals: map[string]uint16{}}
	maps.Copy(c.services, i.services)
	maps.Copy(c.reals, i.reals)
	return c
}

func (i ids) service(name string) uint16 { return take(i.services, name, "") }

func (i ids) real(service, target string) uint16 {
	return take(i.reals, service+"/"+target, service+"/")
}

// take returns key's number, or gives it the lowest one that no key with
// the same prefix holds.
func take(m map[string]uint16, key, prefix string) uint16 {
	if n, ok := m[key]; ok {
		return n
	}
	used := map[uint16]bool{}
	for k, n := range m {
		if strings.HasPrefix(k, prefix) {
			used[n] = true
		}
	}
	n := uint16(1)
	for used[n] {
		n++
	}
	m[key] = n
	return n
}

// keep forgets the numbers of services and real servers cfg no longer has.
func (i ids) keep(cfg *Config) {
	want := map[string]bool{}
	for _, s := range cfg.Services {
		want[s.Name] = true
		for _, r := range s.Reals {
			want[s.Name+"/"+r.Target(s)] = true
		}
	}
	for k := range i.services {
		if !want[k] {
			delete(i.services, k)
		}
	}
	for k := range i.reals {
		if !want[k] {
			delete(i.reals, k)
		}
	}
}
