package caddymodules

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Members says how a policy treats particular upstreams. Upstreams are
// named by address, never by position, so adding an upstream to
// reverse_proxy cannot shift a weight onto the wrong server.
type Members struct {
	// Weights gives upstreams, by address as written in reverse_proxy, a
	// share relative to the others. Unnamed upstreams weigh 1.
	Weights map[string]int `json:"weights,omitempty"`

	// Standby lists upstreams that take requests only while no other
	// upstream is available. All primaries share them.
	Standby []string `json:"standby,omitempty"`
}

// unmarshalOption reads one of the options every Sluice policy takes:
//
//	weight <upstream> <n>
//	standby <upstream...>
//
// It reports whether the dispenser's current token was such an option.
func (m *Members) unmarshalOption(d *caddyfile.Dispenser) (bool, error) {
	switch d.Val() {
	case "weight":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return true, d.Errf("weight takes an upstream address and a whole number, as in 'weight 10.0.0.1:80 3'")
		}
		w, err := strconv.Atoi(args[1])
		if err != nil || w < 1 {
			return true, d.Errf("weight of %s must be a positive whole number, not %q", args[0], args[1])
		}
		addr := normalizeAddress(args[0])
		if _, dup := m.Weights[addr]; dup {
			return true, d.Errf("weight of %s is given twice", args[0])
		}
		if m.Weights == nil {
			m.Weights = make(map[string]int)
		}
		m.Weights[addr] = w
		return true, nil
	case "standby":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return true, d.Errf("standby takes one or more upstream addresses")
		}
		for _, a := range args {
			m.Standby = append(m.Standby, normalizeAddress(a))
		}
		return true, nil
	}
	return false, nil
}

// validate checks what JSON configuration may get wrong.
func (m *Members) validate() error {
	for addr, w := range m.Weights {
		if w < 1 {
			return fmt.Errorf("weight of %s must be a positive whole number, not %d", addr, w)
		}
	}
	return nil
}

// normalize rewrites addresses the way reverse_proxy writes its upstreams'
// dial addresses, so that 'http://app:8080' and 'app:8080' name the same.
func (m *Members) normalize() {
	if len(m.Weights) > 0 {
		weights := make(map[string]int, len(m.Weights))
		for addr, w := range m.Weights {
			weights[normalizeAddress(addr)] = w
		}
		m.Weights = weights
	}
	for i, addr := range m.Standby {
		m.Standby[i] = normalizeAddress(addr)
	}
}

func (m *Members) weight(addr string) int {
	if w, ok := m.Weights[addr]; ok {
		return w
	}
	return 1
}

func (m *Members) isStandby(addr string) bool { return slices.Contains(m.Standby, addr) }

// names returns every upstream the configuration names.
func (m *Members) names() []string {
	names := slices.Clone(m.Standby)
	for addr := range m.Weights {
		names = append(names, addr)
	}
	return names
}

func normalizeAddress(addr string) string {
	port := ""
	switch {
	case strings.HasPrefix(addr, "http://"):
		addr, port = strings.TrimPrefix(addr, "http://"), "80"
	case strings.HasPrefix(addr, "https://"):
		addr, port = strings.TrimPrefix(addr, "https://"), "443"
	case strings.HasPrefix(addr, "h2c://"):
		addr, port = strings.TrimPrefix(addr, "h2c://"), "80"
	}
	addr = strings.TrimSuffix(addr, "/")
	if port != "" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), port)
		}
	}
	return addr
}
