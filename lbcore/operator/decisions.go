package operator

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// Action is what an operator can do to a backend.
type Action string

// The actions.
const (
	Online  Action = "online"
	Offline Action = "offline"
	Drain   Action = "drain"
)

// ParseAction reads an action's name.
func ParseAction(name string) (Action, error) {
	switch a := Action(name); a {
	case Online, Offline, Drain:
		return a, nil
	}
	return "", fmt.Errorf("unknown action %q; want online, offline or drain", name)
}

// BackendDecision is the operator's last word on a backend, wherever it
// serves: a server taken offline is offline in every pool.
type BackendDecision struct {
	Action Action `json:"action"`
	// DrainDeadline, for a drain, is when sessions still bound to the
	// backend are cut; zero lets them run until they expire.
	DrainDeadline time.Time `json:"drain_deadline,omitzero"`
	// Changed is when the operator decided; the newest decision wins.
	Changed time.Time `json:"changed"`
}

// WeightDecision is the operator's weight for a backend in one pool. A
// zero Weight restores the configured one.
type WeightDecision struct {
	Weight  int       `json:"weight"`
	Changed time.Time `json:"changed"`
}

// Document is what load balancers sharing a store exchange.
type Document struct {
	Backends map[string]BackendDecision           `json:"backends,omitempty"`
	Weights  map[string]map[string]WeightDecision `json:"weights,omitempty"` // by pool, then backend
}

// Decisions holds the operator's decisions.
type Decisions struct {
	mu  sync.Mutex
	doc Document
}

// Current are the process's decisions.
var Current = new(Decisions)

// Decide records an action on the backend at address.
func (d *Decisions) Decide(address string, a Action, drainDeadline, now time.Time) BackendDecision {
	dec := BackendDecision{Action: a, Changed: now}
	if a == Drain {
		dec.DrainDeadline = drainDeadline
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc.Backends == nil {
		d.doc.Backends = make(map[string]BackendDecision)
	}
	d.doc.Backends[address] = dec
	return dec
}

// Reweigh records a weight for the backend at address in the pool called
// poolName; zero restores the configured weight.
func (d *Decisions) Reweigh(poolName, address string, weight int, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc.Weights == nil {
		d.doc.Weights = make(map[string]map[string]WeightDecision)
	}
	if d.doc.Weights[poolName] == nil {
		d.doc.Weights[poolName] = make(map[string]WeightDecision)
	}
	d.doc.Weights[poolName][address] = WeightDecision{Weight: weight, Changed: now}
}

// Backend returns the decision on the backend at address, if any.
func (d *Decisions) Backend(address string) (BackendDecision, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dec, ok := d.doc.Backends[address]
	return dec, ok
}

// Weight returns the weight the operator gave the backend at address in
// the pool called poolName, or false to keep the configured one.
func (d *Decisions) Weight(poolName, address string) (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w, ok := d.doc.Weights[poolName][address]
	return w.Weight, ok && w.Weight > 0
}

// Apply brings b's operator state in line with the decision on it, if
// any.
func (d *Decisions) Apply(b *pool.Backend) {
	dec, ok := d.Backend(b.Address)
	if !ok {
		return
	}
	switch dec.Action {
	case Online:
		b.SetAdmin(pool.Active)
	case Offline:
		b.SetAdmin(pool.Offline)
	case Drain:
		if b.Admin() != pool.Draining || !b.DrainDeadline().Equal(dec.DrainDeadline) {
			b.Drain(dec.DrainDeadline)
		}
	}
}

// Document returns a copy of the decisions.
func (d *Decisions) Document() Document {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := Document{Backends: maps.Clone(d.doc.Backends)}
	if d.doc.Weights != nil {
		out.Weights = make(map[string]map[string]WeightDecision, len(d.doc.Weights))
		for p, ws := range d.doc.Weights {
			out.Weights[p] = maps.Clone(ws)
		}
	}
	return out
}

// Changes say what a merge changed.
type Changes struct {
	// Backends are the addresses whose decision changed.
	Backends []string
	// Pools are the pools where a weight changed.
	Pools []string
}

// Merge takes from doc every decision newer than the one held, and says
// what changed.
func (d *Decisions) Merge(doc Document) Changes {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ch Changes
	for addr, dec := range doc.Backends {
		if old, ok := d.doc.Backends[addr]; ok && !dec.Changed.After(old.Changed) {
			continue
		}
		if d.doc.Backends == nil {
			d.doc.Backends = make(map[string]BackendDecision)
		}
		d.doc.Backends[addr] = dec
		ch.Backends = append(ch.Backends, addr)
	}
	for p, ws := range doc.Weights {
		changed := false
		for addr, w := range ws {
			if old, ok := d.doc.Weights[p][addr]; ok && !w.Changed.After(old.Changed) {
				continue
			}
			if d.doc.Weights == nil {
				d.doc.Weights = make(map[string]map[string]WeightDecision)
			}
			if d.doc.Weights[p] == nil {
				d.doc.Weights[p] = make(map[string]WeightDecision)
			}
			d.doc.Weights[p][addr] = w
			changed = true
		}
		if changed {
			ch.Pools = append(ch.Pools, p)
		}
	}
	slices.Sort(ch.Backends)
	slices.Sort(ch.Pools)
	return ch
}

// ParseDocument reads a stored document, checking every decision in it.
func ParseDocument(data []byte) (Document, error) {
	var doc Document
	if err := json.Unmarshal(data, &doc); err != nil {
		return Document{}, fmt.Errorf("operator decisions: %w", err)
	}
	for addr, dec := range doc.Backends {
		if _, err := ParseAction(string(dec.Action)); err != nil {
			return Document{}, fmt.Errorf("operator decision on %s: %w", addr, err)
		}
	}
	for p, ws := range doc.Weights {
		for addr, w := range ws {
			if w.Weight < 0 {
				return Document{}, fmt.Errorf("operator weight of %s in pool %s is negative", addr, p)
			}
		}
	}
	return doc, nil
}
