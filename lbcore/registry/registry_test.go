package registry

import (
	"testing"
	"time"
)

func TestValuesOutliveAReload(t *testing.T) {
	made := 0
	r := New(func(name string) *string { made++; return &name })
	now := time.Unix(1000, 0)
	r.Now = func() time.Time { return now }
	a := r.Acquire("10.0.0.1:80")
	if r.Acquire("10.0.0.1:80") != a || made != 1 {
		t.Fatal("second acquire made another value")
	}
	r.Release("10.0.0.1:80")
	r.Release("10.0.0.1:80")
	// A reload lets go before the new configuration picks it up again.
	now = now.Add(r.Linger - time.Second)
	if r.Acquire("10.0.0.1:80") != a {
		t.Fatal("value released and re-acquired within Linger was made anew")
	}
	r.Release("10.0.0.1:80")
	now = now.Add(r.Linger)
	r.Acquire("10.0.0.2:80") // any registry call forgets the idle
	if _, ok := r.Lookup("10.0.0.1:80"); ok {
		t.Fatal("value kept after Linger with nobody holding it")
	}
	n := 0
	r.Each(func(*string) { n++ })
	if n != 1 {
		t.Fatalf("Each visited %d values, want 1", n)
	}
}
