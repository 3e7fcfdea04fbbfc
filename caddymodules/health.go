package caddymodules

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sluicelb/sluice/lbcore/health"
)

// HealthChecks are Sluice's own checks of a policy's upstreams: any
// protocol, several per backend (all must pass), damped by rise and fall,
// with passive health, port binding groups and slow start. Their verdicts
// survive reloads and reach the events app as backend_down, backend_up and
// backend_flapping.
type HealthChecks struct {
	// The checks, all of which must pass.
	Checks []CheckConfig `json:"checks,omitempty"`
	// Time between rounds of checks. Default: 2s.
	Interval caddy.Duration `json:"interval,omitempty"`
	// Time each check may take. Default: the interval, at most 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Rounds in a row that bring a backend up. Default: 2.
	Rise int `json:"rise,omitempty"`
	// Rounds in a row that take a backend down. Default: 3.
	Fall int `json:"fall,omitempty"`
	// Run a backend's checks one at a time instead of together.
	Sequential bool `json:"sequential,omitempty"`
	// Port binding groups: upstreams listed together (the ports of one
	// media server) go down together when any of them fails.
	Groups [][]string `json:"groups,omitempty"`
	// Ramp a recovered backend's weight from 10% to full over this long.
	SlowStart caddy.Duration `json:"slow_start,omitempty"`
	// Take a backend down after this many proxied requests in a row
	// fail, without waiting for its next check. 0 turns passive health off.
	PassiveFails int `json:"passive_fails,omitempty"`
	// Response statuses that count as failures for passive health, such as
	// "5xx" or "503". Connection errors always count.
	PassiveStatus []string `json:"passive_status,omitempty"`
}

// CheckConfig is one health check.
type CheckConfig struct {
	// What to check: http, https, tcp, tls, smtp, pop3, imap, ftp, dns or
	// agent.
	Kind string `json:"kind"`
	// Probe this port of the backend's host instead of its own port.
	Port int `json:"port,omitempty"`
	// Apply the check only to these upstreams. Default: all.
	For []string `json:"for,omitempty"`

	// http, https and agent over HTTP: the request's path.
	Path string `json:"path,omitempty"`
	// http and https: the Host header, method, passing statuses (such as
	// "2xx" or "200-399") and a regular expression the body must match.
	Host   string   `json:"host,omitempty"`
	Method string   `json:"method,omitempty"`
	Status []string `json:"status,omitempty"`
	Body   string   `json:"body,omitempty"`
	// https and tls: accept any certificate; the name to verify.
	Insecure   bool   `json:"insecure,omitempty"`
	ServerName string `json:"server_name,omitempty"`
	// tls: fail when the certificate expires within this long.
	MinValidity caddy.Duration `json:"min_validity,omitempty"`
	// smtp: the EHLO name.
	Hello string `json:"hello,omitempty"`
	// dns: the name and type asked (default ". NS"), over TCP.
	Query     string `json:"query,omitempty"`
	QueryType string `json:"query_type,omitempty"`
	TCP       bool   `json:"tcp,omitempty"`
	// agent: ask over HTTP (GET path) rather than a TCP line; the text to
	// send first on TCP.
	HTTP bool   `json:"http,omitempty"`
	Send string `json:"send,omitempty"`
}

var checkKinds = []string{"http", "https", "tcp", "tls", "smtp", "pop3", "imap", "ftp", "dns", "agent"}

// checker builds the lbcore checker c describes.
func (c CheckConfig) checker() (health.Checker, error) {
	switch c.Kind {
	case "http", "https":
		statuses, err := parseStatuses(c.Status)
		if err != nil {
			return nil, err
		}
		chk := &health.HTTPCheck{TLS: c.Kind == "https", Path: c.Path, Host: c.Host, Method: c.Method,
			ExpectStatus: statuses, InsecureSkipVerify: c.Insecure, ServerName: c.ServerName, Port: c.Port}
		if c.Body != "" {
			re, err := regexp.Compile(c.Body)
			if err != nil {
				return nil, fmt.Errorf("health %s body %q is not a regular expression: %v", c.Kind, c.Body, err)
			}
			chk.ExpectBody = re
		}
		return chk, nil
	case "tcp":
		return &health.TCPCheck{Port: c.Port}, nil
	case "tls":
		return &health.TLSCheck{ServerName: c.ServerName, InsecureSkipVerify: c.Insecure, MinValidity: time.Duration(c.MinValidity), Port: c.Port}, nil
	case "smtp":
		return &health.SMTPCheck{Hello: c.Hello, Port: c.Port}, nil
	case "pop3":
		return &health.POP3Check{Port: c.Port}, nil
	case "imap":
		return &health.IMAPCheck{Port: c.Port}, nil
	case "ftp":
		return &health.FTPCheck{Port: c.Port}, nil
	case "dns":
		qtype, err := parseQueryType(c.QueryType)
		if err != nil {
			return nil, err
		}
		return &health.DNSCheck{QName: c.Query, Type: qtype, TCP: c.TCP, Port: c.Port}, nil
	case "agent":
		return &health.AgentCheck{HTTP: c.HTTP, Path: c.Path, Send: c.Send, Port: c.Port}, nil
	}
	return nil, fmt.Errorf("unknown health check %q; want one of %s", c.Kind, strings.Join(checkKinds, ", "))
}

var queryTypes = map[string]uint16{"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}

func parseQueryType(s string) (uint16, error) {
	if s == "" {
		return 0, nil
	}
	if t, ok := queryTypes[strings.ToUpper(s)]; ok {
		return t, nil
	}
	return 0, fmt.Errorf("health dns query type %q is not one of A, AAAA, NS, MX, TXT, SRV, SOA, CNAME, PTR", s)
}

// parseStatuses reads "200", "2xx" and "200-399".
func parseStatuses(list []string) ([]health.StatusRange, error) {
	var out []health.StatusRange
	for _, s := range list {
		r, err := health.ParseStatusRange(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// settings returns the monitor settings hc describes.
func (hc *HealthChecks) settings() health.Settings {
	passive, _ := parseStatuses(hc.PassiveStatus) // validated at provisioning
	return health.Settings{
		PassiveStatus: passive,
		Interval:      time.Duration(hc.Interval),
		Timeout:       time.Duration(hc.Timeout),
		Rise:          hc.Rise,
		Fall:          hc.Fall,
		Sequential:    hc.Sequential,
		SlowStart:     health.SlowStart{Period: time.Duration(hc.SlowStart)},
		PassiveFails:  hc.PassiveFails,
	}
}

// validate checks what JSON may get wrong, in plain sentences.
func (hc *HealthChecks) validate() error {
	for _, c := range hc.Checks {
		if _, err := c.checker(); err != nil {
			return err
		}
	}
	if hc.Rise < 0 || hc.Fall < 0 || hc.PassiveFails < 0 {
		return fmt.Errorf("rise, fall and passive_fails must not be negative")
	}
	if hc.Interval < 0 || hc.Timeout < 0 || hc.SlowStart < 0 {
		return fmt.Errorf("health_interval, health_timeout and slow_start must not be negative")
	}
	if _, err := parseStatuses(hc.PassiveStatus); err != nil {
		return fmt.Errorf("passive_fails %v", err)
	}
	for _, g := range hc.Groups {
		if len(g) < 2 {
			return fmt.Errorf("a port binding group needs two or more upstreams, got %v", g)
		}
	}
	return nil
}

// normalize rewrites upstream addresses as reverse_proxy writes them.
func (hc *HealthChecks) normalize() {
	for i := range hc.Checks {
		for j, a := range hc.Checks[i].For {
			hc.Checks[i].For[j] = normalizeAddress(a)
		}
	}
	for _, g := range hc.Groups {
		for j, a := range g {
			g[j] = normalizeAddress(a)
		}
	}
}

// checksFor builds the checks that apply to the upstream at addr.
func (hc *HealthChecks) checksFor(addr string) []health.Checker {
	var out []health.Checker
	for _, c := range hc.Checks {
		if len(c.For) > 0 && !slices.Contains(c.For, addr) {
			continue
		}
		if chk, err := c.checker(); err == nil { // validated at provisioning
			out = append(out, chk)
		}
	}
	return out
}

// groupOf returns the name of addr's port binding group, or "".
func (hc *HealthChecks) groupOf(addr string) string {
	for _, g := range hc.Groups {
		if slices.Contains(g, addr) {
			return strings.Join(g, " ")
		}
	}
	return ""
}

// unmarshalHealthOption reads one health option of a policy block. Syntax:
//
//	health <kind> [<path>] {
//		status <code|class|range...>
//		body <regexp>
//		host <host>
//		method <method>
//		port <port>
//		insecure
//		server_name <name>
//		min_validity <duration>
//		hello <name>
//		query <name> [<type>]
//		tcp
//		http [<path>]
//		send <text>
//		for <upstream...>
//	}
//	health_interval <duration>
//	health_timeout <duration>
//	rise <n>
//	fall <n>
//	health_sequential
//	group <upstream...>
//	slow_start <duration>
//	passive_fails <n> [<status...>]
func (hc *HealthChecks) unmarshalHealthOption(d *caddyfile.Dispenser) (bool, error) {
	switch d.Val() {
	case "health":
		c, err := unmarshalCheck(d)
		if err != nil {
			return true, err
		}
		hc.Checks = append(hc.Checks, c)
	case "health_interval", "health_timeout", "slow_start":
		name := d.Val()
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil || dur <= 0 {
			return true, d.Errf("%s must be a positive duration such as 2s, not %q", name, d.Val())
		}
		switch name {
		case "health_interval":
			hc.Interval = caddy.Duration(dur)
		case "health_timeout":
			hc.Timeout = caddy.Duration(dur)
		default:
			hc.SlowStart = caddy.Duration(dur)
		}
	case "rise", "fall":
		name := d.Val()
		n, err := positiveArg(d, name)
		if err != nil {
			return true, err
		}
		if name == "rise" {
			hc.Rise = n
		} else {
			hc.Fall = n
		}
	case "health_sequential":
		hc.Sequential = true
	case "group":
		g := d.RemainingArgs()
		if len(g) < 2 {
			return true, d.Errf("group takes two or more upstream addresses that go down together")
		}
		hc.Groups = append(hc.Groups, g)
	case "passive_fails":
		n, err := positiveArg(d, "passive_fails")
		if err != nil {
			return true, err
		}
		hc.PassiveFails = n
		for d.NextArg() {
			if _, err := health.ParseStatusRange(d.Val()); err != nil {
				return true, d.Errf("passive_fails %v", err)
			}
			hc.PassiveStatus = append(hc.PassiveStatus, d.Val())
		}
	default:
		return false, nil
	}
	return true, nil
}

func positiveArg(d *caddyfile.Dispenser, name string) (int, error) {
	if !d.NextArg() {
		return 0, d.Errf("%s takes a positive whole number", name)
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 1 {
		return 0, d.Errf("%s must be a positive whole number, not %q", name, d.Val())
	}
	return n, nil
}

func unmarshalCheck(d *caddyfile.Dispenser) (CheckConfig, error) {
	var c CheckConfig
	if !d.NextArg() {
		return c, d.Errf("health takes a check kind: one of %s", strings.Join(checkKinds, ", "))
	}
	c.Kind = d.Val()
	if !slices.Contains(checkKinds, c.Kind) {
		return c, d.Errf("unknown health check %q; want one of %s", c.Kind, strings.Join(checkKinds, ", "))
	}
	if d.NextArg() {
		if c.Kind != "http" && c.Kind != "https" {
			return c, d.Errf("health %s takes no argument; found %q", c.Kind, d.Val())
		}
		c.Path = d.Val()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.Errf("health %s option %s takes one value", c.Kind, opt)
			}
			return args[0], nil
		}
		var err error
		switch opt {
		case "status":
			if len(args) == 0 {
				return c, d.Errf("status takes one or more codes, classes or ranges")
			}
			if _, err := parseStatuses(args); err != nil {
				return c, d.Err(err.Error())
			}
			c.Status = append(c.Status, args...)
		case "body":
			c.Body, err = one()
			if err == nil {
				if _, rerr := regexp.Compile(c.Body); rerr != nil {
					return c, d.Errf("body %q is not a regular expression: %v", c.Body, rerr)
				}
			}
		case "host":
			c.Host, err = one()
		case "method":
			c.Method, err = one()
		case "server_name":
			c.ServerName, err = one()
		case "hello":
			c.Hello, err = one()
		case "send":
			c.Send, err = one()
			c.Send = strings.ReplaceAll(c.Send, `\n`, "\n")
		case "port":
			var p string
			if p, err = one(); err == nil {
				c.Port, err = strconv.Atoi(p)
				if err != nil || c.Port < 1 || c.Port > 65535 {
					return c, d.Errf("port must be 1 to 65535, not %q", p)
				}
			}
		case "min_validity":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur <= 0 {
					return c, d.Errf("min_validity must be a positive duration such as 168h, not %q", v)
				}
				c.MinValidity = caddy.Duration(dur)
			}
		case "insecure":
			c.Insecure = true
		case "tcp":
			c.TCP = true
		case "query":
			if len(args) < 1 || len(args) > 2 {
				return c, d.Errf("query takes a name and an optional type")
			}
			c.Query = args[0]
			if len(args) == 2 {
				if _, err := parseQueryType(args[1]); err != nil {
					return c, d.Err(err.Error())
				}
				c.QueryType = args[1]
			}
		case "http":
			c.HTTP = true
			if len(args) > 0 {
				c.Path = args[0]
			}
		case "for":
			if len(args) == 0 {
				return c, d.Errf("for takes one or more upstream addresses")
			}
			c.For = append(c.For, args...)
		default:
			return c, d.Errf("health %s has no option %q", c.Kind, opt)
		}
		if err != nil {
			return c, err
		}
	}
	if _, err := c.checker(); err != nil {
		return c, d.Err(err.Error())
	}
	return c, nil
}
