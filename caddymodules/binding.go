package caddymodules

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/health"
	"github.com/sluicelb/sluice/lbcore/operator"
	"github.com/sluicelb/sluice/lbcore/persist"
	"github.com/sluicelb/sluice/lbcore/policy"
	"github.com/sluicelb/sluice/lbcore/pool"
	"github.com/sluicelb/sluice/lbcore/report"
)

// binder connects a Caddy upstream pool to an lbcore pool and policy. A
// reverse_proxy hands its selection policy the whole upstream list on every
// attempt; the binder builds the lbcore pool from the first list it sees
// and reuses it while the list stays the same (static upstreams are one
// slice for the life of a config), so picks never scan the list.
type binder struct {
	name        string // the operator's name for the pool, or ""
	policyName  string // the lb_policy, as the operator wrote it
	members     Members
	health      *HealthChecks
	loadReports bool
	failover    string // the pool to fall over to when this one has no backend, or ""
	newPolicy   func(*pool.Pool) policy.Policy
	sessions    *sessionsConfig // persistence, or nil
	logger      *zap.Logger
	app         *App

	mu      sync.Mutex
	current atomic.Pointer[binding]
}

// binding is one upstream list made into an lbcore pool.
type binding struct {
	upstreams reverseproxy.UpstreamPool
	pool      *pool.Pool
	policy    policy.Policy
	upstream  map[*pool.Backend]*reverseproxy.Upstream
	nextSync  atomic.Int64 // unix nanoseconds
	bd        *binder      // the configuration it was built from

	sessions    *sessions       // nil without persistence
	monitor     *health.Monitor // nil without Sluice health checks
	stopMonitor context.CancelFunc
	onStandby   atomic.Bool
	badReports  badInput
}

// reporter is a policy that balances on the load backends report.
type reporter interface {
	Report(b *pool.Backend, utilization float64)
}

// healthSyncInterval is how often Caddy's own view of upstream health
// (active and passive checks, circuit breakers) is copied into lbcore.
const healthSyncInterval = 250 * time.Millisecond

// pickedVar is the request var holding the backend (*pool.Backend) the
// request's latest attempt went to.
const pickedVar = "sluice.picked"

// maxPickTries bounds how many backends a selection may turn down for
// being unavailable in Caddy's eyes before it searches the pool.
const maxPickTries = 3

// choose returns the upstream for r. key is r's affinity hash.
func (bd *binder) choose(upstreams reverseproxy.UpstreamPool, r *http.Request, key uint64) *reverseproxy.Upstream {
	if len(upstreams) == 0 {
		return nil
	}
	u, _ := bd.bind(upstreams).place(r, key, nil)
	return u
}

// placement says where place sent a request.
type placement struct {
	backend *pool.Backend
	// stays says the request went to the backend its session is bound to.
	stays bool
	// avoided is the backend the request's previous attempt failed on.
	avoided *pool.Backend
}

// place returns the upstream for r, and where it went. key is r's
// affinity hash; bound is the backend r's session is bound to, or nil.
// When this pool has no backend to offer, its failover pool places r.
func (b *binding) place(r *http.Request, key uint64, bound *pool.Backend) (*reverseproxy.Upstream, placement) {
	b.syncHealth()
	// On a retry, keep away from the upstream of the failed attempt: its
	// failure is reported only when the request ends. The pick is kept in
	// a request var, which is cheaper to read than reverse_proxy's
	// placeholder, whose lookup misses through every replacer provider on
	// a first attempt.
	failed, _ := caddyhttp.GetVar(r.Context(), pickedVar).(*pool.Backend)
	var now time.Time
	if bound != nil {
		now = time.Now()
	}
	for range maxPickTries {
		be, stays := persist.Choose(b.pool, b.policy, bound, failed, key, now)
		if be == nil {
			return b.bd.fallOver(r, key)
		}
		u := b.upstream[be]
		if u.Available() && (be != failed || len(b.upstream) == 1) {
			b.track(r, b.policy, be)
			return u, placement{backend: be, stays: stays, avoided: failed}
		}
		b.policy.Done(be, pool.Cancelled, 0)
		if stays {
			bound = nil // Caddy holds it back (max_requests, its own checks): place anew
		}
		if u.Available() {
			continue // the failed attempt's upstream: pick again
		}
		if !u.Healthy() {
			be.MarkDown(pool.ByEngine, true)
		}
		key = key*0x9e3779b97f4a7c15 + 1 // hashing policies: look elsewhere
	}
	// Every pick was full (max_requests), failed or held back by Caddy's
	// health checks: take any eligible upstream with room, else the
	// failover pool's.
	for _, m := range b.pool.Snapshot().Eligible {
		u := b.upstream[m.Backend]
		if u.Available() && m.Backend != failed {
			b.policy.Assign(m.Backend)
			b.track(r, b.policy, m.Backend)
			return u, placement{backend: m.Backend, avoided: failed}
		}
		if !u.Healthy() {
			m.Backend.MarkDown(pool.ByEngine, true)
		}
	}
	return b.bd.fallOver(r, key)
}

// fallOver places r in the failover pool, when one is named and has a
// backend to offer; requests cross at most one pool, so a failover that
// names its way back ends there.
func (bd *binder) fallOver(r *http.Request, key uint64) (*reverseproxy.Upstream, placement) {
	if bd.failover == "" || caddyhttp.GetVar(r.Context(), failedOverVar) != nil {
		return nil, placement{}
	}
	to, ok := bd.app.namedPool(bd.failover)
	if !ok {
		return nil, placement{}
	}
	b := to.current.Load()
	if b == nil {
		return nil, placement{}
	}
	caddyhttp.SetVar(r.Context(), failedOverVar, bd.failover)
	return b.place(r, key, nil)
}

// failedOverVar is the request var naming the pool a request fell over to.
const failedOverVar = "sluice.failed_over"

// track reports the request's end to the policy when r's context ends,
// which Go's server does once the handler has returned. A goroutine waits
// for it: context.AfterFunc would cost an extra context, a children map on
// every request context and a goroutine all the same (four allocations and
// about 1.5 µs of CPU a request more, BenchmarkCaddyPolicies' cpu-ns/op);
// a parked goroutine costs a few kilobytes while its request is in flight.
// The outcome is read from the placeholders reverse_proxy sets: if the
// last attempt went to another upstream, or no response header arrived,
// this backend failed. The same placeholders feed passive health and load
// reports.
func (b *binding) track(r *http.Request, pol policy.Policy, be *pool.Backend) {
	ctx := r.Context()
	// The vars map is taken once: each context lookup walks the request
	// context's whole chain.
	vars, _ := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	if vars != nil {
		vars[pickedVar] = be
	}
	repl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	start := time.Now()
	done := ctx.Done()
	go func() {
		<-done
		outcome, rtt := classify(vars, repl, be)
		if outcome != pool.Served {
			rtt = time.Since(start)
		}
		if outcome == pool.Served && b.bd.loadReports {
			b.readReport(repl, pol, be)
		}
		pol.Done(be, outcome, rtt)
		if b.monitor != nil && outcome != pool.Cancelled {
			status := 0
			if outcome == pool.Served {
				code, _ := repl.Get("http.reverse_proxy.status_code")
				status, _ = code.(int)
			}
			b.monitor.Observed(be, outcome == pool.Served, status)
		}
	}()
}

// classify tells how a request sent to be ended, and for a served one the
// time to its response header, from the request's last pick and
// reverse_proxy's placeholders:
//
//   - the last attempt went to be and its response header arrived: served;
//   - a later attempt went elsewhere (reverse_proxy retried): be failed;
//   - the last attempt went to be without a response and the handler
//     returned an error (502, 504): be failed;
//   - neither: the client went away first (wrk stopping, a closed tab).
//     That says nothing of the backend, and counting it as a failure
//     would drive traffic from healthy backends.
//
// The last pick is read from the request's vars rather than from the
// upstream placeholder: replacer lookups are most of what a request's end
// costs, and a served request needs only one. vars are read once the
// request's context has ended, when nothing writes them any more.
func classify(vars map[string]any, repl *caddy.Replacer, be *pool.Backend) (pool.Outcome, time.Duration) {
	if repl == nil || vars == nil {
		return pool.Cancelled, 0
	}
	if last, _ := vars[pickedVar].(*pool.Backend); last != be {
		return pool.Failed, 0
	}
	latency, _ := repl.Get("http.reverse_proxy.upstream.latency")
	if d, ok := latency.(time.Duration); ok {
		return pool.Served, d
	}
	if _, errored := repl.Get("http.error.status_code"); errored {
		return pool.Failed, 0
	}
	return pool.Cancelled, 0
}

// readReport takes the load a backend reported in its response. A report
// that is malformed or lies is counted, logged at most every 10 seconds,
// and ignored: the backend keeps its last good figure.
func (b *binding) readReport(repl *caddy.Replacer, pol policy.Policy, be *pool.Backend) {
	v, ok := repl.GetString("http.reverse_proxy.header." + report.Header)
	if !ok || v == "" {
		return
	}
	load, err := report.Parse(v)
	if err != nil {
		if n, log := b.badReports.add(); log {
			b.bd.logger.Warn("ignoring a bad load report", zap.String("backend", be.Address), zap.Error(err), zap.Uint64("bad_reports", n))
		}
		return
	}
	u := load.Utilization()
	be.SetReportedLoad(u)
	if rp, ok := pol.(reporter); ok {
		rp.Report(be, u)
	}
}

// bind returns the binding for upstreams, building it on first sight.
func (bd *binder) bind(upstreams reverseproxy.UpstreamPool) *binding {
	if b := bd.current.Load(); b != nil && samePool(b.upstreams, upstreams) {
		return b
	}
	bd.mu.Lock()
	defer bd.mu.Unlock()
	if b := bd.current.Load(); b != nil && samePool(b.upstreams, upstreams) {
		return b
	}
	b := bd.build(upstreams)
	if old := bd.current.Swap(b); old != nil {
		// Dynamic upstreams change the list: let the old one go now.
		// Requests in flight on it still finish through its policy, and
		// the registry keeps shared backends' counters for the new one.
		old.release()
	}
	return b
}

func samePool(a, b reverseproxy.UpstreamPool) bool {
	if len(a) != len(b) {
		return false
	}
	if &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i].Dial != b[i].Dial {
			return false
		}
	}
	return true
}

func (bd *binder) build(upstreams reverseproxy.UpstreamPool) *binding {
	b := &binding{upstreams: upstreams, bd: bd, upstream: make(map[*pool.Backend]*reverseproxy.Upstream, len(upstreams))}
	named := make(map[string]bool, len(upstreams))
	for _, u := range upstreams {
		named[u.String()] = true
	}
	name := bd.name
	if name == "" {
		name = strings.Join(slices.Sorted(maps.Keys(named)), " ")
	}
	members := make([]pool.Member, 0, len(upstreams))
	for _, u := range upstreams {
		addr := u.String()
		if !named[addr] {
			continue // listed twice: one backend
		}
		named[addr] = false
		be := pool.Backends.Acquire(addr)
		operator.Current.Apply(be)
		b.upstream[be] = u
		members = append(members, pool.Member{Backend: be, Weight: bd.weight(name, addr), Standby: bd.members.isStandby(addr)})
	}
	for _, addr := range bd.members.names() {
		if _, ok := named[addr]; !ok {
			bd.logger.Error("weight or standby names no upstream of this reverse_proxy; it has no effect",
				zap.String("upstream", addr))
		}
	}
	if bd.sessions != nil {
		b.sessions = bd.sessions.attach(name, b)
		members = b.sessions.keepLeaving(b, members)
	}
	// Weights were validated at provisioning, so this cannot fail.
	b.pool, _ = pool.New(name, members)
	b.policy = bd.newPolicy(b.pool)
	b.onStandby.Store(b.pool.Snapshot().OnStandby)
	if hc := bd.health; hc != nil && (len(hc.Checks) > 0 || hc.PassiveFails > 0) && bd.app != nil {
		settings := hc.settings()
		settings.Warn = func(backend string, err error) {
			bd.logger.Warn("ignoring a bad agent reply", zap.String("backend", backend), zap.Error(err))
		}
		b.monitor = health.NewMonitor(settings, b.changed)
		for _, m := range members {
			if !m.LeavesAt.IsZero() {
				continue // dropped by the configuration: sessions only
			}
			b.monitor.Watch(m.Backend, hc.groupOf(m.Backend.Address), hc.checksFor(m.Backend.Address)...)
		}
		b.stopMonitor = bd.app.watch(b.monitor)
	}
	return b
}

// changed relays a backend's change of state to Caddy's events app, and
// says when the pool falls over to its standbys or back.
func (b *binding) changed(c health.Change) {
	data := map[string]any{"backend": c.Address, "pool": b.pool.Name, "reason": c.Reason}
	if c.Group != "" {
		data["group"] = c.Group
	}
	b.bd.logger.Info("backend "+strings.TrimPrefix(string(c.Kind), "backend_"),
		zap.String("backend", c.Address), zap.String("reason", c.Reason))
	b.bd.app.emit(string(c.Kind), data)
	onStandby := b.pool.Snapshot().OnStandby
	if b.onStandby.Swap(onStandby) != onStandby {
		name := "pool_restored"
		if onStandby {
			name = "pool_failover"
		}
		b.bd.logger.Warn(strings.ReplaceAll(name, "_", " "), zap.String("pool", b.pool.Name))
		b.bd.app.emit(name, map[string]any{"pool": b.pool.Name})
	}
}

// syncHealth copies Caddy's health verdicts into lbcore, at most every
// healthSyncInterval: an amortized O(1) per request.
func (b *binding) syncHealth() {
	now := time.Now().UnixNano()
	next := b.nextSync.Load()
	if now < next || !b.nextSync.CompareAndSwap(next, now+int64(healthSyncInterval)) {
		return
	}
	for be, u := range b.upstream {
		be.MarkDown(pool.ByEngine, !u.Healthy())
	}
}

// release gives back the backends the binder holds.
func (bd *binder) release() {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	if b := bd.current.Swap(nil); b != nil {
		b.release()
	}
}

func (b *binding) release() {
	if b.stopMonitor != nil {
		b.stopMonitor()
	}
	if b.sessions != nil {
		b.sessions.detach(b)
	}
	for be := range b.upstream {
		pool.Backends.Release(be.Address)
	}
}

// weight returns the weight of the upstream at addr in the pool called
// poolName: the operator's, or else the configured one.
func (bd *binder) weight(poolName, addr string) int {
	if w, ok := operator.Current.Weight(poolName, addr); ok {
		return w
	}
	return bd.members.weight(addr)
}

// reweigh applies the operator's weights to the pool's members.
func (b *binding) reweigh() {
	members := slices.Clone(b.pool.Snapshot().Members)
	for i := range members {
		if members[i].LeavesAt.IsZero() {
			members[i].Weight = b.bd.weight(b.pool.Name, members[i].Backend.Address)
		}
	}
	// Operator weights are validated when given, so this cannot fail.
	_ = b.pool.SetMembers(members)
}
