package pool

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
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
	// LeavesAt, when set, marks a member the configuration has dropped: it
	// takes no new sessions, and those bound to it reach it until then, as
	// if an operator had drained it.
	LeavesAt time.Time
	// Held members take no new traffic for a reason of this pool's own,
	// not the backend's (a connection limit reached in this service, an
	// address not yet resolved): they count as unavailable, so standbys
	// step in when every primary is held.
	Held bool
}

// State returns m's effective state.
func (m Member) State() State {
	switch {
	case m.Backend.Admin() == Offline:
		return Offline
	case m.Backend.Down():
		return Down
	case m.Backend.Admin() == Draining || !m.LeavesAt.IsZero():
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
	index map[*Backend]int // into Members
}

// Member returns b's membership of the pool.
func (s *Snapshot) Member(b *Backend) (Member, bool) {
	i, ok := s.index[b]
	if !ok {
		return Member{}, false
	}
	return s.Members[i], true
}

// TakesBoundSession reports whether a request of a session bound to b (a
// persistence entry) may still go to b at now. It may while b is
// available, or draining (by an operator, or dropped from the
// configuration) within its deadline; a standby keeps its sessions only
// while the pool is on standby, so they return to a primary that comes
// back.
func (s *Snapshot) TakesBoundSession(b *Backend, now time.Time) bool {
	m, ok := s.Member(b)
	switch {
	case !ok:
		return false
	case !m.LeavesAt.IsZero():
		return now.Before(m.LeavesAt) && !b.Down() && b.Admin() != Offline
	case m.Standby && !s.OnStandby:
		return false
	}
	return b.TakesBoundSessions(now)
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
	s := &Snapshot{Members: p.members, epoch: epoch.Load(), index: make(map[*Backend]int, len(p.members))}
	for i, m := range p.members {
		s.index[m.Backend] = i
	}
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
		if m.Standby == standby && m.LeavesAt.IsZero() && !m.Held && m.Backend.Available() {
			m.Weight *= m.Backend.Scale()
			out = append(out, m)
		}
	}
	return out
}
