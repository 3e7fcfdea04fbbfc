package l4fwd

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluicelb/sluice/lbcore/health"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// Config is l4fwd's whole configuration: the virtual services and where the
// status endpoint listens.
type Config struct {
	// File is where the configuration came from, for error messages.
	File string
	// Table names the nftables tables l4fwd owns (one in the ip family for
	// NAT services, one in the netdev family for DR services). Default: l4fwd.
	Table string
	// Status is the host:port of the status and metrics endpoint; empty: none.
	Status   string
	Services []*Service
}

// Mode is how a service forwards packets to its real servers.
type Mode uint8

// The forwarding modes.
const (
	// NAT rewrites the destination address (and port); the load balancer is
	// the real servers' gateway, or, with SNAT, also their source address.
	NAT Mode = iota
	// DR (direct routing) rewrites only the MAC addresses: the real servers
	// hold the VIP themselves and answer the client directly.
	DR
)

func (m Mode) String() string {
	if m == DR {
		return "dr"
	}
	return "nat"
}

// Scheduler says how a new connection picks its real server, in the kernel.
type Scheduler uint8

// The schedulers.
const (
	// Weighted gives real servers new connections in proportion to their
	// weights: NAT in turn (numgen inc over interleaved values: 3:1 gives
	// a a b a), DR by a hash of the flow, as DR keeps no connection state
	// and a flow's packets must find their server even when its flow-map
	// entry is gone (a restarted or failed-over load balancer).
	Weighted Scheduler = iota
	// SourceHash sends every connection of a client address to the same real
	// server while the set of eligible servers does not change.
	SourceHash
)

func (s Scheduler) String() string {
	if s == SourceHash {
		return "source_hash"
	}
	return "weighted"
}

// Service is one virtual service: what clients reach (VIP, protocol, port)
// and the real servers behind it.
type Service struct {
	Name  string
	Line  int
	VIP   netip.Addr
	Port  uint16 // 0: every port
	Proto string // "tcp" or "udp"
	Mode  Mode
	// Scheduler picks the real server of a new connection.
	Scheduler Scheduler
	// Persist keeps a client on its real server while it comes back within
	// this time (0: off). PersistPrefix groups clients by network (32: each
	// address on its own).
	Persist       time.Duration
	PersistPrefix int
	// SNAT (NAT only) rewrites the source of forwarded connections, for
	// one-arm set-ups where the load balancer is not the real servers'
	// gateway: "masquerade" or an address.
	SNAT string
	// Interface (DR only) is the load balancer's device on the real servers'
	// L2 segment.
	Interface string
	// SynProxy (NAT, TCP only) answers SYNs with SYN cookies so a SYN flood
	// never reaches conntrack or the real servers: the "under attack" switch.
	// Connections it proxies go without TCP timestamps, window scaling and
	// SACK (see synproxyChains), so transfers over long, fast paths are
	// slower while it is on.
	SynProxy bool
	// ClientLimit (NAT only) caps the connections one client address may
	// hold open to the service; 0: no cap.
	ClientLimit int
	// FlowTimeout (DR only) is how long an idle flow keeps its real server.
	FlowTimeout time.Duration
	// ResetOnDown forgets the connections (NAT: conntrack entries; DR:
	// flows) of a real server that health checks mark down, so that each
	// one's next packet is scheduled anew and a live server answers it with
	// a reset: its client learns at once, rather than retransmitting into
	// a dead host until its own timeouts give up (IPVS's
	// expire_nodest_conn, HAProxy's on-marked-down shutdown-sessions).
	ResetOnDown bool
	Health      HealthConfig
	Reals       []*Real
}

// HealthConfig says how the daemon checks a service's real servers.
type HealthConfig struct {
	Kind     string // "tcp", "http", "https" or "none"
	Path     string // http(s) only
	Status   []health.StatusRange
	Port     int // probe this port instead of the real server's
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
}

// Real is one real server of a service.
type Real struct {
	Addr netip.Addr
	Port uint16 // NAT only: 0 keeps the client's destination port
	// Weight is the server's share of new connections relative to the
	// service's other servers.
	Weight int
	// MaxConns (NAT only) caps the connections open to this server, in the
	// kernel (connlimit); a new connection over the cap is dropped, and its
	// retransmitted SYN is scheduled anew. 0: no cap.
	MaxConns int
	// MinConns (NAT only, with MaxConns) is the lower threshold of IPVS:
	// a server found full (MaxConns open) leaves the scheduler, so new
	// connections go elsewhere rather than being dropped, until fewer than
	// MinConns remain open. 0: the kernel's cap alone.
	MinConns int
	// State is Active, Standby, Draining or Offline as configured.
	State pool.State
	Line  int
}

// Target is the host:port the real server is reached and checked at.
func (r *Real) Target(s *Service) string {
	port := r.Port
	if port == 0 {
		port = s.Port
	}
	return netip.AddrPortFrom(r.Addr, port).String()
}

// Defaults.
const (
	DefaultTable       = "l4fwd"
	DefaultFlowTimeout = 5 * time.Minute
	defaultInterval    = 2 * time.Second
	defaultTimeout     = time.Second
	// maxWeight keeps every weight representable in the scheduler's 1000
	// slots.
	maxWeight = 1000
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,24}$`)

// LoadConfig reads and checks the configuration file at path.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return ParseConfig(path, string(b))
}

// ParseConfig reads configuration text; file names it in errors. It checks
// everything that can be checked without looking at the host (see
// CheckNetwork for the rest): every error says file, line and what is wrong.
func ParseConfig(file, text string) (*Config, error) {
	ds, err := parseDirectives(file, text)
	if err != nil {
		return nil, err
	}
	p := &parser{file: file}
	cfg := &Config{File: file, Table: DefaultTable}
	for _, d := range ds {
		switch d.name {
		case "table":
			v := p.one(d)
			if p.err == nil && !nameRE.MatchString(v) {
				p.fail(d.line, "table name %q: use up to 24 letters, digits, '_' or '-'", v)
			}
			cfg.Table = v
		case "status":
			v := p.one(d)
			if _, err := netip.ParseAddrPort(v); p.err == nil && err != nil {
				p.fail(d.line, "status %q: want an address and port, like 127.0.0.1:9470", v)
			}
			cfg.Status = v
		case "service":
			if s := p.service(d); s != nil {
				cfg.Services = append(cfg.Services, s)
			}
		default:
			p.fail(d.line, "unknown directive %q (want table, status or service)", d.name)
		}
		if p.err != nil {
			return nil, p.err
		}
	}
	if len(cfg.Services) == 0 {
		return nil, &ConfigError{file, 1, "no service defined"}
	}
	if err := p.crossCheck(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parser interprets directives, keeping the first error.
type parser struct {
	file string
	err  error
}

func (p *parser) fail(line int, format string, args ...any) {
	if p.err == nil {
		p.err = &ConfigError{p.file, line, fmt.Sprintf(format, args...)}
	}
}

func (p *parser) noBlock(d directive) {
	if d.block != nil {
		p.fail(d.line, "%s takes no block", d.name)
	}
}

// one returns d's single argument.
func (p *parser) one(d directive) string {
	p.noBlock(d)
	if len(d.args) != 1 {
		p.fail(d.line, "%s takes one value, got %d", d.name, len(d.args))
		return ""
	}
	return d.args[0]
}

func (p *parser) none(d directive) {
	p.noBlock(d)
	if len(d.args) != 0 {
		p.fail(d.line, "%s takes no value", d.name)
	}
}

func (p *parser) number(line int, name, v string, lo, hi int) int {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(line, "%s %q: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n
}

func (p *parser) duration(line int, name, v string) time.Duration {
	t, err := time.ParseDuration(v)
	if err != nil || t <= 0 {
		p.fail(line, "%s %q: want a positive duration, like 500ms, 10s or 5m", name, v)
	}
	return t
}

func (p *parser) service(d directive) *Service {
	if len(d.args) != 1 {
		p.fail(d.line, "service takes a name: service NAME {")
		return nil
	}
	if d.block == nil {
		p.fail(d.line, "service %s needs a block: service %s {", d.args[0], d.args[0])
		return nil
	}
	s := &Service{
		Name: d.args[0], Line: d.line, Proto: "tcp", PersistPrefix: 32,
		Health: HealthConfig{Kind: "tcp", Interval: defaultInterval, Timeout: defaultTimeout,
			Rise: health.DefaultRise, Fall: health.DefaultFall},
	}
	if !nameRE.MatchString(s.Name) {
		p.fail(d.line, "service name %q: use up to 24 letters, digits, '_' or '-'", s.Name)
	}
	seen := map[string]int{}
	var modeLine, portLine int
	for _, o := range d.block {
		if o.name != "real" {
			if prev, dup := seen[o.name]; dup {
				p.fail(o.line, "%s given twice in service %s (first at line %d)", o.name, s.Name, prev)
			}
			seen[o.name] = o.line
		}
		switch o.name {
		case "vip":
			v := p.one(o)
			a, err := netip.ParseAddr(v)
			switch {
			case p.err != nil:
			case err != nil:
				p.fail(o.line, "vip %q is not an IP address", v)
			case !a.Is4():
				p.fail(o.line, "vip %s: only IPv4 services are supported", v)
			default:
				s.VIP = a
			}
		case "port":
			portLine = o.line
			if v := p.one(o); v != "all" && p.err == nil {
				s.Port = uint16(p.number(o.line, "port", v, 1, 65535))
			}
		case "protocol":
			s.Proto = p.one(o)
			if p.err == nil && s.Proto != "tcp" && s.Proto != "udp" {
				p.fail(o.line, "protocol %q: want tcp or udp", s.Proto)
			}
		case "mode":
			modeLine = o.line
			switch v := p.one(o); v {
			case "nat":
				s.Mode = NAT
			case "dr":
				s.Mode = DR
			default:
				p.fail(o.line, "mode %q: want nat or dr", v)
			}
		case "scheduler":
			switch v := p.one(o); v {
			case "weighted":
				s.Scheduler = Weighted
			case "source_hash":
				s.Scheduler = SourceHash
			default:
				p.fail(o.line, "scheduler %q: want weighted or source_hash", v)
			}
		case "persist":
			s.Persist = p.duration(o.line, "persist", p.one(o))
		case "persist_prefix":
			s.PersistPrefix = p.number(o.line, "persist_prefix", p.one(o), 1, 32)
		case "snat":
			s.SNAT = p.one(o)
			if _, err := netip.ParseAddr(s.SNAT); p.err == nil && s.SNAT != "masquerade" && err != nil {
				p.fail(o.line, "snat %q: want masquerade or an IPv4 address", s.SNAT)
			}
		case "interface":
			s.Interface = p.one(o)
			if p.err == nil && (len(s.Interface) > 15 || strings.ContainsAny(s.Interface, "/ ")) {
				p.fail(o.line, "interface %q is not a device name", s.Interface)
			}
		case "synproxy":
			p.none(o)
			s.SynProxy = true
		case "client_limit":
			s.ClientLimit = p.number(o.line, "client_limit", p.one(o), 1, 1<<20)
		case "flow_timeout":
			s.FlowTimeout = p.duration(o.line, "flow_timeout", p.one(o))
		case "reset_on_down":
			p.none(o)
			s.ResetOnDown = true
		case "health":
			p.healthKind(o, &s.Health)
		case "health_port":
			s.Health.Port = p.number(o.line, "health_port", p.one(o), 1, 65535)
		case "interval":
			s.Health.Interval = p.duration(o.line, "interval", p.one(o))
		case "timeout":
			s.Health.Timeout = p.duration(o.line, "timeout", p.one(o))
		case "rise":
			s.Health.Rise = p.number(o.line, "rise", p.one(o), 1, 100)
		case "fall":
			s.Health.Fall = p.number(o.line, "fall", p.one(o), 1, 100)
		case "real":
			if r := p.real(o); r != nil {
				s.Reals = append(s.Reals, r)
			}
		default:
			p.fail(o.line, "unknown option %q in service %s", o.name, s.Name)
		}
		if p.err != nil {
			return nil
		}
	}
	p.checkService(s, modeLine, portLine, seen)
	if p.err != nil {
		return nil
	}
	return s
}

func (p *parser) healthKind(d directive, h *HealthConfig) {
	p.noBlock(d)
	if len(d.args) == 0 {
		p.fail(d.line, "health needs a kind: tcp, http PATH, https PATH or none")
		return
	}
	h.Kind = d.args[0]
	rest := d.args[1:]
	switch h.Kind {
	case "tcp", "none":
		if len(rest) > 0 {
			p.fail(d.line, "health %s takes no more values", h.Kind)
		}
	case "http", "https":
		h.Path = "/"
		if len(rest) > 0 && strings.HasPrefix(rest[0], "/") {
			h.Path, rest = rest[0], rest[1:]
		}
		if len(rest) == 2 && rest[0] == "status" {
			r, err := health.ParseStatusRange(rest[1])
			if err != nil {
				p.fail(d.line, "health %v", err)
			}
			h.Status = []health.StatusRange{r}
		} else if len(rest) > 0 {
			p.fail(d.line, "health %s: want [PATH] [status CODES], got %q", h.Kind, strings.Join(rest, " "))
		}
	default:
		p.fail(d.line, "health %q: want tcp, http, https or none", h.Kind)
	}
}

// real reads "real ADDR[:PORT] [weight N] [max_conns N] [state S]", the
// options given inline, in a block, or both.
func (p *parser) real(d directive) *Real {
	if len(d.args) == 0 {
		p.fail(d.line, "real needs an address: real 10.0.2.11 [weight 3]")
		return nil
	}
	r := &Real{Weight: 1, Line: d.line}
	addr := d.args[0]
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		r.Addr, r.Port = ap.Addr(), ap.Port()
		if r.Port == 0 {
			p.fail(d.line, "real %s: port 0", addr)
		}
	} else if a, err := netip.ParseAddr(addr); err == nil {
		r.Addr = a
	} else {
		p.fail(d.line, "real %q is not an address or address:port", addr)
		return nil
	}
	if !r.Addr.Is4() {
		p.fail(d.line, "real %s: only IPv4 real servers are supported", addr)
	}
	opts := d.args[1:]
	if len(opts)%2 != 0 {
		p.fail(d.line, "real %s: options go in pairs (weight 3 state drain), %q has no value", addr, opts[len(opts)-1])
		return nil
	}
	type opt struct {
		name, value string
		line        int
	}
	var all []opt
	for i := 0; i < len(opts); i += 2 {
		all = append(all, opt{opts[i], opts[i+1], d.line})
	}
	for _, b := range d.block {
		if len(b.args) != 1 || b.block != nil {
			p.fail(b.line, "%s takes one value", b.name)
			return nil
		}
		all = append(all, opt{b.name, b.args[0], b.line})
	}
	seen := map[string]bool{}
	for _, o := range all {
		if seen[o.name] {
			p.fail(o.line, "real %s: %s given twice", addr, o.name)
		}
		seen[o.name] = true
		switch o.name {
		case "weight":
			r.Weight = p.number(o.line, "weight", o.value, 1, maxWeight)
		case "max_conns":
			r.MaxConns = p.number(o.line, "max_conns", o.value, 1, 1<<24)
		case "min_conns":
			r.MinConns = p.number(o.line, "min_conns", o.value, 1, 1<<24)
		case "state":
			switch o.value {
			case "active":
				r.State = pool.Active
			case "standby":
				r.State = pool.Standby
			case "drain":
				r.State = pool.Draining
			case "offline":
				r.State = pool.Offline
			default:
				p.fail(o.line, "state %q: want active, standby, drain or offline", o.value)
			}
		default:
			p.fail(o.line, "unknown real server option %q (want weight, max_conns, min_conns or state)", o.name)
		}
	}
	if p.err != nil {
		return nil
	}
	return r
}

// checkService checks what a service's options say together.
func (p *parser) checkService(s *Service, modeLine, portLine int, seen map[string]int) {
	at := func(opt string) int {
		if l, ok := seen[opt]; ok {
			return l
		}
		return s.Line
	}
	switch {
	case !s.VIP.IsValid():
		p.fail(s.Line, "service %s has no vip", s.Name)
	case portLine == 0:
		p.fail(s.Line, "service %s has no port (give a number, or all)", s.Name)
	case len(s.Reals) == 0:
		p.fail(s.Line, "service %s has no real server", s.Name)
	case len(s.Reals) > maxWeight:
		p.fail(s.Line, "service %s has %d real servers; at most %d fit the scheduler", s.Name, len(s.Reals), maxWeight)
	}
	if s.Mode == DR {
		switch {
		case s.Interface == "":
			p.fail(modeLine, "service %s: mode dr needs interface (the device on the real servers' segment)", s.Name)
		case s.SNAT != "":
			p.fail(at("snat"), "service %s: snat is for mode nat; in dr the real servers answer the client directly", s.Name)
		case s.SynProxy:
			p.fail(at("synproxy"), "service %s: synproxy needs conntrack, which dr (netdev ingress) does not have; use mode nat", s.Name)
		case s.ClientLimit > 0:
			p.fail(at("client_limit"), "service %s: client_limit needs conntrack, which dr (netdev ingress) does not have; use mode nat", s.Name)
		}
		if s.FlowTimeout == 0 {
			s.FlowTimeout = DefaultFlowTimeout
		}
	} else {
		switch {
		case s.Interface != "":
			p.fail(at("interface"), "service %s: interface is for mode dr", s.Name)
		case s.FlowTimeout != 0:
			p.fail(at("flow_timeout"), "service %s: flow_timeout is for mode dr (nat follows conntrack)", s.Name)
		}
	}
	if s.SynProxy && (s.Proto != "tcp" || s.Port == 0) {
		p.fail(at("synproxy"), "service %s: synproxy needs protocol tcp and one port", s.Name)
	}
	switch {
	case s.ResetOnDown && s.Health.Kind == "none":
		p.fail(at("reset_on_down"), "service %s: reset_on_down needs health checks (with health none no server is ever marked down)", s.Name)
	case s.ResetOnDown && s.SynProxy:
		// synproxy turns nf_conntrack_tcp_loose off, so conntrack would
		// drop a forgotten connection's next packet, not schedule it.
		p.fail(at("reset_on_down"), "service %s: reset_on_down does not work with synproxy (conntrack then drops a forgotten connection's packets instead of scheduling them)", s.Name)
	}
	if s.Health.Kind != "none" && s.Port == 0 && s.Health.Port == 0 {
		p.fail(at("health"), "service %s serves every port: say which one to check with health_port, or health none", s.Name)
	}
	if s.Health.Kind != "none" && s.Proto == "udp" && s.Health.Port == 0 {
		p.fail(at("protocol"), "service %s is udp: health %s probes over TCP, so give health_port (or health none)", s.Name, s.Health.Kind)
	}
	if _, ok := seen["persist_prefix"]; ok && s.Persist == 0 {
		p.fail(at("persist_prefix"), "service %s: persist_prefix without persist", s.Name)
	}
	targets := map[string]int{}
	for _, r := range s.Reals {
		switch {
		case r.Port != 0 && s.Mode == DR:
			p.fail(r.Line, "real %s: dr cannot change the port (the packet reaches the real server unchanged); drop :%d", r.Addr, r.Port)
		case r.Port != 0 && s.Port == 0:
			p.fail(r.Line, "real %s: service %s serves every port, so its real servers take no port", r.Addr, s.Name)
		case r.MaxConns > 0 && s.Mode == DR:
			p.fail(r.Line, "real %s: max_conns needs conntrack, which dr (netdev ingress) does not have", r.Addr)
		case r.MinConns > 0 && r.MinConns >= r.MaxConns:
			p.fail(r.Line, "real %s: min_conns %d needs a larger max_conns (the server returns below min_conns after reaching max_conns)", r.Addr, r.MinConns)
		}
		key := r.Target(s)
		if prev, dup := targets[key]; dup {
			p.fail(r.Line, "real %s listed twice in service %s (first at line %d)", key, s.Name, prev)
		}
		targets[key] = r.Line
	}
}

// crossCheck checks services against each other: names, overlapping VIPs,
// and real servers configured in two states.
func (p *parser) crossCheck(cfg *Config) error {
	names := map[string]*Service{}
	states := map[string]*Real{}
	for i, s := range cfg.Services {
		if prev, dup := names[s.Name]; dup {
			p.fail(s.Line, "service %s defined twice (first at line %d)", s.Name, prev.Line)
		}
		names[s.Name] = s
		for _, o := range cfg.Services[:i] {
			if o.VIP == s.VIP && o.Proto == s.Proto && (o.Port == s.Port || o.Port == 0 || s.Port == 0) {
				p.fail(s.Line, "service %s overlaps service %s (line %d): both take %s %s", s.Name, o.Name, o.Line, s.Proto, overlap(o, s))
			}
		}
		for _, r := range s.Reals {
			t := r.Target(s)
			if prev, ok := states[t]; ok && stateWord(prev.State) != stateWord(r.State) {
				p.fail(r.Line, "real %s is %s here but %s at line %d: one server has one state", t, stateWord(r.State), stateWord(prev.State), prev.Line)
			}
			states[t] = r
		}
	}
	return p.err
}

func overlap(a, b *Service) string {
	if a.Port != 0 && b.Port != 0 {
		return netip.AddrPortFrom(a.VIP, a.Port).String()
	}
	port := max(a.Port, b.Port)
	if port == 0 {
		return a.VIP.String() + " (every port)"
	}
	return netip.AddrPortFrom(a.VIP, port).String()
}

// stateWord is a state as the configuration spells it. Standby is a role,
// not an operator's state, so it reads as active here.
func stateWord(s pool.State) string {
	switch s {
	case pool.Draining:
		return "drain"
	case pool.Offline:
		return "offline"
	}
	return "active"
}
