package l4fwd

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/health"
	"github.com/sluicelb/sluice/lbcore/pool"
)

const fullConfig = `# two services
table lb
status 127.0.0.1:9470

service web {
	vip 192.0.2.10
	port 80
	mode nat
	scheduler weighted
	persist 10m
	persist_prefix 24
	snat masquerade
	client_limit 50
	synproxy
	health http /healthz status 2xx
	interval 1s
	timeout 500ms
	rise 3
	fall 2
	real 10.0.2.11:8080 weight 3 max_conns 100 min_conns 80
	real 10.0.2.12 {
		weight 1
		state standby
	}
}

service mail {
	vip 192.0.2.11
	port all
	protocol tcp
	mode dr
	interface eth1
	scheduler source_hash
	reset_on_down
	health tcp
	health_port 25
	real 10.0.3.5 state drain
}
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig("l4.conf", fullConfig)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Table != "lb" || cfg.Status != "127.0.0.1:9470" || len(cfg.Services) != 2 {
		t.Fatalf("got table %q status %q and %d services", cfg.Table, cfg.Status, len(cfg.Services))
	}
	web := cfg.Services[0]
	want := &Service{Name: "web", Line: 5, VIP: netip.MustParseAddr("192.0.2.10"), Port: 80, Proto: "tcp",
		Mode: NAT, Scheduler: Weighted, Persist: 10 * time.Minute, PersistPrefix: 24, SNAT: "masquerade",
		SynProxy: true, ClientLimit: 50,
		Health: HealthConfig{Kind: "http", Path: "/healthz", Status: []health.StatusRange{{Min: 200, Max: 299}},
			Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 3, Fall: 2},
		Reals: []*Real{
			{Addr: netip.MustParseAddr("10.0.2.11"), Port: 8080, Weight: 3, MaxConns: 100, MinConns: 80, Line: 20},
			{Addr: netip.MustParseAddr("10.0.2.12"), Weight: 1, State: pool.Standby, Line: 21},
		}}
	if !reflect.DeepEqual(web, want) {
		t.Errorf("service web:\n got %+v\nwant %+v", web, want)
	}
	mail := cfg.Services[1]
	if mail.Port != 0 || mail.Mode != DR || mail.Interface != "eth1" || mail.Scheduler != SourceHash ||
		mail.FlowTimeout != DefaultFlowTimeout || !mail.ResetOnDown || mail.Health.Port != 25 || mail.Reals[0].State != pool.Draining {
		t.Errorf("service mail: %+v", mail)
	}
	if got := mail.Reals[0].Target(mail); got != "10.0.3.5:0" {
		t.Errorf("target of a port-all real server = %q", got)
	}
}

func TestFormatReadsBack(t *testing.T) {
	cfg, err := ParseConfig("l4.conf", fullConfig)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfig("l4.conf", cfg.Format())
	if err != nil {
		t.Fatalf("formatted configuration does not parse: %v\n%s", err, cfg.Format())
	}
	if a, b := sansLines(cfg), sansLines(again); !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the configuration:\n%s", again.Format())
	}
}

// sansLines clears line numbers, which formatting changes.
func sansLines(cfg *Config) *Config {
	c := *cfg
	c.Services = nil
	for _, s := range cfg.Services {
		s2 := *s
		s2.Line = 0
		s2.Reals = nil
		for _, r := range s.Reals {
			r2 := *r
			r2.Line = 0
			s2.Reals = append(s2.Reals, &r2)
		}
		c.Services = append(c.Services, &s2)
	}
	return &c
}

func TestConfigErrors(t *testing.T) {
	svc := func(body string) string {
		return "service web {\n\tvip 10.0.0.1\n\tport 80\n" + body + "\treal 10.0.2.11\n}\n"
	}
	tests := []struct {
		name, text, want string
	}{
		{"unknown directive", "listen 80\n", "l4.conf:1: unknown directive \"listen\""},
		{"no service", "table x\n", "l4.conf:1: no service defined"},
		{"unclosed block", "service web {\n\tvip 10.0.0.1\n", "l4.conf:1: block opened here is never closed"},
		{"stray brace", "}\n", "l4.conf:1: \"}\" closes no block"},
		{"brace mid-line", "service { web\n}\n", "must end the line"},
		{"bad vip", "service web {\n\tvip 10.0.0.300\n}\n", "l4.conf:2: vip \"10.0.0.300\" is not an IP address"},
		{"ipv6 vip", "service web {\n\tvip 2001:db8::1\n}\n", "only IPv4 services"},
		{"no vip", "service web {\n\tport 80\n\treal 10.0.2.11\n}\n", "l4.conf:1: service web has no vip"},
		{"no port", "service web {\n\tvip 10.0.0.1\n\treal 10.0.2.11\n}\n", "has no port"},
		{"no real", "service web {\n\tvip 10.0.0.1\n\tport 80\n}\n", "has no real server"},
		{"port twice", svc("\tport 70000\n"), "l4.conf:4: port given twice"},
		{"port out of range", "service web {\n\tvip 10.0.0.1\n\tport 70000\n}\n", "l4.conf:3: port \"70000\": want a whole number from 1 to 65535"},
		{"bad mode", svc("\tmode tunnel\n"), "l4.conf:4: mode \"tunnel\": want nat or dr"},
		{"bad weight", svc("\treal 10.0.2.12 weight 0\n"), "l4.conf:4: weight \"0\": want a whole number from 1 to 1000"},
		{"odd real options", svc("\treal 10.0.2.12 weight\n"), "options go in pairs"},
		{"bad state", svc("\treal 10.0.2.12 state up\n"), "l4.conf:4: state \"up\": want active, standby, drain or offline"},
		{"duplicate real", svc("\treal 10.0.2.11\n"), "l4.conf:5: real 10.0.2.11:80 listed twice in service web (first at line 4)"},
		{"duplicate real, port spelt out", svc("\treal 10.0.2.11:80\n"), "l4.conf:5: real 10.0.2.11:80 listed twice in service web (first at line 4)"},
		{"bad duration", svc("\tpersist forever\n"), "l4.conf:4: persist \"forever\": want a positive duration"},
		{"dr without interface", svc("\tmode dr\n"), "l4.conf:4: service web: mode dr needs interface"},
		{"dr synproxy", svc("\tmode dr\n\tinterface eth0\n\tsynproxy\n"), "l4.conf:6: service web: synproxy needs conntrack"},
		{"dr max_conns", svc("\tmode dr\n\tinterface eth0\n\treal 10.0.2.12 max_conns 5\n"), "l4.conf:6: real 10.0.2.12: max_conns needs conntrack"},
		{"min without max", svc("\treal 10.0.2.12 min_conns 5\n"), "l4.conf:4: real 10.0.2.12: min_conns 5 needs a larger max_conns"},
		{"dr port rewrite", svc("\tmode dr\n\tinterface eth0\n\treal 10.0.2.12:8080\n"), "dr cannot change the port"},
		{"nat interface", svc("\tinterface eth0\n"), "interface is for mode dr"},
		{"udp synproxy", svc("\tprotocol udp\n\thealth none\n\tsynproxy\n"), "synproxy needs protocol tcp"},
		{"reset_on_down unchecked", svc("\thealth none\n\treset_on_down\n"), "l4.conf:5: service web: reset_on_down needs health checks"},
		{"reset_on_down with synproxy", svc("\tsynproxy\n\treset_on_down\n"), "l4.conf:5: service web: reset_on_down does not work with synproxy"},
		{"reset_on_down with a value", svc("\treset_on_down yes\n"), "l4.conf:4: reset_on_down takes no value"},
		{"all ports unchecked", "service web {\n\tvip 10.0.0.1\n\tport all\n\treal 10.0.2.11\n}\n", "say which one to check with health_port"},
		{"unknown option", svc("\tmaxconn 5\n"), "l4.conf:4: unknown option \"maxconn\" in service web"},
		{"overlapping vips", svc("") + strings.Replace(svc(""), "service web", "service api", 1),
			"l4.conf:6: service api overlaps service web (line 1): both take tcp 10.0.0.1:80"},
		{"overlap with all ports", svc("") + "service api {\n\tvip 10.0.0.1\n\tport all\n\thealth none\n\treal 10.0.2.11\n}\n",
			"l4.conf:6: service api overlaps service web (line 1): both take tcp 10.0.0.1:80"},
		{"two states", svc("") + "service api {\n\tvip 10.0.0.2\n\tport 80\n\treal 10.0.2.11 state offline\n}\n",
			"l4.conf:9: real 10.0.2.11:80 is offline here but active at line 4"},
		{"health status", svc("\thealth http / status 9xx\n"), "health status \"9xx\""},
		{"service twice", svc("") + strings.Replace(svc(""), "10.0.0.1", "10.0.0.2", 1), "l4.conf:6: service web defined twice (first at line 1)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("l4.conf", tc.text)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.text)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error %v is not a *ConfigError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// FuzzParseConfig: any text either parses or is refused with a located
// error; what parses formats to text that parses to the same configuration.
func FuzzParseConfig(f *testing.F) {
	f.Add(fullConfig)
	f.Add("service a {\n\tvip 10.0.0.1\n\tport 80\n\treal 10.0.0.2\n}\n")
	f.Add("service a {\n\tvip 10.0.0.1\n\tport all\n\thealth none\n\tmode dr\n\tinterface e\n\treal 10.0.0.2 { weight 2 }\n}")
	f.Add("}{\n# comment {\n")
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := ParseConfig("f.conf", text)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Line < 1 {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		again, err := ParseConfig("f.conf", cfg.Format())
		if err != nil {
			t.Fatalf("own output does not re-parse: %v\n%s", err, cfg.Format())
		}
		if !reflect.DeepEqual(sansLines(cfg), sansLines(again)) {
			t.Fatalf("round trip changed the configuration:\n%s\n---\n%s", text, again.Format())
		}
	})
}
