package pool

import "sync"

// Registry holds backends by address with reference counts, so that a
// backend named by several pools, or by the old and the new configuration
// during a reload, is one Backend with one set of counters.
type Registry struct {
	mu       sync.Mutex
	backends map[string]*registered
}

type registered struct {
	backend *Backend
	refs    int
}

// Backends is the process-wide registry.
var Backends = NewRegistry()

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{backends: make(map[string]*registered)}
}

// Acquire returns the backend for address, creating it on first use. Every
// Acquire must be paired with a Release.
func (r *Registry) Acquire(address string) *Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.backends[address]
	if !ok {
		e = &registered{backend: NewBackend(address)}
		r.backends[address] = e
	}
	e.refs++
	return e.backend
}

// Release gives back a backend from Acquire; the last release forgets it.
func (r *Registry) Release(address string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.backends[address]
	if !ok {
		return
	}
	e.refs--
	if e.refs <= 0 {
		delete(r.backends, address)
	}
}

// Lookup returns the backend for address if any pool holds it.
func (r *Registry) Lookup(address string) (*Backend, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.backends[address]
	if !ok {
		return nil, false
	}
	return e.backend, true
}
