package caddymodules

import (
	"sync/atomic"
	"time"
)

// badInput counts bad input that is ignored (malformed load reports,
// forged cookies) and lets it be logged at most every 10 seconds, so a
// flood of it cannot flood the logs.
type badInput struct {
	count   atomic.Uint64
	lastLog atomic.Int64 // unix nanoseconds
}

// badInputLogEvery is the least time between two logs of bad input.
const badInputLogEvery = 10 * time.Second

// add counts one more and says how many so far, and whether to log it.
func (b *badInput) add() (n uint64, log bool) {
	n = b.count.Add(1)
	now := time.Now().UnixNano()
	last := b.lastLog.Load()
	return n, now-last > int64(badInputLogEvery) && b.lastLog.CompareAndSwap(last, now)
}
