package notify

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestLog(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := Log{Logger: zap.New(core)}
	down := testEvent()
	up := Event{Name: "backend_up", Time: down.Time, Backend: "10.0.0.5:80"}
	for _, e := range []Event{down, up} {
		if err := l.Notify(context.Background(), e); err != nil {
			t.Fatalf("Notify(%s): %v", e.Name, err)
		}
	}
	got := logs.AllUntimed()
	if len(got) != 2 {
		t.Fatalf("got %d log lines, want 2: %+v", len(got), got)
	}
	if got[0].Level != zapcore.WarnLevel || got[0].Message != "backend_down" {
		t.Errorf("first line is %v %q, want warn \"backend_down\"", got[0].Level, got[0].Message)
	}
	fields := got[0].ContextMap()
	for k, want := range map[string]any{
		"pool": "web", "backend": "10.0.0.5:80", "from": "up", "to": "down",
		"reason": down.Reason, "time": down.Time,
	} {
		if fields[k] != want {
			t.Errorf("field %s = %v, want %v", k, fields[k], want)
		}
	}
	if _, ok := fields["data"]; !ok {
		t.Errorf("no data field in %v", fields)
	}
	if got[1].Level != zapcore.InfoLevel || got[1].Message != "backend_up" {
		t.Errorf("second line is %v %q, want info \"backend_up\"", got[1].Level, got[1].Message)
	}
	if _, ok := got[1].ContextMap()["pool"]; ok {
		t.Errorf("empty pool was logged: %v", got[1].ContextMap())
	}
}

func TestLogWithoutLogger(t *testing.T) {
	if err := (Log{}).Notify(context.Background(), testEvent()); err != nil {
		t.Errorf("Notify without a logger: %v", err)
	}
}
