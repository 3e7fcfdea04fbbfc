package caddymodules

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/persist"
	"github.com/sluicelb/sluice/lbcore/pool"
	"github.com/sluicelb/sluice/lbcore/registry"
)

// sessionsConfig is how a sticky policy keeps sessions; the state it
// keeps them in (sessions) belongs to the pool and outlives the
// configuration.
type sessionsConfig struct {
	kind       string // what identifies a session, with its parameters
	timeout    time.Duration
	maxEntries int
	// grace is how long a backend that a reload drops keeps the sessions
	// bound to it.
	grace  time.Duration
	tokens *persist.Tokens // signed cookies; nil for the table kinds
	// badCookies counts cookies that were no valid token.
	badCookies *badInput
}

// sessions is one pool's persistence state: its table, and the upstreams
// its latest configuration had, so that a reload that drops one drains it
// instead of cutting its sessions.
type sessions struct {
	name  string
	table *persist.Table

	mu         sync.Mutex
	departures pool.Departures
	upstreams  map[string]*reverseproxy.Upstream // the latest configuration's and those leaving, by address
	moves      map[string]*movedSessions         // sessions moved off a backend, to report

	directory atomic.Pointer[persist.Directory] // for signed cookies
}

// sessionStates keeps every pool's sessions across reloads, keyed by the
// pool's name and how it identifies sessions.
var sessionStates = registry.New(func(name string) *sessions {
	return &sessions{name: name, table: persist.NewTable(0, 0, nil)}
})

// attach returns the state of the pool called poolName for b.
func (c *sessionsConfig) attach(poolName string, b *binding) *sessions {
	s := sessionStates.Acquire(poolName + "\x00" + c.kind)
	s.table.Configure(c.timeout, c.maxEntries)
	return s
}

// detach lets go of the state attach returned.
func (s *sessions) detach(*binding) { sessionStates.Release(s.name) }

// keepLeaving adds to members, the pool's configured members, those the
// previous configuration had and this one dropped, as leaving members
// that keep their sessions for the grace period; their upstreams join b.
func (s *sessions) keepLeaving(b *binding, members []pool.Member) []pool.Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	current := make([]string, 0, len(b.upstream))
	upstreams := make(map[string]*reverseproxy.Upstream, len(b.upstream))
	for be, u := range b.upstream {
		current = append(current, be.Address)
		upstreams[be.Address] = u
	}
	for addr, until := range s.departures.Update(current, time.Now(), b.bd.sessions.grace) {
		be := pool.Backends.Acquire(addr)
		upstreams[addr] = s.upstreams[addr]
		b.upstream[be] = s.upstreams[addr]
		members = append(members, pool.Member{Backend: be, Weight: 1, LeavesAt: until})
	}
	s.upstreams = upstreams
	if tokens := b.bd.sessions.tokens; tokens != nil {
		dir := tokens.Directory(slices.Collect(maps.Keys(b.upstream)))
		s.directory.Store(&dir)
	}
	return members
}

// movedSessions counts sessions moved off one backend since the last
// report.
type movedSessions struct {
	count  int
	to     string
	reason string
}

// moveReportDelay gathers the moves of a failing backend's sessions into
// one event instead of one per request.
const moveReportDelay = time.Second

// moved records that a session bound to from went to to, and reports it
// as a sticky_moved event, at most one a second for each backend left.
func (s *sessions) moved(b *binding, from, to *pool.Backend, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.moves == nil {
		s.moves = make(map[string]*movedSessions)
	}
	m, pending := s.moves[from.Address]
	if !pending {
		m = new(movedSessions)
		s.moves[from.Address] = m
		time.AfterFunc(moveReportDelay, func() { s.report(b, from.Address) })
	}
	m.count++
	m.to, m.reason = to.Address, reason
}

func (s *sessions) report(b *binding, from string) {
	s.mu.Lock()
	m := s.moves[from]
	delete(s.moves, from)
	s.mu.Unlock()
	if m == nil {
		return
	}
	b.bd.logger.Info("sticky sessions moved", zap.String("pool", b.pool.Name), zap.String("from", from),
		zap.String("to", m.to), zap.Int("sessions", m.count), zap.String("reason", m.reason))
	b.bd.app.emit("sticky_moved", map[string]any{
		"pool": b.pool.Name, "backend": from, "to": m.to, "sessions": m.count, "reason": m.reason,
	})
}
