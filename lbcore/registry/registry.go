// Package registry keeps state that must outlive configuration: engines
// such as Caddy build a new configuration, then drop the old one, on every
// reload, and the backends' counters, health and persistence tables must
// carry over from one to the next.
package registry

import (
	"sync"
	"time"
)

// Registry holds values by name with reference counts, so that a value
// named by several pools, or by the old and the new configuration during
// a reload, is one value.
type Registry[T any] struct {
	// Linger is how long a value that nobody holds any more is kept.
	// Engines may acquire lazily, after the previous configuration let go:
	// within Linger they find the old value.
	Linger time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time

	create  func(name string) T
	mu      sync.Mutex
	entries map[string]*held[T]
}

type held[T any] struct {
	value      T
	refs       int
	releasedAt time.Time
}

// DefaultLinger outlasts any reload.
const DefaultLinger = 5 * time.Minute

// New returns an empty registry that makes values with create.
func New[T any](create func(name string) T) *Registry[T] {
	return &Registry[T]{Linger: DefaultLinger, Now: time.Now, create: create, entries: make(map[string]*held[T])}
}

// Acquire returns the value for name, creating it on first use. Every
// Acquire must be paired with a Release.
func (r *Registry[T]) Acquire(name string) T {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetIdle()
	e, ok := r.entries[name]
	if !ok {
		e = &held[T]{value: r.create(name)}
		r.entries[name] = e
	}
	e.refs++
	return e.value
}

// Release gives back a value from Acquire. A value nobody holds is
// forgotten once it has been idle for Linger.
func (r *Registry[T]) Release(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.entries[name]; ok && e.refs > 0 {
		if e.refs--; e.refs == 0 {
			e.releasedAt = r.Now()
		}
	}
	r.forgetIdle()
}

// forgetIdle must be called with r.mu held. Registries are small and
// change only with configuration, so a scan is fine.
func (r *Registry[T]) forgetIdle() {
	now := r.Now()
	for name, e := range r.entries {
		if e.refs == 0 && now.Sub(e.releasedAt) >= r.Linger {
			delete(r.entries, name)
		}
	}
}

// Lookup returns the value for name if anyone holds it, or held it within
// Linger.
func (r *Registry[T]) Lookup(name string) (T, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[name]
	if !ok {
		var zero T
		return zero, false
	}
	return e.value, true
}

// Each calls f for every value held or lingering, in no order.
func (r *Registry[T]) Each(f func(T)) {
	r.mu.Lock()
	all := make([]T, 0, len(r.entries))
	for _, e := range r.entries {
		all = append(all, e.value)
	}
	r.mu.Unlock()
	for _, v := range all {
		f(v)
	}
}
