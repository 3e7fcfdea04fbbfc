package haagent

import (
	"net/netip"
	"time"
)

// State is a virtual router's state. Init, Backup and Master are RFC
// 5798's (RFC 9568 calls Master "Active"); Fault is keepalived's: a
// tracked interface or check says this host must not serve.
type State int

// The states, named as keepalived names them to notify scripts.
const (
	Init State = iota
	Backup
	Master
	Fault
)

func (s State) String() string {
	switch s {
	case Backup:
		return "BACKUP"
	case Master:
		return "MASTER"
	case Fault:
		return "FAULT"
	}
	return "INIT"
}

// Params are the settings a Machine decides with.
type Params struct {
	// Priority is the effective priority, after tracking: 1-254, or 255
	// for the owner of the addresses.
	Priority uint8
	// Interval is this router's advertisement interval, a whole number
	// of centiseconds.
	Interval time.Duration
	// Preempt lets a higher-priority backup take over from a master.
	Preempt bool
	// PreemptDelay holds preemption off for this long after a
	// lower-priority master is first seen.
	PreemptDelay time.Duration
	// Addr is our primary address on the link (IPv6: link-local), which
	// breaks ties between equal priorities.
	Addr netip.Addr
}

// Effects is what a Machine asks of the world. All are called with the
// machine's state already updated, from inside the Machine's methods.
type Effects interface {
	// Send sends one advertisement carrying priority.
	Send(priority uint8)
	// Enter reports a transition: on entering Master the virtual
	// addresses are added and announced, on leaving it they are removed.
	Enter(from, to State, why string)
	// Reclaim announces the virtual addresses again: another router has
	// been master at the same time and has probably announced them too.
	Reclaim(why string)
}

// Machine is the VRRPv3 state machine of RFC 5798 section 6.4 for one
// virtual router. It owns no timers and never reads the clock: every
// method takes the current time, and Deadline says when Tick is next due,
// so tests drive it in virtual time and the daemon with a real timer.
// A Machine is not safe for concurrent use.
type Machine struct {
	p     Params
	fx    Effects
	state State
	fault bool

	masterInterval time.Duration // Master_Adver_Interval: learned from the master's adverts
	adverAt        time.Time     // Adver_Timer (Master); zero when stopped
	downAt         time.Time     // Master_Down_Timer (Backup); zero when stopped
	preemptAt      time.Time     // Backup: when a lower-priority master may be preempted
	reclaimedAt    time.Time     // Master: when a lower-priority master was last answered
}

// ReclaimEvery bounds how often a master answers lower-priority masters,
// so that a peer that cannot hear it (a one-way link) or advertises
// every few milliseconds does not set off a storm of adverts and ARPs.
const ReclaimEvery = time.Second

// NewMachine returns a machine in Init; Start sets it going.
func NewMachine(p Params, fx Effects) *Machine {
	return &Machine{p: p, fx: fx, masterInterval: p.Interval}
}

// SkewTime is RFC 5798's Skew_Time, ((256 - priority) * interval) / 256,
// computed in nanoseconds rather than whole centiseconds so that, like
// keepalived, a priority-100 backup at 100 ms waits 60.9 ms, not 60.
func SkewTime(priority uint8, interval time.Duration) time.Duration {
	return time.Duration(256-int64(priority)) * interval / 256
}

// MasterDownInterval is RFC 5798's Master_Down_Interval: three missed
// adverts plus the skew, so that the highest-priority backup acts first.
func MasterDownInterval(priority uint8, interval time.Duration) time.Duration {
	return 3*interval + SkewTime(priority, interval)
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Params returns the settings in force.
func (m *Machine) Params() Params { return m.p }

// MasterInterval returns Master_Adver_Interval as last learned.
func (m *Machine) MasterInterval() time.Duration { return m.masterInterval }

// Deadline returns when Tick must next be called, or the zero time when
// no timer runs (Init, Fault).
func (m *Machine) Deadline() time.Time {
	switch m.state {
	case Master:
		return m.adverAt
	case Backup:
		return m.downAt
	}
	return time.Time{}
}

// Start leaves Init (RFC 5798 section 6.4.1): the owner becomes Master at
// once, anyone else Backup, waiting Master_Down_Interval for a master to
// speak. A machine whose fault is set goes to Fault instead.
func (m *Machine) Start(now time.Time) {
	if m.state != Init {
		return
	}
	m.enterRunning(now, Init, "start")
}

func (m *Machine) enterRunning(now time.Time, from State, why string) {
	switch {
	case m.fault:
		m.state = Fault
		m.fx.Enter(from, Fault, why)
	case m.p.Priority == 255:
		m.becomeMaster(now, from, why+": address owner (priority 255)")
	default:
		m.becomeBackup(now, m.p.Interval, from, why)
	}
}

// Stop shuts the router down (section 6.4.3, "Shutdown"): a master sends
// priority 0 so the backup takes over after Skew_Time rather than
// Master_Down_Interval.
func (m *Machine) Stop(now time.Time) {
	from := m.state
	if from == Init {
		return
	}
	m.state, m.adverAt, m.downAt, m.preemptAt = Init, time.Time{}, time.Time{}, time.Time{}
	if from == Master {
		m.fx.Send(0)
	}
	m.fx.Enter(from, Init, "shutdown")
}

// SetFault moves the router to Fault (why says what failed) or, when
// fault is false, back out of it as if starting. A master entering Fault
// sends priority 0 first, as on shutdown.
func (m *Machine) SetFault(now time.Time, fault bool, why string) {
	if m.fault == fault {
		return
	}
	m.fault = fault
	if m.state == Init {
		return // Start will see it
	}
	if fault {
		from := m.state
		m.state, m.adverAt, m.downAt, m.preemptAt = Fault, time.Time{}, time.Time{}, time.Time{}
		if from == Master {
			m.fx.Send(0)
		}
		m.fx.Enter(from, Fault, why)
		return
	}
	m.enterRunning(now, Fault, why)
}

// SetParams changes the settings, as tracking does to the priority and a
// reload to anything, without leaving the current state. A master tells
// its peers at once, so a backup that now outranks it can start counting
// towards preemption without waiting for the next advert.
func (m *Machine) SetParams(now time.Time, p Params) {
	old := m.p
	m.p = p
	if m.state == Master && (old.Priority != p.Priority || old.Interval != p.Interval) {
		m.sendAdvert(now)
	}
}

// Tick fires the timers that are due at now.
func (m *Machine) Tick(now time.Time) {
	switch m.state {
	case Master:
		if !m.adverAt.IsZero() && !now.Before(m.adverAt) {
			m.sendAdvert(now)
		}
	case Backup:
		if !m.downAt.IsZero() && !now.Before(m.downAt) {
			m.becomeMaster(now, Backup, "no advert from a master for Master_Down_Interval")
		}
	}
}

// Receive handles an advert for our VRID from src that passed every
// packet check (sections 6.4.2 and 6.4.3).
func (m *Machine) Receive(now time.Time, a *Advert, src netip.Addr) {
	switch m.state {
	case Backup:
		m.receiveBackup(now, a)
	case Master:
		m.receiveMaster(now, a, src)
	}
}

func (m *Machine) receiveBackup(now time.Time, a *Advert) {
	if a.Priority == 0 {
		// The master is leaving: take over after Skew_Time only, so the
		// highest-priority backup still goes first.
		m.downAt = now.Add(SkewTime(m.p.Priority, m.masterInterval))
		return
	}
	if m.mayPreempt(now, a.Priority) {
		// Ignore a lower-priority master: our down timer runs out and we
		// take over.
		return
	}
	m.masterInterval = time.Duration(a.Interval) * 10 * time.Millisecond
	m.downAt = now.Add(MasterDownInterval(m.p.Priority, m.masterInterval))
}

// mayPreempt tells whether a backup may ignore a master advertising
// priority, counting the preemption delay from the first such advert.
func (m *Machine) mayPreempt(now time.Time, priority uint8) bool {
	preempt := m.p.Preempt || m.p.Priority == 255 // the owner always preempts
	if !preempt || priority >= m.p.Priority {
		m.preemptAt = time.Time{}
		return false
	}
	if m.p.PreemptDelay <= 0 || m.p.Priority == 255 {
		return true
	}
	if m.preemptAt.IsZero() {
		m.preemptAt = now.Add(m.p.PreemptDelay)
	}
	return !now.Before(m.preemptAt)
}

func (m *Machine) receiveMaster(now time.Time, a *Advert, src netip.Addr) {
	if a.Priority == 0 {
		// Another master is leaving (a reload, a split that healed):
		// advertise at once so backups don't take over.
		m.sendAdvert(now)
		return
	}
	if a.Priority > m.p.Priority || (a.Priority == m.p.Priority && src.Compare(m.p.Addr) > 0) {
		interval := time.Duration(a.Interval) * 10 * time.Millisecond
		m.becomeBackup(now, interval, Master, "higher-priority master "+src.String())
		return
	}
	// A lower-priority router is master as well: both took over at once
	// (a start, a healed split) and it has announced the addresses too,
	// so the link may be sending them there. RFC 5798 discards its
	// advert; like keepalived, advertise at once, so that it steps down
	// now rather than at our next advert, and announce the addresses
	// again.
	if !m.reclaimedAt.IsZero() && now.Sub(m.reclaimedAt) < ReclaimEvery {
		return
	}
	m.reclaimedAt = now
	m.sendAdvert(now)
	m.fx.Reclaim("lower-priority master " + src.String())
}

func (m *Machine) becomeBackup(now time.Time, masterInterval time.Duration, from State, why string) {
	m.state, m.adverAt, m.preemptAt = Backup, time.Time{}, time.Time{}
	m.masterInterval = masterInterval
	m.downAt = now.Add(MasterDownInterval(m.p.Priority, masterInterval))
	m.fx.Enter(from, Backup, why)
}

func (m *Machine) becomeMaster(now time.Time, from State, why string) {
	m.state, m.downAt, m.preemptAt, m.reclaimedAt = Master, time.Time{}, time.Time{}, time.Time{}
	m.sendAdvert(now)
	m.fx.Enter(from, Master, why)
}

func (m *Machine) sendAdvert(now time.Time) {
	m.fx.Send(m.p.Priority)
	m.adverAt = now.Add(m.p.Interval)
}
