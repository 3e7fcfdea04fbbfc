package caddymodules_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/sluicelb/sluice/internal/wait"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// loadProxy runs Caddy in this process with one reverse_proxy to upstreams,
// load balanced as loadBalancing (its JSON) says, and returns the address
// it listens on. Caddy stops when the test ends.
func loadProxy(t *testing.T, loadBalancing string, upstreams ...string) string {
	t.Helper()
	listen := freePort(t)
	dials := make([]map[string]string, len(upstreams))
	for i, u := range upstreams {
		dials[i] = map[string]string{"dial": u}
	}
	list, _ := json.Marshal(dials)
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true},
		"logging": {"logs": {"default": {"level": "ERROR"}}},
		"apps": {"http": {"servers": {"lb": {
			"listen": [%q],
			"routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": %s, "load_balancing": %s}]}]
		}}}}
	}`, listen, list, loadBalancing)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	return listen
}

// TestRequestsAreAccounted runs Caddy in this process so lbcore's counters
// can be read: every request picked must be reported finished, with its
// response time, once the proxy is done with it; and a backend that refuses
// connections is charged with failures while retries keep clients served.
func TestRequestsAreAccounted(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	dead := freePort(t) // nothing listens here
	a.delay.Store(int64(2 * time.Millisecond))
	listen := loadProxy(t, `{"selection_policy": {"policy": "fast_response"}, "retries": 2}`, a.addr, b.addr, dead)

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				resp, err := client.Get("http://" + listen + "/")
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %s: retries should hide the dead backend", resp.Status)
				}
			}
		})
	}
	wg.Wait()

	backends := map[string]*pool.Backend{}
	for _, addr := range []string{a.addr, b.addr, dead} {
		be, ok := pool.Backends.Lookup(addr)
		if !ok {
			t.Fatalf("backend %s not in the registry", addr)
		}
		backends[addr] = be
	}
	wait.Until(t, "every answered request to be reported finished", 5*time.Second, func() bool {
		return backends[a.addr].InFlight()+backends[b.addr].InFlight()+backends[dead].InFlight() == 0
	})
	served := backends[a.addr].Total() + backends[b.addr].Total()
	if served != 200 {
		t.Errorf("live backends finished %d requests, want 200", served)
	}
	if f := backends[dead].Failures(); f == 0 || f != backends[dead].Total() {
		t.Errorf("dead backend: %d failures of %d requests; want every one a failure", f, backends[dead].Total())
	}
	if rt := backends[a.addr].ResponseTime(); rt < 2*time.Millisecond {
		t.Errorf("response-time average of a 2ms backend is %v", rt)
	}
	if backends[a.addr].Total() >= backends[b.addr].Total() {
		t.Errorf("the 2ms backend served %d, the fast one %d: fast_response should favour the fast one",
			backends[a.addr].Total(), backends[b.addr].Total())
	}
}

// TestStateSurvivesReload reloads the configuration twice, once well and
// once badly: counters carry over the good reload, and the bad one is
// refused while the running configuration keeps serving.
func TestStateSurvivesReload(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	listen := freePort(t)
	config := func(weight int, note string) []byte {
		return fmt.Appendf(nil, `{
			"admin": {"disabled": true},
			"logging": {"logs": {"default": {"level": "ERROR"}}},
			"apps": {"http": {"servers": {"lb": {
				"listen": [%q],
				"routes": [{"handle": [
					{"handler": "headers", "response": {"set": {"X-Note": [%q]}}},
					{"handler": "reverse_proxy",
					 "upstreams": [{"dial": %q}, {"dial": %q}],
					 "load_balancing": {"selection_policy": {"policy": "weighted_least_conn", "weights": {%q: %d}}}}
				]}]
			}}}}
		}`, listen, note, a.addr, b.addr, a.addr, weight)
	}
	if err := caddy.Load(config(1, "first"), true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()
	send := func(n int) {
		for range n {
			get(t, "http://"+listen+"/")
		}
	}
	total := func() uint64 {
		var sum uint64
		for _, addr := range []string{a.addr, b.addr} {
			if be, ok := pool.Backends.Lookup(addr); ok {
				sum += be.Total()
			}
		}
		return sum
	}
	waitTotal := func(want uint64) {
		wait.Until(t, fmt.Sprintf("backends to have finished %d requests in all", want), 5*time.Second,
			func() bool { return total() == want })
	}
	before := total()
	send(50)
	waitTotal(before + 50)

	if err := caddy.Load(config(3, "second"), true); err != nil {
		t.Fatal(err)
	}
	send(50)
	waitTotal(before + 100) // the counters were not reset by the reload

	if err := caddy.Load(config(0, "bad"), true); err == nil {
		t.Fatal("a zero weight was accepted on reload")
	}
	resp, err := client.Get("http://" + listen + "/")
	if err != nil {
		t.Fatalf("after a refused reload: %v", err)
	}
	resp.Body.Close()
	if note := resp.Header.Get("X-Note"); note != "second" {
		t.Fatalf("after a refused reload the running config says %q, want the last good one", note)
	}
}

// TestClientAbortIsNotABackendFailure: a client that gives up before the
// backend answers says nothing of the backend.
func TestClientAbortIsNotABackendFailure(t *testing.T) {
	slow := startBackend(t, "slow")
	slow.delay.Store(int64(300 * time.Millisecond))
	listen := loadProxy(t, `{"selection_policy": {"policy": "fast_response"}}`, slow.addr)
	impatient := &http.Client{Timeout: 30 * time.Millisecond}
	for range 5 {
		if _, err := impatient.Get("http://" + listen + "/"); err == nil {
			t.Fatal("a 300ms backend answered within 30ms")
		}
	}
	be, ok := pool.Backends.Lookup(slow.addr)
	if !ok {
		t.Fatal("backend not in the registry")
	}
	wait.Until(t, "aborted requests to be reported finished", 5*time.Second, func() bool { return be.InFlight() == 0 })
	if f := be.Failures(); f != 0 {
		t.Fatalf("%d client aborts counted as backend failures", f)
	}
}

// TestPoolNamesAreUnique: two reverse_proxy blocks may not claim one pool
// name, since admin actions and fallbacks find pools by it.
func TestPoolNamesAreUnique(t *testing.T) {
	lb := `{"selection_policy": {"policy": "weighted_least_conn", "pool": "web"}}`
	cfg := fmt.Sprintf(`{
		"admin": {"disabled": true},
		"apps": {"http": {"servers": {"lb": {
			"listen": [%q],
			"routes": [
				{"match": [{"path": ["/a"]}], "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:1"}], "load_balancing": %s}]},
				{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:2"}], "load_balancing": %s}]}
			]
		}}}}
	}`, freePort(t), lb, lb)
	err := caddy.Load([]byte(cfg), true)
	if err == nil {
		caddy.Stop()
		t.Fatal("two reverse_proxy blocks named the same pool and the config loaded")
	}
	if !strings.Contains(err.Error(), `pool "web" is named by two reverse_proxy blocks`) {
		t.Fatalf("error does not say which pool is named twice: %v", err)
	}
}
