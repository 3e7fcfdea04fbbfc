package pool

import "time"

// Departures remember which backends a pool's configuration has dropped,
// so the pool can keep them for the sessions bound to them until a grace
// period ends (Member.LeavesAt), rather than cut those sessions at the
// reload. Not safe for concurrent use.
type Departures struct {
	known   map[string]bool
	leaving map[string]time.Time
}

// Update records the addresses the pool's latest configuration names and
// returns those still leaving, with when each leaves: every address the
// previous configuration named and this one does not, for grace from when
// it was first dropped. A dropped address that returns is no longer
// leaving.
func (d *Departures) Update(current []string, now time.Time, grace time.Duration) map[string]time.Time {
	if d.leaving == nil {
		d.leaving = make(map[string]time.Time)
	}
	named := make(map[string]bool, len(current))
	for _, addr := range current {
		named[addr] = true
		delete(d.leaving, addr)
	}
	for addr := range d.known {
		if _, already := d.leaving[addr]; !named[addr] && !already {
			d.leaving[addr] = now.Add(grace)
		}
	}
	for addr, until := range d.leaving {
		if !now.Before(until) {
			delete(d.leaving, addr)
		}
	}
	d.known = named
	return d.leaving
}
