// Package wait is how the tests wait for something to happen: they poll a
// condition against a deadline, never sleep and hope.
package wait

import (
	"testing"
	"time"
)

// Every is how often a condition is checked. Conditions may send requests
// or read the kernel's tables; 10 ms keeps that light and the wait short.
const Every = 10 * time.Millisecond

// For checks cond every 10 ms until it holds, and reports whether it held
// within d.
func For(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Every)
	}
	return true
}

// Until fails t if cond does not hold within d; what names the awaited
// event in the failure.
func Until(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	if !For(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
