package pool

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Member is a backend's place in a pool.
type Member struct {
	Backend *Backend
	// Weight is the backend's share relative to the pool's other members;
	// at least 1.
	Weight int
	// Standby members take traffic only while no primary member is
	// available. Several primaries share the pool's standbys.
	Standby bool
}

// State returns m's effective state.
func (m Member) State() State {
	switch {
	case m.Backend.Admin() == Offline:
		return Offline
	case m.Backend.Down():
		return Down
	case m.Backend.Admin() == Draining:
		return Draining
	case m.Standby:
		return Standby
	}
	return Active
}

// Snapshot is an immutable view of a pool. Policies derive their lookup
// structures from it and rebuild them when the pool publishes a new one.
type Snapshot struct {
	// Members are all of the pool's members, in configuration order.
	Members []Member
	// Eligible are the members that may take new requests now: the
	// available primaries or, when none is, the available standbys. Their
	// Weight is the effective weight: the configured weight times the
	// backend's Scale, in hundredths.
	Eligible []Member
	// OnStandby says that Eligible holds standbys.
	OnStandby bool

	epoch uint64
}

// Pool is a named set of backends. Readers never lock: they load the
// current snapshot, which is replaced whole when membership or any
// member's state changes.
type Pool struct {
	Name string

	mu      sync.Mutex
	members []Member
	current atomic.Pointer[Snapshot]
}

// ErrBadWeight is returned for a weight below 1.
var ErrBadWeight = errors.New("weight must be a positive whole number")

// New returns a pool holding members.
func New(name string, members []Member) (*Pool, error) {
	p := &Pool{Name: name}
	if err := p.SetMembers(members); err != nil {
		return nil, err
	}
	return p, nil
}

// SetMembers replaces the pool's membership.
func (p *Pool) SetMembers(members []Member) error {
	for _, m := range members {
		if m.Weight < 1 {
			return fmt.Errorf("backend %s: %w", m.Backend.Address, ErrBadWeight)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.members = append([]Member(nil), members...)
	p.current.Store(p.build())
	return nil
}

// Snapshot returns the pool's current view.
func (p *Pool) Snapshot() *Snapshot {
	s := p.current.Load()
	if s.epoch == epoch.Load() {
		return s
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s = p.current.Load(); s.epoch != epoch.Load() {
		s = p.build()
		p.current.Store(s)
	}
	return s
}

// build must be called with p.mu held.
func (p *Pool) build() *Snapshot {
	s := &Snapshot{Members: p.members, epoch: epoch.Load()}
	s.Eligible = eligible(p.members, false)
	if len(s.Eligible) == 0 {
		s.Eligible = eligible(p.members, true)
		s.OnStandby = len(s.Eligible) > 0
	}
	return s
}

func eligible(members []Member, standby bool) []Member {
	var out []Member
	for _, m := range members {
		if m.Standby == standby && m.Backend.Available() {
			m.Weight *= m.Backend.Scale()
			out = append(out, m)
		}
	}
	return out
}
