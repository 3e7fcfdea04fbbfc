package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// Settings tune a Monitor. Zero fields take the defaults given.
type Settings struct {
	// Interval between rounds of a backend's checks. Default: 2s.
	Interval time.Duration
	// Timeout of each check. Default: the interval, at most 2s.
	Timeout time.Duration
	// Jitter spreads rounds by up to this fraction of the interval, so
	// checks of many backends do not fire together. Default: 0.1.
	Jitter float64
	// Rise and Fall are the rounds in a row that bring a backend up or
	// take it down. Defaults: DefaultRise, DefaultFall.
	Rise, Fall int
	// Sequential runs a backend's checks one at a time rather than
	// together (some servers limit connections per client).
	Sequential bool
	// SlowStart ramps a recovered backend's weight.
	SlowStart SlowStart
	// FlapWindow and FlapMax: FlapMax state changes within FlapWindow
	// report the backend as flapping. Defaults: 5 changes in 5 minutes.
	FlapWindow time.Duration
	FlapMax    int
	// PassiveFails is how many proxied requests in a row may fail before
	// the backend is taken down without waiting for its next check.
	// 0 turns passive health off.
	PassiveFails int
	// PassiveStatus lists response statuses that count as failures for
	// passive health, beside requests the backend did not answer.
	PassiveStatus []StatusRange
	// PassiveCooldown is how long a backend taken down by passive health
	// and having no active checks stays down. Default: 10s.
	PassiveCooldown time.Duration
	// Warn, if set, hears of agent replies that were ignored, at most once
	// per backend per minute.
	Warn func(backend string, err error)
}

func (s Settings) withDefaults() Settings {
	if s.Interval <= 0 {
		s.Interval = 2 * time.Second
	}
	if s.Timeout <= 0 {
		s.Timeout = min(s.Interval, 2*time.Second)
	}
	if s.Jitter == 0 {
		s.Jitter = 0.1
	}
	if s.Rise <= 0 {
		s.Rise = DefaultRise
	}
	if s.Fall <= 0 {
		s.Fall = DefaultFall
	}
	if s.FlapWindow <= 0 {
		s.FlapWindow = 5 * time.Minute
	}
	if s.FlapMax <= 0 {
		s.FlapMax = 5
	}
	if s.PassiveCooldown <= 0 {
		s.PassiveCooldown = 10 * time.Second
	}
	return s
}

// ChangeKind says what changed about a backend.
type ChangeKind string

// The changes a Monitor reports.
const (
	BackendDown     ChangeKind = "backend_down"
	BackendUp       ChangeKind = "backend_up"
	BackendFlapping ChangeKind = "backend_flapping"
)

// Change is a backend's state change, for events and logs.
type Change struct {
	Kind    ChangeKind
	Address string
	Group   string
	Time    time.Time
	// Reason says why, in plain words: the failed checks' errors, the
	// passive failures, or the group member that took the group down.
	Reason string
}

// Monitor runs active checks on backends, damps their results with rise
// and fall, takes backends down on passive failures, keeps port binding
// groups together, ramps recovered backends with slow start, applies
// agents' weights, and writes the verdicts into the backends, where every
// policy sees them.
type Monitor struct {
	settings Settings
	onChange func(Change)
	now      func() time.Time
	sleep    func(context.Context, time.Duration) error

	mu       sync.Mutex
	backends map[*pool.Backend]*watched
	groups   map[string][]*watched
}

// watched is one backend under a Monitor. Its fields are guarded by the
// Monitor's mutex.
type watched struct {
	backend *pool.Backend
	group   string
	checks  []Checker

	tracker  Tracker
	flaps    FlapDetector
	down     bool // as last written to the backend
	upSince  time.Time
	agentPct int // -1 when no agent has spoken
	failRun  int // proxied requests failed in a row
	reason   string

	badReplies int // agent replies ignored
	lastWarn   time.Time
}

// NewMonitor returns a monitor that reports changes to onChange (which may
// be nil; it is called without locks held, from the checking goroutines).
func NewMonitor(s Settings, onChange func(Change)) *Monitor {
	return &Monitor{
		settings: s.withDefaults(),
		onChange: onChange,
		now:      time.Now,
		sleep:    sleepCtx,
		backends: make(map[*pool.Backend]*watched),
		groups:   make(map[string][]*watched),
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Watch adds a backend with its checks, all of which must pass. Backends
// that share a non-empty group (the audio, video and control ports of one
// media server) go down together when any of them fails.
func (m *Monitor) Watch(b *pool.Backend, group string, checks ...Checker) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := &watched{
		backend:  b,
		group:    group,
		checks:   checks,
		tracker:  Tracker{Rise: m.settings.Rise, Fall: m.settings.Fall},
		flaps:    FlapDetector{Window: m.settings.FlapWindow, Max: m.settings.FlapMax},
		agentPct: -1,
	}
	// A backend already judged down by an earlier monitor (the previous
	// configuration, before a reload) stays down without a new event
	// until its checks say otherwise.
	if b.DownBy(pool.ByHealthChecks) {
		w.tracker.Force(false)
		w.down = true
		w.reason = "down before this configuration"
	}
	m.backends[b] = w
	if group != "" {
		m.groups[group] = append(m.groups[group], w)
	}
}

// Run checks every watched backend until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	m.mu.Lock()
	var all []*watched
	for _, w := range m.backends {
		all = append(all, w)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range all {
		if len(w.checks) == 0 {
			continue
		}
		wg.Go(func() { m.loop(ctx, w) })
	}
	wg.Wait()
}

func (m *Monitor) loop(ctx context.Context, w *watched) {
	for {
		m.Round(ctx, w.backend)
		wait := m.settings.Interval
		if j := m.settings.Jitter; j > 0 {
			wait += time.Duration((rand.Float64()*2 - 1) * j * float64(wait))
		}
		if ramp := m.settings.SlowStart.Period / 10; ramp > 0 && m.ramping(w) {
			wait = min(wait, ramp)
		}
		if m.sleep(ctx, wait) != nil {
			return
		}
	}
}

func (m *Monitor) ramping(w *watched) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !w.upSince.IsZero() && m.now().Sub(w.upSince) < m.settings.SlowStart.Period
}

// Round runs one round of b's checks now and applies the verdict. Run calls
// it on schedule; tests call it directly.
func (m *Monitor) Round(ctx context.Context, b *pool.Backend) {
	m.mu.Lock()
	w, ok := m.backends[b]
	m.mu.Unlock()
	if !ok {
		return
	}
	results := m.runChecks(ctx, w)
	if ctx.Err() != nil {
		return // stopping: a cancelled check says nothing of the backend
	}
	var failed []string
	agentPct, agentDrain := -1, false
	var slowest time.Duration
	ignored := 0
	for i, r := range results {
		slowest = max(slowest, r.Latency)
		if errors.Is(r.Err, ErrBadAgentReply) {
			ignored++
			m.badReply(w, r.Err)
			continue
		}
		if r.Err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", w.checks[i].Name(), r.Err))
			continue
		}
		if a := r.Agent; a != nil {
			switch a.State {
			case AgentDown:
				failed = append(failed, "agent: reports down")
			case AgentDrain:
				agentDrain = true
			}
			if a.WeightPercent >= 0 {
				agentPct = a.WeightPercent
			}
		}
	}
	b.SetCheckLatency(slowest)
	if ignored == len(results) {
		return // nothing usable this round: keep the last state
	}
	m.mu.Lock()
	changes := m.observe(w, len(failed) == 0, strings.Join(failed, "; "), false)
	switch {
	case agentDrain:
		w.agentPct = 0
	case agentPct >= 0:
		w.agentPct = agentPct
	}
	m.applyScale(w)
	m.mu.Unlock()
	m.report(changes)
}

// badReply counts an ignored agent reply and warns at most once a minute.
func (m *Monitor) badReply(w *watched, err error) {
	m.mu.Lock()
	w.badReplies++
	now := m.now()
	warn := m.settings.Warn != nil && now.Sub(w.lastWarn) >= time.Minute
	if warn {
		w.lastWarn = now
	}
	m.mu.Unlock()
	if warn {
		m.settings.Warn(w.backend.Address, err)
	}
}

func (m *Monitor) runChecks(ctx context.Context, w *watched) []Result {
	results := make([]Result, len(w.checks))
	run := func(i int) {
		cctx, cancel := context.WithTimeout(ctx, m.settings.Timeout)
		defer cancel()
		results[i] = w.checks[i].Check(cctx, w.backend.Address)
	}
	if m.settings.Sequential {
		for i := range w.checks {
			run(i)
		}
		return results
	}
	var wg sync.WaitGroup
	for i := range w.checks {
		wg.Go(func() { run(i) })
	}
	wg.Wait()
	return results
}

// Observed counts a proxied request's outcome for passive health: a
// request fails when the backend did not answer or answered with a status
// in PassiveStatus. After PassiveFails failures in a row the backend goes
// down at once and needs Rise passed rounds (or, with no checks,
// PassiveCooldown) to return.
func (m *Monitor) Observed(b *pool.Backend, answered bool, status int) {
	if m.settings.PassiveFails <= 0 {
		return
	}
	ok := answered && !inRanges(status, m.settings.PassiveStatus)
	m.mu.Lock()
	w, found := m.backends[b]
	if !found {
		m.mu.Unlock()
		return
	}
	if ok {
		w.failRun = 0
		m.mu.Unlock()
		return
	}
	w.failRun++
	var changes []Change
	if w.failRun == m.settings.PassiveFails {
		changes = m.observe(w, false, fmt.Sprintf("%d proxied requests in a row failed", w.failRun), true)
	}
	m.mu.Unlock()
	m.report(changes)
	if len(changes) > 0 && len(w.checks) == 0 {
		time.AfterFunc(m.settings.PassiveCooldown, func() {
			m.mu.Lock()
			w.failRun = 0
			changes := m.observe(w, true, "passive cooldown over", true)
			m.mu.Unlock()
			m.report(changes)
		})
	}
}

// observe feeds one verdict to w's tracker and, on a change, rewrites the
// state of w's group. m.mu must be held.
func (m *Monitor) observe(w *watched, ok bool, reason string, force bool) []Change {
	var changed bool
	if force {
		changed = w.tracker.Force(ok)
	} else {
		changed = w.tracker.Observe(ok)
	}
	if !ok {
		w.reason = reason
	}
	if !changed {
		return nil
	}
	members := []*watched{w}
	if w.group != "" {
		members = m.groups[w.group]
	}
	// A group is up only while every member is.
	groupDown, cause := false, ""
	for _, g := range members {
		if !g.tracker.Up() {
			groupDown = true
			cause = g.reason
			if g != w {
				cause = fmt.Sprintf("%s in its group is down (%s)", g.backend.Address, g.reason)
			}
			break
		}
	}
	now := m.now()
	var changes []Change
	for _, g := range members {
		if g.down == groupDown {
			continue
		}
		wasDown := g.down
		g.down = groupDown
		g.backend.SetDown(groupDown)
		c := Change{Kind: BackendUp, Address: g.backend.Address, Group: g.group, Time: now, Reason: reason}
		if groupDown {
			c.Kind, c.Reason = BackendDown, cause
			g.upSince = time.Time{}
		} else if wasDown {
			g.upSince = now
			m.applyScale(g)
		}
		changes = append(changes, c)
		if g.flaps.Record(now) {
			changes = append(changes, Change{Kind: BackendFlapping, Address: g.backend.Address, Group: g.group, Time: now,
				Reason: fmt.Sprintf("%d state changes within %v", m.settings.FlapMax, m.settings.FlapWindow)})
		}
	}
	return changes
}

// applyScale writes w's weight scale: its agent's percentage times its
// slow-start ramp. m.mu must be held.
func (m *Monitor) applyScale(w *watched) {
	pct := 100
	if w.agentPct >= 0 {
		pct = w.agentPct
	}
	if !w.upSince.IsZero() {
		ramp := m.settings.SlowStart.Percent(w.upSince, m.now())
		pct = pct * ramp / 100
		if ramp == 100 {
			w.upSince = time.Time{}
		}
	}
	w.backend.SetScale(pct)
}

func (m *Monitor) report(changes []Change) {
	if m.onChange == nil {
		return
	}
	for _, c := range changes {
		m.onChange(c)
	}
}
