package caddymodules

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/sluicelb/sluice/lbcore/policy"
	"github.com/sluicelb/sluice/lbcore/pool"
)

func init() {
	caddy.RegisterModule(SmoothWeightedRoundRobin{})
	caddy.RegisterModule(WeightedLeastConn{})
	caddy.RegisterModule(FastResponse{})
	caddy.RegisterModule(TwoChoices{})
	caddy.RegisterModule(ConsistentHash{})
	caddy.RegisterModule(SourceIPHash{})
	caddy.RegisterModule(LoadFeedback{})
}

// selector is what every Sluice policy module shares: the upstreams it
// treats specially, its health checks, and the binder that runs the
// lbcore policy.
type selector struct {
	Members

	// Pool names this reverse_proxy's upstreams as a pool (node group), for
	// the admin API, events and fallback rules. Names are unique within a
	// configuration. Default: the upstream addresses, sorted and joined.
	Pool string `json:"pool,omitempty"`

	// Failover names the pool that takes this one's requests while none
	// of its upstreams, standbys included, is available.
	Failover string `json:"failover,omitempty"`

	// Sluice's own health checks of the upstreams.
	Health *HealthChecks `json:"health,omitempty"`

	// Read the load backends report in their responses' Endpoint-Load-Metrics
	// header (ORCA's text or JSON form). load_feedback balances on it;
	// other policies only export it as a metric. Default: on for
	// load_feedback.
	LoadReports bool `json:"load_reports,omitempty"`

	binder *binder
}

func (s *selector) core() *selector { return s }

// affinity returns r's affinity hash; only the hashing policies have one.
func (s *selector) affinity(*http.Request) uint64 { return 0 }

// sluicePolicy is what every Sluice policy module is: a Selector built on
// a selector, which sticky can take as its fallback.
type sluicePolicy interface {
	reverseproxy.Selector
	core() *selector
	affinity(r *http.Request) uint64
}

func (s *selector) provision(ctx caddy.Context, policyName string, newPolicy func(*pool.Pool, policy.Options) policy.Policy, opts policy.Options) error {
	s.normalize()
	if err := s.validate(); err != nil {
		return err
	}
	if s.Health != nil {
		s.Health.normalize()
		if err := s.Health.validate(); err != nil {
			return err
		}
	}
	for _, name := range []string{s.Pool, s.Failover} {
		if name != "" && !validPoolName(name) {
			return fmt.Errorf("pool name %q must be letters, digits, '-', '_' or '.'", name)
		}
	}
	if s.Failover != "" && s.Failover == s.Pool {
		return fmt.Errorf("pool %q names itself as its failover", s.Pool)
	}
	app, err := ctx.App("sluice")
	if err != nil {
		return err
	}
	s.binder = &binder{
		name:        s.Pool,
		policyName:  policyName,
		members:     s.Members,
		health:      s.Health,
		loadReports: s.LoadReports,
		failover:    s.Failover,
		newPolicy:   func(p *pool.Pool) policy.Policy { return newPolicy(p, opts) },
		logger:      ctx.Logger(),
		app:         app.(*App),
	}
	return s.binder.app.register(s.binder)
}

// Cleanup releases the backends this policy held.
func (s *selector) Cleanup() error {
	if s.binder != nil {
		s.binder.release()
	}
	return nil
}

// unmarshalBlock reads a policy's block: the shared options, and those
// that option handles for the policy itself.
func (s *selector) unmarshalBlock(d *caddyfile.Dispenser, name string, option func(*caddyfile.Dispenser) (bool, error)) error {
	hc := new(HealthChecks)
	for d.NextBlock(0) {
		ok, err := s.unmarshalOption(d)
		if !ok {
			ok, err = hc.unmarshalHealthOption(d)
		}
		if !ok && (d.Val() == "pool" || d.Val() == "failover") {
			ok = true
			field := &s.Pool
			if d.Val() == "failover" {
				field = &s.Failover
			}
			if !d.NextArg() {
				err = d.ArgErr()
			} else if *field = d.Val(); !validPoolName(*field) {
				err = d.Errf("pool name %q must be letters, digits, '-', '_' or '.'", *field)
			} else if d.NextArg() {
				err = d.ArgErr()
			}
		}
		if !ok && d.Val() == "load_reports" {
			ok, s.LoadReports = true, true
			if d.NextArg() {
				err = d.ArgErr()
			}
		}
		if !ok && option != nil {
			ok, err = option(d)
		}
		if err != nil {
			return err
		}
		if !ok {
			return d.Errf("%s has no option %q; it takes pool, failover, weight, standby, health options, load_reports%s", name, d.Val(), extraOptions[name])
		}
	}
	if !reflect.ValueOf(*hc).IsZero() {
		s.Health = hc
	}
	if s.Failover != "" && s.Failover == s.Pool {
		return d.Errf("pool %q names itself as its failover", s.Pool)
	}
	return nil
}

var extraOptions = map[string]string{
	"fast_response": " and decay",
	"two_choices":   " and decay",
	"load_feedback": " and decay",
}

func unmarshalDecay(d *caddyfile.Dispenser, decay *caddy.Duration) (bool, error) {
	if d.Val() != "decay" {
		return false, nil
	}
	if !d.NextArg() {
		return true, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur <= 0 {
		return true, d.Errf("decay must be a positive duration such as 2s, not %q", d.Val())
	}
	*decay = caddy.Duration(dur)
	if d.NextArg() {
		return true, d.ArgErr()
	}
	return true, nil
}

// noArgs rejects arguments after a policy name that takes none.
func noArgs(d *caddyfile.Dispenser, name string) error {
	if d.NextArg() {
		return d.Errf("%s takes no arguments, found %q; options go in its block", name, d.Val())
	}
	return nil
}

// SmoothWeightedRoundRobin sends requests to upstreams in turn, in
// proportion to their weights, interleaved evenly: weights 5, 1, 1 give
// a a b a c a a. (Caddy's own weighted_round_robin takes weights by
// position and sends them in runs.)
type SmoothWeightedRoundRobin struct{ selector }

// CaddyModule returns the Caddy module information.
func (SmoothWeightedRoundRobin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.smooth_weighted_round_robin",
		New: func() caddy.Module { return new(SmoothWeightedRoundRobin) },
	}
}

// Provision sets up the policy.
func (p *SmoothWeightedRoundRobin) Provision(ctx caddy.Context) error {
	return p.provision(ctx, p.CaddyModule().ID.Name(), func(pl *pool.Pool, o policy.Options) policy.Policy {
		return policy.NewSmoothWeightedRoundRobin(pl, o)
	}, policy.Options{})
}

// Select returns the next upstream in turn.
func (p *SmoothWeightedRoundRobin) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	return p.binder.choose(pool, r, 0)
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy smooth_weighted_round_robin {
//		weight <upstream> <n>
//		standby <upstream...>
//	}
func (p *SmoothWeightedRoundRobin) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if err := noArgs(d, "smooth_weighted_round_robin"); err != nil {
		return err
	}
	return p.unmarshalBlock(d, "smooth_weighted_round_robin", nil)
}

// WeightedLeastConn sends each request to the upstream with the fewest
// requests in flight for its weight; ties go round robin by weight.
type WeightedLeastConn struct{ selector }

// CaddyModule returns the Caddy module information.
func (WeightedLeastConn) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.weighted_least_conn",
		New: func() caddy.Module { return new(WeightedLeastConn) },
	}
}

// Provision sets up the policy.
func (p *WeightedLeastConn) Provision(ctx caddy.Context) error {
	return p.provision(ctx, p.CaddyModule().ID.Name(), func(pl *pool.Pool, o policy.Options) policy.Policy {
		return policy.NewWeightedLeastConn(pl, o)
	}, policy.Options{})
}

// Select returns the least loaded upstream.
func (p *WeightedLeastConn) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	return p.binder.choose(pool, r, 0)
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy weighted_least_conn {
//		weight <upstream> <n>
//		standby <upstream...>
//	}
func (p *WeightedLeastConn) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if err := noArgs(d, "weighted_least_conn"); err != nil {
		return err
	}
	return p.unmarshalBlock(d, "weighted_least_conn", nil)
}

// FastResponse favours the upstreams that answer fastest: each request goes
// to the upstream with the least response time × requests in flight for its
// weight, so one that slows down loses traffic within seconds and wins it
// back when it recovers. Slow upstreams keep a small share, which measures
// their recovery.
type FastResponse struct {
	selector
	// How quickly the response-time average forgets: a sample taken this
	// long after the previous one carries half the weight. Default: 2s.
	Decay caddy.Duration `json:"decay,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (FastResponse) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.fast_response",
		New: func() caddy.Module { return new(FastResponse) },
	}
}

// Provision sets up the policy.
func (p *FastResponse) Provision(ctx caddy.Context) error {
	return p.provision(ctx, p.CaddyModule().ID.Name(), func(pl *pool.Pool, o policy.Options) policy.Policy {
		return policy.NewFastResponse(pl, o)
	}, policy.Options{Decay: time.Duration(p.Decay)})
}

// Select returns the upstream expected to answer soonest.
func (p *FastResponse) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	return p.binder.choose(pool, r, 0)
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy fast_response {
//		weight <upstream> <n>
//		standby <upstream...>
//		decay <duration>
//	}
func (p *FastResponse) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if err := noArgs(d, "fast_response"); err != nil {
		return err
	}
	return p.unmarshalBlock(d, "fast_response", func(d *caddyfile.Dispenser) (bool, error) {
		return unmarshalDecay(d, &p.Decay)
	})
}

// LoadFeedback keeps every upstream at about the same fraction of its
// capacity, learned from response times and concurrency and from the load
// backends report (Endpoint-Load-Metrics headers, agent checks), so
// backends of unequal power need no hand-set weights. Each request goes
// where it is expected to finish soonest.
type LoadFeedback struct {
	selector
	// How quickly the response-time average forgets. Default: 2s.
	Decay caddy.Duration `json:"decay,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (LoadFeedback) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.load_feedback",
		New: func() caddy.Module { return &LoadFeedback{selector: selector{LoadReports: true}} },
	}
}

// Provision sets up the policy.
func (p *LoadFeedback) Provision(ctx caddy.Context) error {
	return p.provision(ctx, p.CaddyModule().ID.Name(), func(pl *pool.Pool, o policy.Options) policy.Policy {
		return policy.NewLoadFeedback(pl, o)
	}, policy.Options{Decay: time.Duration(p.Decay)})
}

// Select returns the upstream expected to finish the request soonest.
func (p *LoadFeedback) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	return p.binder.choose(pool, r, 0)
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy load_feedback {
//		weight <upstream> <n>
//		standby <upstream...>
//		decay <duration>
//		<health options>
//	}
func (p *LoadFeedback) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if err := noArgs(d, "load_feedback"); err != nil {
		return err
	}
	return p.unmarshalBlock(d, "load_feedback", func(d *caddyfile.Dispenser) (bool, error) {
		return unmarshalDecay(d, &p.Decay)
	})
}

// TwoChoices draws two upstreams at random, in proportion to weight, and
// sends the request to the one with the lower response time × requests in
// flight.
type TwoChoices struct {
	selector
	// How quickly the response-time average forgets. Default: 2s.
	Decay caddy.Duration `json:"decay,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (TwoChoices) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.two_choices",
		New: func() caddy.Module { return new(TwoChoices) },
	}
}

// Provision sets up the policy.
func (p *TwoChoices) Provision(ctx caddy.Context) error {
	return p.provision(ctx, p.CaddyModule().ID.Name(), func(pl *pool.Pool, o policy.Options) policy.Policy {
		return policy.NewTwoChoices(pl, o)
	}, policy.Options{Decay: time.Duration(p.Decay)})
}

// Select returns the better of two random upstreams.
func (p *TwoChoices) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	return p.binder.choose(pool, r, 0)
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy two_choices {
//		weight <upstream> <n>
//		standby <upstream...>
//		decay <duration>
//	}
func (p *TwoChoices) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if err := noArgs(d, "two_choices"); err != nil {
		return err
	}
	return p.unmarshalBlock(d, "two_choices", func(d *caddyfile.Dispenser) (bool, error) {
		return unmarshalDecay(d, &p.Decay)
	})
}

// ConsistentHash sends requests with the same key to the same upstream
// (Maglev hashing), for cache affinity: adding or removing one of N
// upstreams moves only about 1/N of the keys, and every Caddy in front of
// the same upstreams agrees on the mapping. Requests without the key are
// spread at random.
type ConsistentHash struct {
	selector
	// What to hash: "uri" (path and query, the default), "header",
	// "cookie", "query" or "client_ip".
	Key string `json:"key,omitempty"`
	// The header field, cookie name or query parameter to hash, for those
	// keys.
	Field string `json:"field,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (ConsistentHash) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.consistent_hash",
		New: func() caddy.Module { return new(ConsistentHash) },
	}
}

// Provision sets up the policy.
func (p *ConsistentHash) Provision(ctx caddy.Context) error {
	if p.Key == "" {
		p.Key = "uri"
	}
	return p.provision(ctx, p.CaddyModule().ID.Name(), func(pl *pool.Pool, o policy.Options) policy.Policy {
		return policy.NewConsistentHash(pl, o)
	}, policy.Options{})
}

// Validate checks that the key names something.
func (p *ConsistentHash) Validate() error {
	switch p.Key {
	case "uri", "client_ip":
		if p.Field != "" {
			return fmt.Errorf("hash key %s takes no field, found %q", p.Key, p.Field)
		}
	case "header", "cookie", "query":
		if p.Field == "" {
			return fmt.Errorf("hash key %s needs a name: which %s to hash", p.Key, p.Key)
		}
	default:
		return fmt.Errorf("unknown hash key %q; want uri, header <field>, cookie <name>, query <parameter> or client_ip", p.Key)
	}
	return nil
}

// Select returns the upstream that owns the request's key.
func (p *ConsistentHash) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	return p.binder.choose(pool, r, p.affinity(r))
}

// affinity hashes the request's key.
func (p *ConsistentHash) affinity(r *http.Request) uint64 {
	var k string
	switch p.Key {
	case "uri":
		k = r.RequestURI
	case "header":
		k = r.Header.Get(p.Field)
	case "cookie":
		if c, err := r.Cookie(p.Field); err == nil {
			k = c.Value
		}
	case "query":
		k = r.URL.Query().Get(p.Field)
	case "client_ip":
		if a, ok := clientAddr(r); ok {
			return policy.HashAddr(a, 32, 128)
		}
	}
	if k == "" {
		return rand.Uint64()
	}
	return policy.HashString(k)
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy consistent_hash [uri | header <field> | cookie <name> | query <parameter> | client_ip] {
//		weight <upstream> <n>
//		standby <upstream...>
//	}
func (p *ConsistentHash) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if d.NextArg() {
		p.Key = d.Val()
		if d.NextArg() {
			p.Field = d.Val()
		}
		if d.NextArg() {
			return d.Errf("consistent_hash takes one key, found extra %q", d.Val())
		}
		if p.Key == "" {
			p.Key = "uri"
		}
		if err := p.Validate(); err != nil {
			return d.Err(err.Error())
		}
	}
	return p.unmarshalBlock(d, "consistent_hash", nil)
}

// SourceIPHash keeps each client network on one upstream: the client's
// address, cut to a prefix (/32 and /128 by default; /24 keeps a NAT range
// together, /64 an IPv6 site), is hashed with Maglev, so upstreams joining
// or leaving move few clients. The client address honours the server's
// trusted_proxies.
type SourceIPHash struct {
	selector
	// Bits of an IPv4 address that identify a client. Default: 32.
	IPv4Prefix int `json:"ipv4_prefix,omitempty"`
	// Bits of an IPv6 address that identify a client. Default: 128.
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (SourceIPHash) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.source_ip_hash",
		New: func() caddy.Module { return new(SourceIPHash) },
	}
}

// Provision sets up the policy.
func (p *SourceIPHash) Provision(ctx caddy.Context) error {
	if p.IPv4Prefix == 0 {
		p.IPv4Prefix = 32
	}
	if p.IPv6Prefix == 0 {
		p.IPv6Prefix = 128
	}
	return p.provision(ctx, p.CaddyModule().ID.Name(), func(pl *pool.Pool, o policy.Options) policy.Policy {
		return policy.NewConsistentHash(pl, o)
	}, policy.Options{})
}

// Validate checks the prefix lengths.
func (p *SourceIPHash) Validate() error {
	if p.IPv4Prefix < 1 || p.IPv4Prefix > 32 {
		return fmt.Errorf("IPv4 prefix must be /1 to /32, not /%d", p.IPv4Prefix)
	}
	if p.IPv6Prefix < 1 || p.IPv6Prefix > 128 {
		return fmt.Errorf("IPv6 prefix must be /1 to /128, not /%d", p.IPv6Prefix)
	}
	return nil
}

// Select returns the upstream that owns the client's network.
func (p *SourceIPHash) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	return p.binder.choose(pool, r, p.affinity(r))
}

// affinity hashes the client's network.
func (p *SourceIPHash) affinity(r *http.Request) uint64 {
	if a, ok := clientAddr(r); ok {
		return policy.HashAddr(a, p.IPv4Prefix, p.IPv6Prefix)
	}
	return rand.Uint64()
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy source_ip_hash [/<ipv4 bits> [/<ipv6 bits>]] {
//		ipv4_prefix <bits>
//		ipv6_prefix <bits>
//		weight <upstream> <n>
//		standby <upstream...>
//	}
func (p *SourceIPHash) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	for i, field := range []*int{&p.IPv4Prefix, &p.IPv6Prefix} {
		if !d.NextArg() {
			break
		}
		bits, err := parsePrefix(d.Val(), []int{32, 128}[i])
		if err != nil {
			return d.Errf("%s prefix %v", []string{"IPv4", "IPv6"}[i], err)
		}
		*field = bits
	}
	if d.NextArg() {
		return d.Errf("source_ip_hash takes an IPv4 and an IPv6 prefix, found extra %q", d.Val())
	}
	return p.unmarshalBlock(d, "source_ip_hash", func(d *caddyfile.Dispenser) (bool, error) {
		var field *int
		limit := 32
		switch d.Val() {
		case "ipv4_prefix":
			field = &p.IPv4Prefix
		case "ipv6_prefix":
			field, limit = &p.IPv6Prefix, 128
		default:
			return false, nil
		}
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		bits, err := parsePrefix(d.Val(), limit)
		if err != nil {
			return true, d.Errf("%s %v", d.Val(), err)
		}
		*field = bits
		return true, nil
	})
}

// validPoolName reports whether name can name a pool: it appears in admin
// URLs, metrics labels and events, so it keeps to a safe alphabet.
func validPoolName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// parsePrefix reads a prefix length written "/24" or "24".
func parsePrefix(s string, limit int) (int, error) {
	bits, err := strconv.Atoi(strings.TrimPrefix(s, "/"))
	if err != nil || bits < 1 || bits > limit {
		return 0, fmt.Errorf("must be a length from /1 to /%d, not %q", limit, s)
	}
	return bits, nil
}

// clientAddr returns the client's address as Caddy determined it (after
// trusted proxies), or the connection's peer.
func clientAddr(r *http.Request) (netip.Addr, bool) {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		if a, err := netip.ParseAddr(ip); err == nil {
			return a, true
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	return a, err == nil
}

// Interface guards
var (
	_ reverseproxy.Selector = (*SmoothWeightedRoundRobin)(nil)
	_ reverseproxy.Selector = (*WeightedLeastConn)(nil)
	_ reverseproxy.Selector = (*FastResponse)(nil)
	_ reverseproxy.Selector = (*TwoChoices)(nil)
	_ reverseproxy.Selector = (*ConsistentHash)(nil)
	_ reverseproxy.Selector = (*SourceIPHash)(nil)
	_ reverseproxy.Selector = (*LoadFeedback)(nil)

	_ caddy.Provisioner = (*SmoothWeightedRoundRobin)(nil)
	_ caddy.Provisioner = (*WeightedLeastConn)(nil)
	_ caddy.Provisioner = (*FastResponse)(nil)
	_ caddy.Provisioner = (*TwoChoices)(nil)
	_ caddy.Provisioner = (*ConsistentHash)(nil)
	_ caddy.Provisioner = (*SourceIPHash)(nil)

	_ caddy.CleanerUpper = (*SmoothWeightedRoundRobin)(nil)
	_ caddy.Validator    = (*ConsistentHash)(nil)
	_ caddy.Validator    = (*SourceIPHash)(nil)

	_ caddyfile.Unmarshaler = (*SmoothWeightedRoundRobin)(nil)
	_ caddyfile.Unmarshaler = (*WeightedLeastConn)(nil)
	_ caddyfile.Unmarshaler = (*FastResponse)(nil)
	_ caddyfile.Unmarshaler = (*TwoChoices)(nil)
	_ caddyfile.Unmarshaler = (*ConsistentHash)(nil)
	_ caddyfile.Unmarshaler = (*SourceIPHash)(nil)
	_ caddyfile.Unmarshaler = (*LoadFeedback)(nil)
)
