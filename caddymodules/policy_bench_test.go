package caddymodules

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCaddyPolicies measures one Select by Caddy's own round_robin and
// least_conn beside Sluice's modules on the same upstream pools, as
// reverse_proxy calls them: each request is prepared as Caddy's server
// prepares it (replacer, vars) and gets the placeholders reverse_proxy sets
// after a round trip. Sluice's figures include the adapter's work per
// request: the request-end hook and, when the request context ends, the
// policy's Done. That runs in a goroutine of its own, which ns/op misses
// on a second core, so cpu-ns/op reports the process's CPU time per
// request. lbcore's BenchmarkPick measures the policies alone.
func BenchmarkCaddyPolicies(b *testing.B) {
	// A running (empty) configuration gives the modules a context whose
	// apps they can load.
	if err := caddy.Load([]byte(`{"admin": {"disabled": true}, "logging": {"logs": {"default": {"level": "ERROR"}}}}`), true); err != nil {
		b.Fatal(err)
	}
	defer caddy.Stop()
	ctx := caddy.ActiveContext()
	policies := []struct {
		name string
		new  func() reverseproxy.Selector
	}{
		{"caddy_round_robin", func() reverseproxy.Selector { return new(reverseproxy.RoundRobinSelection) }},
		{"caddy_least_conn", func() reverseproxy.Selector { return new(reverseproxy.LeastConnSelection) }},
		{"smooth_weighted_round_robin", func() reverseproxy.Selector { return new(SmoothWeightedRoundRobin) }},
		{"weighted_least_conn", func() reverseproxy.Selector { return new(WeightedLeastConn) }},
		{"fast_response", func() reverseproxy.Selector { return new(FastResponse) }},
		{"two_choices", func() reverseproxy.Selector { return new(TwoChoices) }},
		{"consistent_hash", func() reverseproxy.Selector { return new(ConsistentHash) }},
		{"source_ip_hash", func() reverseproxy.Selector { return new(SourceIPHash) }},
		// A session whose binding is found (one client, one table entry).
		{"sticky_client_ip", func() reverseproxy.Selector { return &Sticky{By: "client_ip"} }},
		{"sticky_cookie", func() reverseproxy.Selector { return &Sticky{By: "cookie", Secret: "bench"} }},
	}
	for _, pol := range policies {
		for _, n := range []int{3, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", pol.name, n), func(b *testing.B) {
				upstreams := make(reverseproxy.UpstreamPool, n)
				for i := range upstreams {
					upstreams[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("10.1.%d.%d:80", i/256, i%256)}
				}
				sel := pol.new()
				if p, ok := sel.(caddy.Provisioner); ok {
					if err := p.Provision(ctx); err != nil {
						b.Fatal(err)
					}
				}
				if c, ok := sel.(caddy.CleanerUpper); ok {
					defer c.Cleanup()
				}
				req, _ := http.NewRequest(http.MethodGet, "http://example.com/objects/1", nil)
				req.RemoteAddr = "192.0.2.7:40000"
				req.RequestURI = "/objects/1"
				b.ReportAllocs()
				cpu := cpuTime()
				for b.Loop() {
					rctx, done := context.WithCancel(req.Context())
					repl := caddy.NewReplacer()
					r := caddyhttp.PrepareRequest(req.WithContext(rctx), repl, nil, nil)
					u := sel.Select(upstreams, r, nil)
					if u == nil {
						b.Fatal("no upstream")
					}
					repl.Set("http.reverse_proxy.upstream.hostport", u.Dial)
					repl.Set("http.reverse_proxy.upstream.latency", time.Millisecond)
					repl.Set("http.reverse_proxy.status_code", http.StatusOK)
					done()
				}
				b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkCaddySelect times Caddy's own round_robin and least_conn
// choosing alone, on the same pool sizes as lbcore's BenchmarkPick, so the
// two tables compare choice with choice: Caddy's least_conn scans the
// pool, Sluice's policies do not.
func BenchmarkCaddySelect(b *testing.B) {
	for _, pol := range []struct {
		name string
		sel  reverseproxy.Selector
	}{
		{"caddy_round_robin", new(reverseproxy.RoundRobinSelection)},
		{"caddy_least_conn", new(reverseproxy.LeastConnSelection)},
	} {
		for _, n := range []int{3, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", pol.name, n), func(b *testing.B) {
				upstreams := make(reverseproxy.UpstreamPool, n)
				for i := range upstreams {
					upstreams[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("10.1.%d.%d:80", i/256, i%256)}
				}
				req, _ := http.NewRequest(http.MethodGet, "http://example.com/objects/1", nil)
				b.ReportAllocs()
				for b.Loop() {
					if pol.sel.Select(upstreams, req, nil) == nil {
						b.Fatal("no upstream")
					}
				}
			})
		}
	}
}
