package notify

import (
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

func TestEventJSON(t *testing.T) {
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{
			name: "every field",
			e:    testEvent(),
			want: `{"name":"backend_down","time":"2025-03-04T05:06:07.123456789Z","pool":"web",` +
				`"backend":"10.0.0.5:80","from":"up","to":"down",` +
				`"reason":"smtp: greeting was \"554 busy\", want 220","data":{"check":"smtp","fails":3}}`,
		},
		{
			name: "empty fields left out",
			e:    Event{Name: "vrrp_master", Time: time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("", 3600))},
			want: `{"name":"vrrp_master","time":"2025-03-04T05:06:07+01:00"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.e)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("json.Marshal =\n%s\nwant\n%s", b, tt.want)
			}
		})
	}
}

func TestEventLevelAndSummary(t *testing.T) {
	tests := []struct {
		name  string
		e     Event
		level zapcore.Level
		sum   string
	}{
		{"backend down", Event{Name: "backend_down", Pool: "web", Backend: "10.0.0.5:80"}, zapcore.WarnLevel, "backend_down: 10.0.0.5:80 in pool web"},
		{"backend up", Event{Name: "backend_up", Backend: "10.0.0.5:80"}, zapcore.InfoLevel, "backend_up: 10.0.0.5:80"},
		{"flapping", Event{Name: "backend_flapping", Backend: "[::1]:80"}, zapcore.WarnLevel, "backend_flapping: [::1]:80"},
		{"failover", Event{Name: "pool_failover", Pool: "web"}, zapcore.WarnLevel, "pool_failover: pool web"},
		{"restored", Event{Name: "pool_restored", Pool: "web"}, zapcore.InfoLevel, "pool_restored: pool web"},
		{"vrrp", Event{Name: "vrrp_master"}, zapcore.InfoLevel, "vrrp_master"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.e.level(); got != tt.level {
				t.Errorf("level() = %v, want %v", got, tt.level)
			}
			if got := tt.e.summary(); got != tt.sum {
				t.Errorf("summary() = %q, want %q", got, tt.sum)
			}
		})
	}
}
