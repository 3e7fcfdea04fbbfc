package caddymodules

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/persist"
	"github.com/sluicelb/sluice/lbcore/policy"
	"github.com/sluicelb/sluice/lbcore/pool"
)

func init() {
	caddy.RegisterModule(Sticky{})
}

// Sticky keeps each client's session on one upstream: requests of a
// session go where its first request went, for as long as the session is
// used (its timeout is refreshed by every request) and the upstream takes
// it. New sessions, and those whose upstream went down, went offline,
// passed a drain's deadline or left the configuration, are placed by the
// fallback policy and bound there; a sticky_moved event reports the moves.
// A drained upstream keeps the sessions bound to it until its drain
// deadline, and one that a reload drops keeps them for removal_grace.
type Sticky struct {
	selector

	// By says what identifies a session:
	//
	//   - client_ip: the client's network (IPv4Prefix, IPv6Prefix), for
	//     clients that take no cookies;
	//   - cookie: a cookie Sluice sets, signed so that it names no
	//     address and cannot be forged, honoured by every Caddy that holds
	//     the key (Secret, or one kept in Caddy's storage);
	//   - learn: a session cookie the upstream sets, such as JSESSIONID:
	//     later requests carrying it go to the upstream that set it. Needs
	//     the sticky_learn handler before reverse_proxy;
	//   - header: a request header's value, such as an API key.
	By string `json:"by"`
	// The cookie (cookie: default "sluice"; learn) or header field
	// (header).
	Name string `json:"name,omitempty"`
	// client_ip: the bits of an address that identify a client. Default:
	// 32 and 128.
	IPv4Prefix int `json:"ipv4_prefix,omitempty"`
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
	// How long an idle session stays bound. Default: 5m.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// The most sessions the table holds; the least recently used makes
	// room. Default: 100000.
	MaxEntries int `json:"max_entries,omitempty"`
	// cookie: the secret that signs cookies. Default: a random key
	// generated once and kept in Caddy's storage, shared by every
	// instance that shares the storage.
	Secret string `json:"secret,omitempty"`
	// How long an upstream that a reload drops keeps the sessions bound
	// to it. Default: the timeout.
	RemovalGrace caddy.Duration `json:"removal_grace,omitempty"`
	// The Sluice policy that places new sessions. Default:
	// weighted_least_conn.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	fallback    sluicePolicy
	logger      *zap.Logger
	badCookies  *badInput
	warnedLearn *atomic.Bool
}

// CaddyModule returns the Caddy module information.
func (Sticky) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.sticky",
		New: func() caddy.Module { return new(Sticky) },
	}
}

// defaultStickyCookie is the name of the cookie Sluice sets.
const defaultStickyCookie = "sluice"

// Provision sets up the policy and its fallback.
func (p *Sticky) Provision(ctx caddy.Context) error {
	p.logger, p.badCookies, p.warnedLearn = ctx.Logger(), new(badInput), new(atomic.Bool)
	if p.By == "cookie" && p.Name == "" {
		p.Name = defaultStickyCookie
	}
	if p.IPv4Prefix == 0 {
		p.IPv4Prefix = 32
	}
	if p.IPv6Prefix == 0 {
		p.IPv6Prefix = 128
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if p.FallbackRaw == nil {
		p.FallbackRaw = caddyconfig.JSONModuleObject(new(WeightedLeastConn), "policy", "weighted_least_conn", nil)
	}
	mod, err := ctx.LoadModule(p, "FallbackRaw")
	if err != nil {
		return fmt.Errorf("loading sticky's fallback policy: %v", err)
	}
	fb, ok := mod.(sluicePolicy)
	if _, nested := mod.(*Sticky); !ok || nested {
		return fmt.Errorf("sticky's fallback must be one of Sluice's other policies (%s), not %s",
			strings.Join(fallbackPolicies, ", "), mod.(caddy.Module).CaddyModule().ID.Name())
	}
	fc := fb.core()
	if err := fc.fallbackOnly(); err != nil {
		return err
	}
	p.fallback = fb
	p.LoadReports = p.LoadReports || fc.LoadReports
	timeout := time.Duration(p.Timeout)
	if timeout == 0 {
		timeout = persist.DefaultTimeout
	}
	cfg := &sessionsConfig{kind: p.kind(), timeout: timeout, maxEntries: p.MaxEntries, grace: timeout, badCookies: p.badCookies}
	if p.RemovalGrace > 0 {
		cfg.grace = time.Duration(p.RemovalGrace)
	}
	if p.By == "cookie" {
		key, err := p.cookieKey(ctx)
		if err != nil {
			return err
		}
		cfg.tokens = persist.NewTokens(key, timeout)
	}
	err = p.provision(ctx, p.CaddyModule().ID.Name()+" "+fb.(caddy.Module).CaddyModule().ID.Name(), func(pl *pool.Pool, _ policy.Options) policy.Policy {
		return fc.binder.newPolicy(pl)
	}, policy.Options{})
	if err != nil {
		return err
	}
	p.binder.sessions = cfg
	return nil
}

var fallbackPolicies = []string{"weighted_least_conn", "fast_response", "smooth_weighted_round_robin", "two_choices", "load_feedback", "consistent_hash", "source_ip_hash"}

// kind names how sessions are identified, so that a pool's table is
// kept only while that stays the same.
func (p *Sticky) kind() string {
	if p.By == "client_ip" {
		return fmt.Sprintf("client_ip/%d/%d", p.IPv4Prefix, p.IPv6Prefix)
	}
	return p.By + ":" + p.Name
}

// cookieKeyName is where the generated cookie key lives in Caddy's
// storage.
const cookieKeyName = "sluice/sticky_cookie.key"

// cookieKey returns the key that signs cookies: the configured secret, or
// the one in storage, generated by whichever instance needs it first.
func (p *Sticky) cookieKey(ctx caddy.Context) ([]byte, error) {
	if p.Secret != "" {
		return []byte(caddy.NewReplacer().ReplaceKnown(p.Secret, "")), nil
	}
	storage := ctx.Storage()
	load := func() ([]byte, error) {
		data, err := storage.Load(ctx, cookieKeyName)
		if err != nil {
			return nil, err
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
		if err != nil || len(key) != persist.KeySize {
			return nil, fmt.Errorf("the sticky cookie key in storage (%s) is damaged; delete it to generate another", cookieKeyName)
		}
		return key, nil
	}
	if key, err := load(); !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := storage.Lock(ctx, cookieKeyName); err != nil {
		return nil, fmt.Errorf("locking the sticky cookie key in storage: %v", err)
	}
	defer storage.Unlock(ctx, cookieKeyName)
	if key, err := load(); !errors.Is(err, fs.ErrNotExist) {
		return key, err // another instance made it meanwhile
	}
	key := make([]byte, persist.KeySize)
	rand.Read(key)
	if err := storage.Store(ctx, cookieKeyName, []byte(base64.StdEncoding.EncodeToString(key))); err != nil {
		return nil, fmt.Errorf("storing the sticky cookie key: %v", err)
	}
	return key, nil
}

// Validate checks what JSON configuration may get wrong.
func (p *Sticky) Validate() error {
	if err := p.validateIdentity(); err != nil {
		return err
	}
	if p.Secret != "" && p.By != "cookie" {
		return fmt.Errorf("sticky %s takes no secret: only cookies are signed", p.By)
	}
	if p.Timeout < 0 || p.RemovalGrace < 0 || p.MaxEntries < 0 {
		return errors.New("sticky's timeout, removal_grace and max_entries must not be negative")
	}
	return nil
}

// validateIdentity checks what identifies sessions. Zero prefixes and an
// empty cookie name take their defaults.
func (p *Sticky) validateIdentity() error {
	switch p.By {
	case "client_ip":
		if p.Name != "" {
			return fmt.Errorf("sticky client_ip takes no name, found %q", p.Name)
		}
		if p.IPv4Prefix < 0 || p.IPv4Prefix > 32 || p.IPv6Prefix < 0 || p.IPv6Prefix > 128 {
			return fmt.Errorf("sticky client_ip prefixes must be /1 to /32 and /1 to /128, not /%d and /%d", p.IPv4Prefix, p.IPv6Prefix)
		}
	case "cookie", "learn", "header":
		if p.Name == "" && p.By == "cookie" {
			return nil
		}
		if !validToken(p.Name) {
			what := "cookie name"
			if p.By == "header" {
				what = "header field"
			}
			return fmt.Errorf("sticky %s needs a %s of letters, digits and !#$%%&'*+-.^_`|~, not %q", p.By, what, p.Name)
		}
	case "":
		return errors.New("sticky needs what identifies a session: client_ip, cookie, learn <cookie> or header <field>")
	default:
		return fmt.Errorf("sticky cannot identify sessions by %q; want client_ip, cookie, learn <cookie> or header <field>", p.By)
	}
	return nil
}

// validToken reports whether name is an HTTP token, as cookie names and
// header fields must be.
func validToken(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if c > '~' || c <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", c) {
			return false
		}
	}
	return true
}

// session is what a request says of its session.
type session struct {
	key    uint64 // the table key, when hasKey
	hasKey bool
	bound  *pool.Backend // where the session is bound, if anywhere
	issued time.Time     // cookie: when its token was issued
}

// Select returns the upstream of the request's session, or places a new
// session.
func (p *Sticky) Select(upstreams reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if len(upstreams) == 0 {
		return nil
	}
	b := p.binder.bind(upstreams)
	sess := p.identify(r, b.sessions)
	u, placed := b.place(r, p.fallback.affinity(r), sess.bound)
	if u == nil || caddyhttp.GetVar(r.Context(), failedOverVar) != nil {
		// Another pool's upstream, or none: this pool binds nothing to
		// it, nor learns from its answer.
		if rec, ok := caddyhttp.GetVar(r.Context(), learnVar).(*learnRecorder); ok {
			rec.expect(nil, "", nil)
		}
		return u
	}
	p.remember(r, w, b, sess, placed)
	return u
}

func (p *Sticky) identify(r *http.Request, s *sessions) session {
	var sess session
	switch p.By {
	case "client_ip":
		if a, ok := clientAddr(r); ok {
			sess.key, sess.hasKey = policy.HashAddr(a, p.IPv4Prefix, p.IPv6Prefix), true
		}
	case "header":
		if v := r.Header.Get(p.Name); v != "" {
			sess.key, sess.hasKey = persist.Key(v), true
		}
	case "learn":
		if c, err := r.Cookie(p.Name); err == nil && c.Value != "" {
			sess.key, sess.hasKey = persist.Key(c.Value), true
		}
	case "cookie":
		c, err := r.Cookie(p.Name)
		if err != nil {
			return sess
		}
		id, issued, err := p.binder.sessions.tokens.Parse(c.Value, time.Now())
		if err != nil {
			p.badToken(r, err)
			return sess
		}
		if dir := s.directory.Load(); dir != nil {
			sess.bound, sess.issued = (*dir)[id], issued
		}
		return sess
	}
	if sess.hasKey {
		sess.bound = s.table.Lookup(sess.key)
	}
	return sess
}

// remember binds the session where it was placed, and reports a move.
func (p *Sticky) remember(r *http.Request, w http.ResponseWriter, b *binding, sess session, placed placement) {
	now := time.Now()
	if sess.bound != nil && !placed.stays {
		b.sessions.moved(b, sess.bound, placed.backend, persist.MoveReason(b.pool.Snapshot(), sess.bound, placed.avoided, now))
	}
	switch p.By {
	case "cookie":
		tokens := p.binder.sessions.tokens
		if w != nil && (!placed.stays || tokens.Stale(sess.issued, now)) {
			setCookie(w, &http.Cookie{
				Name: p.Name, Value: tokens.Issue(tokens.ID(placed.backend.Address), now),
				Path: "/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
			})
		}
		return
	case "learn":
		if rec, ok := caddyhttp.GetVar(r.Context(), learnVar).(*learnRecorder); ok {
			rec.expect(b.sessions.table, p.Name, placed.backend)
		} else if !p.warnedLearn.Swap(true) {
			p.logger.Error("lb_policy sticky learn cannot see responses: put the sticky_learn directive before reverse_proxy",
				zap.String("cookie", p.Name))
		}
	}
	if sess.hasKey && !placed.stays {
		b.sessions.table.Bind(sess.key, placed.backend)
	}
}

// setCookie sets c on the response, replacing any earlier attempt's.
func setCookie(w http.ResponseWriter, c *http.Cookie) {
	h := w.Header()
	prefix := c.Name + "="
	kept := h.Values("Set-Cookie")[:0:0]
	for _, v := range h.Values("Set-Cookie") {
		if !strings.HasPrefix(v, prefix) {
			kept = append(kept, v)
		}
	}
	h["Set-Cookie"] = append(kept, c.String())
}

// badToken counts a cookie that is not a valid token, which is ignored:
// the request starts a new session and the cookie is replaced.
func (p *Sticky) badToken(r *http.Request, err error) {
	if n, log := p.badCookies.add(); log {
		p.logger.Warn("ignoring a bad sticky cookie", zap.String("cookie", p.Name), zap.String("remote", r.RemoteAddr),
			zap.Error(err), zap.Uint64("bad_cookies", n))
	}
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy sticky client_ip [/<ipv4 bits> [/<ipv6 bits>]] | cookie [<name>] | learn <cookie> | header <field> {
//		timeout <duration>
//		max_entries <n>
//		secret <secret>
//		removal_grace <duration>
//		fallback <policy> [<args...>] [{ <policy options> }]
//		pool, failover, weight, standby and health options
//	}
func (p *Sticky) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if !d.NextArg() {
		return d.Err("sticky needs what identifies a session: client_ip, cookie, learn <cookie> or header <field>")
	}
	p.By = d.Val()
	args := d.RemainingArgs()
	switch p.By {
	case "client_ip":
		if len(args) > 2 {
			return d.Errf("sticky client_ip takes an IPv4 and an IPv6 prefix, found extra %q", args[2])
		}
		for i, arg := range args {
			bits, err := parsePrefix(arg, []int{32, 128}[i])
			if err != nil {
				return d.Errf("sticky client_ip %s prefix %v", []string{"IPv4", "IPv6"}[i], err)
			}
			*[]*int{&p.IPv4Prefix, &p.IPv6Prefix}[i] = bits
		}
	case "cookie", "learn", "header":
		if len(args) > 1 {
			return d.Errf("sticky %s takes one name, found extra %q", p.By, args[1])
		}
		if len(args) == 1 {
			p.Name = args[0]
		}
	}
	if err := p.validateIdentity(); err != nil {
		return d.Err(err.Error())
	}
	return p.unmarshalBlock(d, "sticky", p.unmarshalOption)
}

func (p *Sticky) unmarshalOption(d *caddyfile.Dispenser) (bool, error) {
	switch d.Val() {
	case "timeout", "removal_grace":
		field := &p.Timeout
		if d.Val() == "removal_grace" {
			field = &p.RemovalGrace
		}
		name := d.Val()
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil || dur <= 0 {
			return true, d.Errf("%s must be a positive duration such as 5m, not %q", name, d.Val())
		}
		*field = caddy.Duration(dur)
	case "max_entries":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil || n < 1 {
			return true, d.Errf("max_entries must be a positive whole number, not %q", d.Val())
		}
		p.MaxEntries = n
	case "secret":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		if p.By != "cookie" {
			return true, d.Errf("sticky %s takes no secret: only cookies are signed", p.By)
		}
		p.Secret = d.Val()
	case "fallback":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		raw, err := loadFallbackPolicy(d)
		if err != nil {
			return true, err
		}
		p.FallbackRaw = raw
		return true, nil
	default:
		return false, nil
	}
	if d.NextArg() {
		return true, d.ArgErr()
	}
	return true, nil
}

// fallbackOnly checks that a policy used as sticky's fallback leaves the
// pool's options to sticky, which owns the pool.
func (s *selector) fallbackOnly() error {
	if s.Pool != "" || s.Failover != "" || s.Health != nil || len(s.Weights) > 0 || len(s.Standby) > 0 {
		return errors.New("give pool, failover, weight, standby and health options in sticky's block, not in its fallback's")
	}
	return nil
}

// loadFallbackPolicy reads a fallback policy's name, arguments and block,
// as Caddy's own policies read theirs.
func loadFallbackPolicy(d *caddyfile.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	modID := "http.reverse_proxy.selection_policies." + name
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		return nil, err
	}
	if _, ok := unm.(sluicePolicy); !ok {
		return nil, d.Errf("sticky's fallback must be one of Sluice's other policies (%s), not %s", strings.Join(fallbackPolicies, ", "), name)
	}
	if _, nested := unm.(*Sticky); nested {
		return nil, d.Errf("sticky cannot fall back on sticky")
	}
	if err := unm.(sluicePolicy).core().fallbackOnly(); err != nil {
		return nil, d.Err(err.Error())
	}
	return caddyconfig.JSONModuleObject(unm, "policy", name, nil), nil
}

// Interface guards
var (
	_ reverseproxy.Selector = (*Sticky)(nil)
	_ caddy.Provisioner     = (*Sticky)(nil)
	_ caddy.Validator       = (*Sticky)(nil)
	_ caddy.CleanerUpper    = (*Sticky)(nil)
	_ caddyfile.Unmarshaler = (*Sticky)(nil)
)
