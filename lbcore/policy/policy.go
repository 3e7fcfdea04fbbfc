// Package policy holds Sluice's selection policies. Each picks a backend
// from a pool's current snapshot without scanning it: the lookup
// structures (a schedule, a tournament tree, an alias table, a Maglev
// table) are built once per snapshot and reused until the pool changes.
package policy

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// A Policy chooses a backend for each request.
type Policy interface {
	// Pick returns the backend for a request, or nil when the pool has no
	// eligible backend. key is the request's affinity hash; policies
	// without affinity ignore it. Every backend returned must be handed
	// back to Done.
	Pick(key uint64) *pool.Backend
	// Assign counts a request sent to b, a member of the pool, that the
	// policy did not pick: persistence or a fallback chose it. The policy
	// prices b with it as with a pick, and b must be handed back to Done.
	Assign(b *pool.Backend)
	// Done reports how a request sent to b by Pick ended; rtt is the time
	// the backend took to answer.
	Done(b *pool.Backend, o pool.Outcome, rtt time.Duration)
}

// Options are the knobs every policy shares. The zero value is usable.
type Options struct {
	// Decay is the time constant of the response-time average.
	// Default: DefaultDecay.
	Decay time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Rand is the random source. Default: math/rand/v2's.
	Rand func() uint64
}

// DefaultDecay lets a backend that slows down lose most of its traffic
// within a few seconds, and win it back as quickly.
const DefaultDecay = 2 * time.Second

func (o Options) withDefaults() Options {
	if o.Decay <= 0 {
		o.Decay = DefaultDecay
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Uint64
	}
	return o
}

// done is the Assign and Done shared by policies that keep no
// per-request state of their own.
type done struct{ opts Options }

func (d done) Assign(b *pool.Backend) { b.Begin() }

func (d done) Done(b *pool.Backend, o pool.Outcome, rtt time.Duration) {
	b.End(o, rtt, d.opts.Now, d.opts.Decay)
}

// derived caches a structure built from a pool snapshot, rebuilding it
// when the pool publishes a new snapshot. Readers take no lock.
type derived[T any] struct {
	pool  *pool.Pool
	build func(*pool.Snapshot, *T) *T

	mu      sync.Mutex
	current atomic.Pointer[built[T]]
}

type built[T any] struct {
	snap  *pool.Snapshot
	value *T
}

// get returns the structure for the pool's current snapshot. build gets the
// previous structure, if any, to carry state across.
func (d *derived[T]) get() *T {
	snap := d.pool.Snapshot()
	if c := d.current.Load(); c != nil && c.snap == snap {
		return c.value
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.current.Load()
	if c != nil && c.snap == snap {
		return c.value
	}
	var prev *T
	if c != nil {
		prev = c.value
	}
	c = &built[T]{snap: snap, value: d.build(snap, prev)}
	d.current.Store(c)
	return c.value
}
