package pool

import (
	"sync"
	"time"
)

// Registry holds backends by address with reference counts, so that a
// backend named by several pools, or by the old and the new configuration
// during a reload, is one Backend with one set of counters.
type Registry struct {
	// Linger is how long a backend that no pool holds any more is kept.
	// Engines may build pools lazily, after the previous configuration let
	// go of its backends: within Linger they find the old counters.
	Linger time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time

	mu       sync.Mutex
	backends map[string]*registered
}

type registered struct {
	backend    *Backend
	refs       int
	releasedAt time.Time
}

// DefaultLinger outlasts any reload.
const DefaultLinger = 5 * time.Minute

// Backends is the process-wide registry.
var Backends = NewRegistry()

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{Linger: DefaultLinger, Now: time.Now, backends: make(map[string]*registered)}
}

// Acquire returns the backend for address, creating it on first use. Every
// Acquire must be paired with a Release.
func (r *Registry) Acquire(address string) *Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetIdle()
	e, ok := r.backends[address]
	if !ok {
		e = &registered{backend: NewBackend(address)}
		r.backends[address] = e
	}
	e.refs++
	return e.backend
}

// Release gives back a backend from Acquire. A backend nobody holds is
// forgotten once it has been idle for Linger.
func (r *Registry) Release(address string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.backends[address]; ok && e.refs > 0 {
		if e.refs--; e.refs == 0 {
			e.releasedAt = r.Now()
		}
	}
	r.forgetIdle()
}

// forgetIdle must be called with r.mu held. Registries are small and
// change only with configuration, so a scan is fine.
func (r *Registry) forgetIdle() {
	now := r.Now()
	for addr, e := range r.backends {
		if e.refs == 0 && now.Sub(e.releasedAt) >= r.Linger {
			delete(r.backends, addr)
		}
	}
}

// Lookup returns the backend for address if any pool holds it, or held it
// within Linger.
func (r *Registry) Lookup(address string) (*Backend, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.backends[address]
	if !ok {
		return nil, false
	}
	return e.backend, true
}

// Each calls f for every backend held or lingering, in no order.
func (r *Registry) Each(f func(*Backend)) {
	r.mu.Lock()
	all := make([]*Backend, 0, len(r.backends))
	for _, e := range r.backends {
		all = append(all, e.backend)
	}
	r.mu.Unlock()
	for _, b := range all {
		f(b)
	}
}
