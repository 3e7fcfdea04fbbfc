package persist

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time      { return c.now }
func (c *clock) Add(d time.Duration) { c.now = c.now.Add(d) }
func newClock() *clock               { return &clock{now: time.Unix(1_000_000, 0)} }

func TestEntriesExpireAfterTheTimeoutUnlessUsed(t *testing.T) {
	c := newClock()
	tab := NewTable(time.Minute, 0, c.Now)
	a := pool.NewBackend("10.0.0.1:80")
	tab.Bind(1, a)
	tab.Bind(2, a)
	c.Add(50 * time.Second)
	if tab.Lookup(1) != a {
		t.Fatal("binding lost before its timeout")
	}
	c.Add(50 * time.Second) // 100s after binding, 50s after its last use
	if tab.Lookup(1) != a {
		t.Fatal("a lookup did not refresh the binding")
	}
	if tab.Lookup(2) != nil {
		t.Fatal("an idle binding outlived its timeout")
	}
	c.Add(time.Minute)
	st := tab.Stats()
	if st.Entries != 0 || st.Expired != 2 {
		t.Fatalf("after every timeout: %d entries, %d expired; want 0 and 2", st.Entries, st.Expired)
	}
}

func TestFullTableEvictsTheLeastRecentlyUsed(t *testing.T) {
	c := newClock()
	tab := NewTable(time.Hour, shardCount, c.Now) // one entry a shard
	a, b := pool.NewBackend("a"), pool.NewBackend("b")
	// Keys in one shard: the top four bits choose it.
	k1, k2 := uint64(1), uint64(2)
	tab.Bind(k1, a)
	tab.Bind(k2, b)
	if tab.Lookup(k1) != nil || tab.Lookup(k2) != b {
		t.Fatal("a full shard should have evicted its older entry for the newer")
	}
	st := tab.Stats()
	if st.Evicted != 1 || st.Entries != 1 || st.MaxEntries != shardCount {
		t.Fatalf("stats %+v; want 1 evicted, 1 entry, max %d", st, shardCount)
	}
	if st.ByBackend["b"] != 1 || st.Memory != entryMemory {
		t.Fatalf("stats %+v: want b's one entry counted and its memory", st)
	}
}

func TestBindMovesAndForgetRemoves(t *testing.T) {
	tab := NewTable(0, 0, nil)
	a, b := pool.NewBackend("a"), pool.NewBackend("b")
	key := Key("session-1")
	tab.Bind(key, a)
	tab.Bind(key, b)
	if tab.Lookup(key) != b {
		t.Fatal("rebinding did not move the session")
	}
	if tab.Stats().Entries != 1 {
		t.Fatal("rebinding added an entry")
	}
	tab.Forget(key)
	if tab.Lookup(key) != nil {
		t.Fatal("forgotten binding still found")
	}
	if tab.Timeout() != DefaultTimeout {
		t.Fatalf("default timeout %v", tab.Timeout())
	}
}

// TestManySessionsStayBounded fills a table far past its bound, in random
// key order, and checks the list and the map stay consistent.
func TestManySessionsStayBounded(t *testing.T) {
	c := newClock()
	tab := NewTable(time.Minute, 1000, c.Now)
	bs := []*pool.Backend{pool.NewBackend("a"), pool.NewBackend("b")}
	for i := range 20_000 {
		tab.Bind(Key(fmt.Sprint(i)), bs[i%2])
		if i%7 == 0 {
			tab.Lookup(Key(fmt.Sprint(i / 2)))
		}
		c.Add(time.Millisecond)
	}
	for i := range tab.shards {
		s := &tab.shards[i]
		n := 0
		for e := s.head; e != nil; e = e.next {
			if e.next != nil && e.next.prev != e {
				t.Fatal("broken recency list")
			}
			if s.entries[e.key] != e {
				t.Fatal("list entry missing from the map")
			}
			n++
		}
		if n != len(s.entries) || n > s.max {
			t.Fatalf("shard %d: list %d, map %d, max %d", i, n, len(s.entries), s.max)
		}
	}
	if st := tab.Stats(); st.Entries > st.MaxEntries || st.Evicted == 0 {
		t.Fatalf("stats %+v: a table past its bound should have evicted", st)
	}
}

func BenchmarkLookup(b *testing.B) {
	tab := NewTable(time.Hour, 0, nil)
	be := pool.NewBackend("a")
	keys := make([]uint64, 10_000)
	for i := range keys {
		keys[i] = Key(fmt.Sprint(i))
		tab.Bind(keys[i], be)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if tab.Lookup(keys[i%len(keys)]) == nil {
			b.Fatal("lost")
		}
		i++
	}
}

func TestConfigureChangesTimeoutAndBound(t *testing.T) {
	c := newClock()
	tab := NewTable(time.Minute, 10*shardCount, c.Now)
	be := pool.NewBackend("a")
	for i := range uint64(10) {
		tab.Bind(i, be) // all in shard 0
	}
	tab.Configure(time.Hour, shardCount)
	tab.Bind(10, be)
	if st := tab.Stats(); st.Entries != 1 || st.Evicted != 10 {
		t.Fatalf("after shrinking to one entry a shard: %+v", st)
	}
	c.Add(30 * time.Minute)
	if tab.Lookup(10) != be {
		t.Fatal("the longer timeout did not apply")
	}
}
