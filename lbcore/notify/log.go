package notify

import (
	"context"

	"go.uber.org/zap"
)

// Log writes each event as one structured zap log line whose message is the
// event name: level Warn for *_down, *_failover and *_flapping events, Info
// otherwise. A nil Logger discards events.
type Log struct {
	Logger *zap.Logger
}

// Notify logs e. It never fails: a log line is the notification of last
// resort, and zap reports its own write errors.
func (l Log) Notify(_ context.Context, e Event) error {
	if l.Logger == nil {
		return nil
	}
	ce := l.Logger.Check(e.level(), e.Name)
	if ce == nil {
		return nil // level disabled: build no fields
	}
	fields := make([]zap.Field, 0, 7)
	// The event's time can differ from the log line's own timestamp when
	// the event waited in a Dispatcher's queue, so it is logged too.
	fields = append(fields, zap.Time("time", e.Time))
	for _, f := range []struct{ key, val string }{
		{"pool", e.Pool}, {"backend", e.Backend}, {"from", e.From}, {"to", e.To}, {"reason", e.Reason},
	} {
		if f.val != "" {
			fields = append(fields, zap.String(f.key, f.val))
		}
	}
	if len(e.Data) > 0 {
		fields = append(fields, zap.Any("data", e.Data))
	}
	ce.Write(fields...)
	return nil
}

// Interface guards
var _ Notifier = Log{}
