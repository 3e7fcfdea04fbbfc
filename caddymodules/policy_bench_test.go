package caddymodules

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// BenchmarkCaddyPolicies measures one Select by Caddy's own round_robin and
// least_conn beside Sluice's modules on the same upstream pools, as
// reverse_proxy calls them. Sluice's figures include the adapter's work per
// request: the request-end hook (context.AfterFunc) and, when the request
// context ends, the policy's Done. lbcore's BenchmarkPick measures the
// policies alone.
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
				for b.Loop() {
					rctx, done := context.WithCancel(req.Context())
					if sel.Select(upstreams, req.WithContext(rctx), nil) == nil {
						b.Fatal("no upstream")
					}
					done()
				}
			})
		}
	}
}
