package l4fwd

import (
	"fmt"
	"strings"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// Format writes cfg back as configuration text, every default spelt out:
// what `l4fwd -check` prints, and what ParseConfig reads back unchanged.
func (cfg *Config) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s\n", cfg.Table)
	if cfg.Status != "" {
		fmt.Fprintf(&b, "status %s\n", cfg.Status)
	}
	for _, s := range cfg.Services {
		fmt.Fprintf(&b, "\nservice %s {\n", s.Name)
		line := func(format string, args ...any) { fmt.Fprintf(&b, "\t"+format+"\n", args...) }
		line("vip %s", s.VIP)
		if s.Port == 0 {
			line("port all")
		} else {
			line("port %d", s.Port)
		}
		line("protocol %s", s.Proto)
		line("mode %s", s.Mode)
		line("scheduler %s", s.Scheduler)
		if s.Persist > 0 {
			line("persist %s", s.Persist)
			line("persist_prefix %d", s.PersistPrefix)
		}
		if s.SNAT != "" {
			line("snat %s", s.SNAT)
		}
		if s.Interface != "" {
			line("interface %s", s.Interface)
		}
		if s.FlowTimeout > 0 {
			line("flow_timeout %s", s.FlowTimeout)
		}
		if s.SynProxy {
			line("synproxy")
		}
		if s.ClientLimit > 0 {
			line("client_limit %d", s.ClientLimit)
		}
		if s.ResetOnDown {
			line("reset_on_down")
		}
		h := s.Health
		switch {
		case h.Kind == "http" || h.Kind == "https":
			status := ""
			if len(h.Status) > 0 {
				status = fmt.Sprintf(" status %d-%d", h.Status[0].Min, h.Status[0].Max)
			}
			line("health %s %s%s", h.Kind, h.Path, status)
		default:
			line("health %s", h.Kind)
		}
		if h.Port != 0 {
			line("health_port %d", h.Port)
		}
		line("interval %s", h.Interval)
		line("timeout %s", h.Timeout)
		line("rise %d", h.Rise)
		line("fall %d", h.Fall)
		for _, r := range s.Reals {
			addr := r.Addr.String()
			if r.Port != 0 {
				addr = fmt.Sprintf("%s:%d", r.Addr, r.Port)
			}
			opts := fmt.Sprintf("weight %d", r.Weight)
			if r.MaxConns > 0 {
				opts += fmt.Sprintf(" max_conns %d", r.MaxConns)
			}
			if r.MinConns > 0 {
				opts += fmt.Sprintf(" min_conns %d", r.MinConns)
			}
			line("real %s %s state %s", addr, opts, configState(r.State))
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func configState(s pool.State) string {
	if s == pool.Standby {
		return "standby"
	}
	return stateWord(s)
}
