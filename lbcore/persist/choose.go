package persist

import (
	"time"

	"github.com/sluicelb/sluice/lbcore/policy"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// Choose returns the backend for a request of a session bound to bound
// (nil when the session is new or its binding unknown), and whether the
// session stays where it was. It stays while its backend takes bound
// sessions (available, or draining within its deadline; see
// pool.Snapshot.TakesBoundSession) unless it is avoid, the backend a
// retry of this request just failed on. Otherwise pol picks, with
// affinity key, and the caller moves the binding there. The backend
// returned, if any, must be handed back to pol.Done.
func Choose(p *pool.Pool, pol policy.Policy, bound, avoid *pool.Backend, key uint64, now time.Time) (b *pool.Backend, stays bool) {
	if bound != nil && bound != avoid && p.Snapshot().TakesBoundSession(bound, now) {
		pol.Assign(bound)
		return bound, true
	}
	return pol.Pick(key), false
}

// MoveReason says why a session bound to bound did not stay there, in
// the words of a sticky_moved event: "failed" (a retry left it),
// "removed" (no longer in the pool), "drain deadline passed", "primary
// returned" (a standby's sessions go home), "down", "offline", or
// "unavailable" (the engine held it back).
func MoveReason(snap *pool.Snapshot, bound, avoided *pool.Backend, now time.Time) string {
	if bound == avoided {
		return "failed"
	}
	m, ok := snap.Member(bound)
	switch {
	case !ok || !m.LeavesAt.IsZero() && !now.Before(m.LeavesAt):
		return "removed"
	case m.State() == pool.Draining:
		return "drain deadline passed"
	case m.State() == pool.Standby:
		return "primary returned"
	case m.State() == pool.Active:
		return "unavailable"
	}
	return m.State().String()
}
