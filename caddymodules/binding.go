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
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/policy"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// binder connects a Caddy upstream pool to an lbcore pool and policy. A
// reverse_proxy hands its selection policy the whole upstream list on every
// attempt; the binder builds the lbcore pool from the first list it sees
// and reuses it while the list stays the same (static upstreams are one
// slice for the life of a config), so picks never scan the list.
type binder struct {
	members   Members
	newPolicy func(*pool.Pool) policy.Policy
	logger    *zap.Logger

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
}

// healthSyncInterval is how often Caddy's own view of upstream health
// (active and passive checks, circuit breakers) is copied into lbcore.
const healthSyncInterval = 250 * time.Millisecond

// maxPickTries bounds how many backends a selection may turn down for
// being unavailable in Caddy's eyes before it searches the pool.
const maxPickTries = 3

// choose returns the upstream for r. key is r's affinity hash.
func (bd *binder) choose(upstreams reverseproxy.UpstreamPool, r *http.Request, key uint64) *reverseproxy.Upstream {
	if len(upstreams) == 0 {
		return nil
	}
	b := bd.bind(upstreams)
	b.syncHealth()
	for range maxPickTries {
		be := b.policy.Pick(key)
		if be == nil {
			return nil
		}
		u := b.upstream[be]
		if u.Available() {
			track(r, b.policy, be)
			return u
		}
		b.policy.Done(be, pool.Cancelled, 0)
		if !u.Healthy() {
			be.MarkDown(pool.ByEngine, true)
		}
		key = key*0x9e3779b97f4a7c15 + 1 // hashing policies: look elsewhere
	}
	// Every pick was full (max_requests): take any eligible upstream with room.
	for _, m := range b.pool.Snapshot().Eligible {
		if u := b.upstream[m.Backend]; u.Available() {
			m.Backend.Begin()
			track(r, doneOnly{}, m.Backend)
			return u
		}
	}
	return nil
}

// doneOnly finishes requests placed outside a policy.
type doneOnly struct{}

func (doneOnly) Pick(uint64) *pool.Backend { return nil }
func (doneOnly) Done(b *pool.Backend, o pool.Outcome, rtt time.Duration) {
	b.End(o, rtt, time.Now, policy.DefaultDecay)
}

// track reports the request's end to the policy when r's context ends,
// which Go's server does once the handler has returned. The outcome is read
// from the placeholders reverse_proxy sets: if the last attempt went to
// another upstream, or no response header arrived, this backend failed.
func track(r *http.Request, pol policy.Policy, be *pool.Backend) {
	ctx := r.Context()
	repl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	start := time.Now()
	context.AfterFunc(ctx, func() {
		outcome, rtt := pool.Failed, time.Since(start)
		if repl != nil {
			hostport, _ := repl.GetString("http.reverse_proxy.upstream.hostport")
			latency, ok := repl.Get("http.reverse_proxy.upstream.latency")
			if d, isDuration := latency.(time.Duration); ok && isDuration && hostport == be.Address {
				outcome, rtt = pool.Served, d
			}
		}
		pol.Done(be, outcome, rtt)
	})
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
	b := &binding{upstreams: upstreams, upstream: make(map[*pool.Backend]*reverseproxy.Upstream, len(upstreams))}
	named := make(map[string]bool, len(upstreams))
	members := make([]pool.Member, 0, len(upstreams))
	for _, u := range upstreams {
		addr := u.String()
		if named[addr] {
			continue // listed twice: one backend
		}
		named[addr] = true
		be := pool.Backends.Acquire(addr)
		b.upstream[be] = u
		members = append(members, pool.Member{Backend: be, Weight: bd.members.weight(addr), Standby: bd.members.isStandby(addr)})
	}
	for _, addr := range bd.members.names() {
		if !named[addr] {
			bd.logger.Error("weight or standby names no upstream of this reverse_proxy; it has no effect",
				zap.String("upstream", addr))
		}
	}
	// Weights were validated at provisioning, so this cannot fail.
	b.pool, _ = pool.New(strings.Join(slices.Sorted(maps.Keys(named)), " "), members)
	b.policy = bd.newPolicy(b.pool)
	return b
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
	for be := range b.upstream {
		pool.Backends.Release(be.Address)
	}
}
