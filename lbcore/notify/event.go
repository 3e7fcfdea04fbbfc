package notify

import (
	"context"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// Event is one state change worth telling an operator about. Its JSON form
// is what webhooks receive and what e-mails carry, so the field names are
// part of Sluice's interface: snake_case, and the time in RFC 3339 with
// nanoseconds.
type Event struct {
	// Name says what happened: "backend_down", "backend_up",
	// "backend_flapping", "pool_failover", "pool_restored", "vrrp_master"…
	Name string `json:"name"`
	// Time is when it happened. Dispatcher.Publish fills in the current
	// time when it is zero.
	Time time.Time `json:"time"`
	// Pool is the pool concerned, if any.
	Pool string `json:"pool,omitempty"`
	// Backend is the backend concerned, as host:port, if any.
	Backend string `json:"backend,omitempty"`
	// From is the previous state, To the new one.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Reason is why, in the checker's words, e.g.
	// `smtp: greeting was "554 busy", want 220`.
	Reason string `json:"reason,omitempty"`
	// Data holds anything else worth reporting (VRRP IDs, counts…). It
	// must survive encoding/json.
	Data map[string]any `json:"data,omitempty"`
}

// A Notifier delivers events somewhere. Notify may block until the event
// is delivered or ctx ends; a Dispatcher calls each Notifier from a single
// goroutine, in publication order.
type Notifier interface {
	Notify(ctx context.Context, e Event) error
}

// level is how loudly e is logged: losing a backend or falling back to
// standbys needs attention, recovering does not.
func (e Event) level() zapcore.Level {
	for _, s := range []string{"_down", "_failover", "_flapping"} {
		if strings.HasSuffix(e.Name, s) {
			return zapcore.WarnLevel
		}
	}
	return zapcore.InfoLevel
}

// summary is the one-line form used in e-mail subjects, e.g.
// "backend_down: 10.0.0.5:80 in pool web".
func (e Event) summary() string {
	var b strings.Builder
	b.WriteString(e.Name)
	switch {
	case e.Backend != "" && e.Pool != "":
		b.WriteString(": " + e.Backend + " in pool " + e.Pool)
	case e.Backend != "":
		b.WriteString(": " + e.Backend)
	case e.Pool != "":
		b.WriteString(": pool " + e.Pool)
	}
	return b.String()
}
