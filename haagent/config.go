package haagent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	sockaddrtemplate "github.com/hashicorp/go-sockaddr/template"

	"github.com/sluicelb/sluice/lbcore/health"
	"github.com/sluicelb/sluice/lbcore/notify"
)

// Config is a parsed configuration file: the virtual routers this host
// takes part in and where their transitions are reported.
//
// The format is line-oriented: one directive per line, words separated by
// blanks, "double quotes" around a word with blanks, # to the end of the
// line a comment, and a go-sockaddr template {{ ... }} standing for the
// interface names or addresses it yields on this host. A router's
// directives sit in a block:
//
//	webhook URL [secret SECRET]
//	mail SERVER from ADDRESS to ADDRESS...
//	router NAME {
//		interface NAME|TEMPLATE        # required
//		vrid 1-255                     # required
//		priority 1-255                 # default 100; 255 owns the addresses
//		advert DURATION                # default 1s; 10ms steps, at most 40.95s
//		vip ADDRESS[/PREFIX]...        # at least one; all of one family
//		preempt on|off|delay DURATION  # default on
//		peers ADDRESS|TEMPLATE...      # unicast instead of multicast; our own skipped
//		source ADDRESS|TEMPLATE        # default: the interface's first address
//		announce COUNT [every DURATION]  # default 5 every 0s
//		track http URL [OPTIONS]       # OPTIONS: weight N, every D, timeout D, rise N, fall N
//		track tcp HOST:PORT [OPTIONS]
//		track script "COMMAND" [OPTIONS]
//		track interface NAME [weight N]
//		notify COMMAND [ARGS...]       # runs with INSTANCE NAME STATE PRIORITY appended
//	}
type Config struct {
	File     string
	Routers  []*RouterConfig
	Webhooks []*notify.Webhook
	Mails    []*notify.Mail
}

// RouterConfig is one virtual router.
type RouterConfig struct {
	Name      string
	Line      int // where its block starts
	Interface string
	VRID      uint8
	Priority  uint8
	Interval  time.Duration
	VIPs      []netip.Prefix
	Preempt   bool
	// PreemptDelay holds preemption off for this long after a
	// lower-priority master is first seen.
	PreemptDelay time.Duration
	// Peers, when set, receive adverts by unicast instead of the group.
	Peers []netip.Addr
	// Source is the address adverts are sent from; invalid means the
	// interface's first address of the family (IPv6: link-local).
	Source netip.Addr
	// Announce is how many gratuitous ARPs or unsolicited neighbour
	// advertisements go out per address on becoming master, AnnounceEvery
	// apart.
	Announce      int
	AnnounceEvery time.Duration
	Tracks        []TrackConfig
	// Notify are commands run on every transition.
	Notify [][]string
}

// IPv6 reports whether the router speaks VRRP over IPv6.
func (r *RouterConfig) IPv6() bool { return r.VIPs[0].Addr().Is6() }

// TrackConfig is one tracked thing: when it fails, the router's priority
// drops by -Weight (a negative weight), or rises by Weight while it passes
// (a positive one); with Weight 0 a failure forces FAULT.
type TrackConfig struct {
	Kind    string // "http", "tcp", "script", "interface"
	Target  string // URL, host:port, command line, interface name
	Weight  int
	Every   time.Duration
	Timeout time.Duration
	Rise    int
	Fall    int
	Line    int
}

// String is the track's definition, which identifies it across reloads.
func (t TrackConfig) String() string {
	return fmt.Sprintf("%s %q weight %d every %v timeout %v rise %d fall %d", t.Kind, t.Target, t.Weight, t.Every, t.Timeout, t.Rise, t.Fall)
}

// ConfigError is a configuration mistake and where it is.
type ConfigError struct {
	File string
	Line int
	Err  error
}

func (e *ConfigError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *ConfigError) Unwrap() error { return e.Err }

// Defaults, as keepalived's where it has one.
const (
	DefaultPriority = 100
	DefaultInterval = time.Second
	DefaultAnnounce = 5
	defaultTrackGap = time.Second
)

// LoadConfig reads and checks the configuration file at path.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	defer f.Close()
	return ParseConfig(path, f)
}

// ParseConfig parses a configuration named name (for error messages) and
// checks it against this host: templates are evaluated and interfaces
// must exist.
func ParseConfig(name string, r io.Reader) (*Config, error) {
	p := &parser{file: name, cfg: &Config{File: name}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		p.line++
		words, err := splitWords(sc.Text())
		if err != nil {
			return nil, p.errorf("%v", err)
		}
		if len(words) == 0 {
			continue
		}
		if err := p.directive(words); err != nil {
			var ce *ConfigError
			if errors.As(err, &ce) {
				return nil, err
			}
			return nil, &ConfigError{File: p.file, Line: p.line, Err: err}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, p.errorf("%v", err)
	}
	if p.router != nil {
		return nil, &ConfigError{File: p.file, Line: p.router.Line, Err: fmt.Errorf("router %s: block not closed with }", p.router.Name)}
	}
	if len(p.cfg.Routers) == 0 {
		return nil, p.errorf("no router block: nothing to do")
	}
	return p.cfg, nil
}

type parser struct {
	file   string
	line   int
	cfg    *Config
	router *RouterConfig // the open block, if any
	seen   map[string]int
}

func (p *parser) errorf(format string, args ...any) error {
	return &ConfigError{File: p.file, Line: p.line, Err: fmt.Errorf(format, args...)}
}

func (p *parser) directive(w []string) error {
	if p.router != nil {
		if w[0] == "}" {
			if len(w) != 1 {
				return fmt.Errorf("unexpected %q after }", w[1])
			}
			return p.closeRouter()
		}
		return p.routerDirective(w)
	}
	switch w[0] {
	case "router":
		if len(w) != 3 || w[2] != "{" {
			return errors.New(`want "router NAME {"`)
		}
		for _, r := range p.cfg.Routers {
			if r.Name == w[1] {
				return fmt.Errorf("router %s is already defined at line %d", w[1], r.Line)
			}
		}
		p.router = &RouterConfig{Name: w[1], Line: p.line, Priority: DefaultPriority, Interval: DefaultInterval,
			Preempt: true, Announce: DefaultAnnounce}
		p.seen = map[string]int{}
		return nil
	case "webhook":
		return p.webhook(w[1:])
	case "mail":
		return p.mail(w[1:])
	case "}":
		return errors.New("} without an open block")
	}
	return fmt.Errorf("unknown directive %q (want router, webhook or mail)", w[0])
}

func (p *parser) webhook(args []string) error {
	if len(args) != 1 && (len(args) != 3 || args[1] != "secret") {
		return errors.New("want: webhook URL [secret SECRET]")
	}
	h := &notify.Webhook{URL: args[0]}
	if len(args) == 3 {
		h.Secret = args[2]
	}
	if err := h.Validate(); err != nil {
		return err
	}
	p.cfg.Webhooks = append(p.cfg.Webhooks, h)
	return nil
}

func (p *parser) mail(args []string) error {
	if len(args) < 5 || args[1] != "from" || args[3] != "to" {
		return errors.New("want: mail SERVER from ADDRESS to ADDRESS [ADDRESS]")
	}
	m := &notify.Mail{Server: args[0], From: args[2], To: args[4:]}
	if err := m.Validate(); err != nil {
		return err
	}
	p.cfg.Mails = append(p.cfg.Mails, m)
	return nil
}

// once rejects a second occurrence of a directive that takes one value.
func (p *parser) once(name string) error {
	if l, ok := p.seen[name]; ok {
		return fmt.Errorf("%s given twice (first at line %d)", name, l)
	}
	p.seen[name] = p.line
	return nil
}

func (p *parser) routerDirective(w []string) error {
	r := p.router
	args := w[1:]
	one := func() (string, error) {
		if err := p.once(w[0]); err != nil {
			return "", err
		}
		if len(args) != 1 {
			return "", fmt.Errorf("%s takes one value, got %d", w[0], len(args))
		}
		return args[0], nil
	}
	switch w[0] {
	case "interface":
		v, err := one()
		if err != nil {
			return err
		}
		r.Interface, err = resolveInterface(v)
		return err
	case "vrid":
		v, err := one()
		if err != nil {
			return err
		}
		n, err := intIn(v, 1, 255, "vrid")
		r.VRID = uint8(n)
		return err
	case "priority":
		v, err := one()
		if err != nil {
			return err
		}
		n, err := intIn(v, 1, 255, "priority")
		r.Priority = uint8(n)
		return err
	case "advert":
		v, err := one()
		if err != nil {
			return err
		}
		d, err := duration(v)
		if err != nil {
			return err
		}
		if d < 10*time.Millisecond || d > maxInterval*10*time.Millisecond || d%(10*time.Millisecond) != 0 {
			return fmt.Errorf("advert %v: VRRPv3 counts in centiseconds, want 10ms to 40.95s in steps of 10ms", d)
		}
		r.Interval = d
		return nil
	case "vip":
		if len(args) == 0 {
			return errors.New("vip needs at least one address")
		}
		for _, a := range args {
			vips, err := resolvePrefixes(a)
			if err != nil {
				return err
			}
			r.VIPs = append(r.VIPs, vips...)
		}
		return nil
	case "preempt":
		if err := p.once(w[0]); err != nil {
			return err
		}
		switch {
		case len(args) == 1 && args[0] == "on":
			r.Preempt = true
		case len(args) == 1 && args[0] == "off":
			r.Preempt = false
		case len(args) == 2 && args[0] == "delay":
			d, err := duration(args[1])
			if err != nil {
				return err
			}
			r.Preempt, r.PreemptDelay = true, d
		default:
			return errors.New("want: preempt on|off|delay DURATION")
		}
		return nil
	case "peers":
		if err := p.once(w[0]); err != nil {
			return err
		}
		if len(args) == 0 {
			return errors.New("peers needs at least one address")
		}
		for _, a := range args {
			ips, err := resolveAddrs(a)
			if err != nil {
				return err
			}
			for _, ip := range ips {
				if !isLocal(ip) { // one file serves both hosts of a pair
					r.Peers = append(r.Peers, ip)
				}
			}
		}
		if len(r.Peers) == 0 {
			return errors.New("peers lists only this host's own addresses: no one to send adverts to")
		}
		return nil
	case "source":
		v, err := one()
		if err != nil {
			return err
		}
		ips, err := resolveAddrs(v)
		if err != nil {
			return err
		}
		if len(ips) != 1 {
			return fmt.Errorf("source %s yields %d addresses, want one", v, len(ips))
		}
		r.Source = ips[0]
		return nil
	case "announce":
		if err := p.once(w[0]); err != nil {
			return err
		}
		if len(args) != 1 && (len(args) != 3 || args[1] != "every") {
			return errors.New("want: announce COUNT [every DURATION]")
		}
		n, err := intIn(args[0], 0, 100, "announce count")
		if err != nil {
			return err
		}
		r.Announce = n
		if len(args) == 3 {
			if r.AnnounceEvery, err = duration(args[2]); err != nil {
				return err
			}
		}
		return nil
	case "track":
		t, err := parseTrack(args)
		if err != nil {
			return err
		}
		t.Line = p.line
		r.Tracks = append(r.Tracks, t)
		return nil
	case "notify":
		if len(args) == 0 {
			return errors.New("want: notify COMMAND [ARGS]")
		}
		r.Notify = append(r.Notify, args)
		return nil
	}
	return fmt.Errorf("unknown directive %q in router %s", w[0], r.Name)
}

// closeRouter checks a finished block as a whole.
func (p *parser) closeRouter() error {
	r := p.router
	p.router = nil
	fail := func(format string, args ...any) error {
		return &ConfigError{File: p.file, Line: r.Line, Err: fmt.Errorf("router "+r.Name+": "+format, args...)}
	}
	if r.Interface == "" {
		return fail("no interface")
	}
	if r.VRID == 0 {
		return fail("no vrid")
	}
	if len(r.VIPs) == 0 {
		return fail("no vip: a virtual router needs an address to float")
	}
	v6 := r.VIPs[0].Addr().Is6()
	for _, v := range r.VIPs {
		if v.Addr().Is6() != v6 {
			return fail("vips %s and %s differ in family; VRRP carries one family per router, so use two routers", r.VIPs[0], v)
		}
	}
	for _, a := range r.Peers {
		if a.Is6() != v6 {
			return fail("peer %s is not of the vips' family", a)
		}
	}
	if r.Source.IsValid() && r.Source.Is6() != v6 {
		return fail("source %s is not of the vips' family", r.Source)
	}
	for _, o := range p.cfg.Routers {
		if o.Interface == r.Interface && o.VRID == r.VRID && o.IPv6() == v6 {
			return fail("vrid %d on %s is already used by router %s (line %d)", r.VRID, r.Interface, o.Name, o.Line)
		}
	}
	p.cfg.Routers = append(p.cfg.Routers, r)
	return nil
}

func parseTrack(args []string) (TrackConfig, error) {
	if len(args) < 2 {
		return TrackConfig{}, errors.New("want: track http|tcp|script|interface TARGET [OPTIONS]")
	}
	t := TrackConfig{Kind: args[0], Target: args[1], Every: defaultTrackGap, Rise: health.DefaultRise, Fall: health.DefaultFall}
	switch t.Kind {
	case "http":
		if _, _, err := parseHTTPTarget(t.Target); err != nil {
			return t, err
		}
	case "tcp":
		if _, _, err := net.SplitHostPort(t.Target); err != nil {
			return t, fmt.Errorf("track tcp %s: want HOST:PORT", t.Target)
		}
	case "script":
		if len(strings.Fields(t.Target)) == 0 {
			return t, errors.New("track script: empty command")
		}
	case "interface":
	default:
		return t, fmt.Errorf("unknown track kind %q (want http, tcp, script or interface)", t.Kind)
	}
	opts := args[2:]
	if len(opts)%2 != 0 {
		return t, fmt.Errorf("track option %q has no value", opts[len(opts)-1])
	}
	timeout := time.Duration(0)
	for i := 0; i < len(opts); i += 2 {
		k, v := opts[i], opts[i+1]
		if t.Kind == "interface" && k != "weight" {
			return t, fmt.Errorf("track interface takes only weight, not %q", k)
		}
		var err error
		switch k {
		case "weight":
			t.Weight, err = intIn(v, -253, 253, "weight")
		case "every":
			t.Every, err = duration(v)
			if err == nil && t.Every <= 0 {
				err = errors.New("every must be positive")
			}
		case "timeout":
			timeout, err = duration(v)
		case "rise":
			t.Rise, err = intIn(v, 1, 1000, "rise")
		case "fall":
			t.Fall, err = intIn(v, 1, 1000, "fall")
		default:
			err = fmt.Errorf("unknown track option %q (want weight, every, timeout, rise or fall)", k)
		}
		if err != nil {
			return t, err
		}
	}
	t.Timeout = t.Every
	if timeout > 0 {
		t.Timeout = timeout
	}
	return t, nil
}

// parseHTTPTarget splits a tracked URL into the checker and its target.
func parseHTTPTarget(raw string) (*health.HTTPCheck, string, error) {
	m := httpURL.FindStringSubmatch(raw)
	if m == nil {
		return nil, "", fmt.Errorf("track http %s: want a URL like http://127.0.0.1:2019/config/", raw)
	}
	c := &health.HTTPCheck{TLS: m[1] == "https", Path: m[3]}
	host := m[2]
	if _, _, err := net.SplitHostPort(host); err != nil {
		port := "80"
		if c.TLS {
			port = "443"
		}
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	return c, host, nil
}

var httpURL = regexp.MustCompile(`^(https?)://([^/?#\s]+)(/\S*)?$`)

func intIn(s string, lo, hi int, what string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q: want a whole number from %d to %d", what, s, lo, hi)
	}
	return n, nil
}

func duration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration such as 100ms or 2s", s)
	}
	return d, nil
}

// splitWords cuts a line into words: blanks separate, # starts a comment,
// "..." and {{ ... }} are one word each.
func splitWords(line string) ([]string, error) {
	var words []string
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			return words, nil
		case strings.HasPrefix(line[i:], "{{"):
			end := strings.Index(line[i:], "}}")
			if end < 0 {
				return nil, errors.New("template {{ not closed with }}")
			}
			words = append(words, line[i:i+end+2])
			i += end + 2
		case c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) {
					j++
				}
				b.WriteByte(line[j])
			}
			if j >= len(line) {
				return nil, errors.New(`quote " not closed`)
			}
			words = append(words, b.String())
			i = j + 1
		default:
			j := i
			for j < len(line) && !strings.ContainsRune(" \t\r#\"", rune(line[j])) && !strings.HasPrefix(line[j:], "{{") {
				j++
			}
			words = append(words, line[i:j])
			i = j
		}
	}
	return words, nil
}

// expand evaluates a go-sockaddr template against this host's interfaces;
// a plain word is returned as it is.
func expand(word string) (string, error) {
	if !strings.HasPrefix(word, "{{") {
		return word, nil
	}
	out, err := sockaddrtemplate.Parse(word)
	if err != nil {
		return "", fmt.Errorf("template %s: %w", word, err)
	}
	out = strings.TrimSpace(out)
	if out == "" {
		return "", fmt.Errorf("template %s yields nothing on this host", word)
	}
	return out, nil
}

// resolveInterface returns the interface a name or template stands for. A
// template that selects interfaces rather than names, as in
// {{ GetPrivateInterfaces | include "name" "eth" }}, gives the first one's
// name.
func resolveInterface(word string) (string, error) {
	name, err := expand(word)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(word, "{{") && strings.HasPrefix(name, "[") {
		name, err = expand(strings.TrimSuffix(word, "}}") + ` | attr "name" }}`)
		if err != nil {
			return "", err
		}
	}
	if strings.ContainsAny(name, " \t") {
		return "", fmt.Errorf("interface %s yields %q: want one interface name", word, name)
	}
	if _, err := net.InterfaceByName(name); err != nil {
		return "", fmt.Errorf("interface %s: no such interface on this host", name)
	}
	return name, nil
}

func resolveAddrs(word string) ([]netip.Addr, error) {
	s, err := expand(word)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for f := range strings.FieldsSeq(s) {
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", f)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

func resolvePrefixes(word string) ([]netip.Prefix, error) {
	s, err := expand(word)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for f := range strings.FieldsSeq(s) {
		var p netip.Prefix
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(f)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("vip %q is not an address or ADDRESS/PREFIX", f)
		}
		if a := p.Addr(); a.IsMulticast() || a.IsUnspecified() || a.IsLoopback() {
			return nil, fmt.Errorf("vip %s cannot float: it is a multicast, unspecified or loopback address", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// isLocal tells whether ip is configured on this host.
func isLocal(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == ip {
				return true
			}
		}
	}
	return false
}
