package health

import (
	"testing"
	"time"
)

func TestTrackerDampsFlapping(t *testing.T) {
	tr := Tracker{Rise: 2, Fall: 3}
	if !tr.Observe(true) || !tr.Up() {
		t.Fatal("first round did not decide the state")
	}
	// Failing every other round never reaches fall 3.
	for i := range 20 {
		if tr.Observe(i%2 == 1) {
			t.Fatalf("round %d changed the state of a backend failing every other check", i)
		}
	}
	for i := range 3 {
		changed := tr.Observe(false)
		if changed != (i == 2) {
			t.Fatalf("failed round %d: changed = %v; want a change on the third", i+1, changed)
		}
	}
	if tr.Up() {
		t.Fatal("up after 3 failed rounds")
	}
	if tr.Observe(true) || !tr.Observe(true) || !tr.Up() {
		t.Fatal("did not come back after exactly 2 passed rounds")
	}
}

func TestTrackerFirstRoundDown(t *testing.T) {
	tr := Tracker{Rise: 2, Fall: 3}
	if !tr.Up() {
		t.Fatal("a backend with no round yet should count as up")
	}
	if !tr.Observe(false) || tr.Up() {
		t.Fatal("a backend down at start was not reported down on the first round")
	}
}

func TestTrackerForce(t *testing.T) {
	tr := Tracker{Rise: 2, Fall: 3}
	tr.Observe(true)
	if !tr.Force(false) || tr.Up() {
		t.Fatal("Force(false) did not take the backend down")
	}
	if tr.Observe(true) || tr.Up() {
		t.Fatal("one passed round brought a forced-down backend back; want rise 2")
	}
	if !tr.Observe(true) {
		t.Fatal("second passed round did not bring it back")
	}
}

func TestFlapDetector(t *testing.T) {
	f := FlapDetector{Window: time.Minute, Max: 4}
	now := time.Unix(0, 0)
	var started int
	for range 10 {
		now = now.Add(5 * time.Second)
		if f.Record(now) {
			started++
		}
	}
	if started != 1 {
		t.Fatalf("10 changes in 50s reported flapping %d times, want once", started)
	}
	now = now.Add(2 * time.Minute)
	f.Record(now)
	for range 3 {
		now = now.Add(5 * time.Second)
		if f.Record(now) {
			started++
		}
	}
	if started != 2 {
		t.Fatalf("a new episode after a quiet window was not reported")
	}
}

func TestSlowStartRamps(t *testing.T) {
	s := SlowStart{Period: 10 * time.Second}
	up := time.Unix(100, 0)
	cases := []struct {
		after time.Duration
		want  int
	}{{0, 10}, {5 * time.Second, 55}, {10 * time.Second, 100}, {time.Hour, 100}}
	for _, c := range cases {
		if got := s.Percent(up, up.Add(c.after)); got != c.want {
			t.Errorf("%v after coming up: %d%%, want %d%%", c.after, got, c.want)
		}
	}
	if got := (SlowStart{}).Percent(up, up); got != 100 {
		t.Errorf("no slow start: %d%%, want 100%%", got)
	}
}
