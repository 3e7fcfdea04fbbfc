package haagent

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

const minimalConfig = `
router web {
	interface lo
	vrid 51
	vip 10.99.0.100/24
}
`

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("a.conf", strings.NewReader(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routers[0]
	if r.Name != "web" || r.Line != 2 || r.Interface != "lo" || r.VRID != 51 || r.Priority != 100 ||
		r.Interval != time.Second || !r.Preempt || r.Announce != 5 || r.IPv6() {
		t.Errorf("defaults: %+v", *r)
	}
}

func TestParseConfigFull(t *testing.T) {
	const conf = `# comment
webhook https://hooks.example.com/x secret "s3 cret"
mail smtp.example.com:587 from lb@example.com to a@example.com b@example.com
router web {   # trailing comment
	interface {{ GetAllInterfaces | include "name" "^lo$" }}
	vrid 52
	priority 255
	advert 120ms
	vip fd99::100/64 fd99::101
	preempt delay 3s
	peers fd99::12 {{ GetAllInterfaces | include "name" "^lo$" | include "type" "ipv6" | attr "address" }}
	source fd99::11
	announce 3 every 20ms
	track http http://127.0.0.1:2019/config/ weight -60 every 500ms timeout 200ms rise 1 fall 2
	track tcp [::1]:443
	track script "/bin/check --fast" weight 10
	track interface lo weight -5
	notify /usr/local/bin/n "arg with space"
}
`
	c, err := ParseConfig("full.conf", strings.NewReader(conf))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routers[0]
	if r.Interface != "lo" || r.Priority != 255 || r.Interval != 120*time.Millisecond || !r.IPv6() {
		t.Errorf("router: %+v", *r)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("fd99::100/64"), netip.MustParsePrefix("fd99::101/128")}; !slices.Equal(r.VIPs, want) {
		t.Errorf("VIPs %v, want %v", r.VIPs, want)
	}
	// ::1 is this host's own, so the template's peer is skipped.
	if want := []netip.Addr{netip.MustParseAddr("fd99::12")}; !slices.Equal(r.Peers, want) {
		t.Errorf("Peers %v, want %v", r.Peers, want)
	}
	if !r.Preempt || r.PreemptDelay != 3*time.Second || r.Announce != 3 || r.AnnounceEvery != 20*time.Millisecond {
		t.Errorf("preempt/announce: %+v", *r)
	}
	if len(r.Tracks) != 4 {
		t.Fatalf("tracks: %+v", r.Tracks)
	}
	if h := r.Tracks[0]; h.Weight != -60 || h.Every != 500*time.Millisecond || h.Timeout != 200*time.Millisecond || h.Rise != 1 || h.Fall != 2 || h.Line != 14 {
		t.Errorf("http track: %+v", h)
	}
	if s := r.Tracks[2]; s.Target != "/bin/check --fast" || s.Weight != 10 || s.Timeout != time.Second {
		t.Errorf("script track: %+v", s)
	}
	if !slices.Equal(r.Notify[0], []string{"/usr/local/bin/n", "arg with space"}) {
		t.Errorf("notify: %q", r.Notify)
	}
	if len(c.Webhooks) != 1 || c.Webhooks[0].Secret != "s3 cret" || len(c.Mails) != 1 || len(c.Mails[0].To) != 2 {
		t.Errorf("notifiers: %+v %+v", c.Webhooks, c.Mails)
	}
}

func TestParseConfigErrors(t *testing.T) {
	router := func(body string) string {
		return "router web {\n\tinterface lo\n\tvrid 51\n\tvip 10.99.0.100/24\n" + body + "}\n"
	}
	cases := []struct {
		name, conf, want string
	}{
		{"empty", "# nothing\n", "c.conf:1: no router block"},
		{"unknown top level", "frobnicate 1\n", `c.conf:1: unknown directive "frobnicate"`},
		{"unknown in router", router("\tpriorty 100\n"), `c.conf:5: unknown directive "priorty" in router web`},
		{"unclosed block", "router web {\n\tvrid 1\n", "c.conf:1: router web: block not closed"},
		{"stray brace", "}\n", "c.conf:1: } without an open block"},
		{"vrid range", router("\tvrid 256\n"), "c.conf:5: vrid given twice (first at line 3)"},
		{"vrid value", "router web {\n\tvrid 0\n}\n", `c.conf:2: vrid "0": want a whole number from 1 to 255`},
		{"priority value", router("\tpriority high\n"), `c.conf:5: priority "high": want a whole number from 1 to 255`},
		{"advert not centiseconds", router("\tadvert 105ms\n"), "c.conf:5: advert 105ms: VRRPv3 counts in centiseconds"},
		{"advert too long", router("\tadvert 41s\n"), "c.conf:5: advert 41s"},
		{"advert not a duration", router("\tadvert 1\n"), `c.conf:5: "1" is not a duration`},
		{"bad vip", router("\tvip 10.99.0.300\n"), `c.conf:5: vip "10.99.0.300" is not an address`},
		{"multicast vip", router("\tvip 224.0.0.1\n"), "c.conf:5: vip 224.0.0.1/32 cannot float"},
		{"mixed family", router("\tvip fd00::1\n"), "c.conf:1: router web: vips 10.99.0.100/24 and fd00::1/128 differ in family"},
		{"peer family", router("\tpeers fd00::1\n"), "c.conf:1: router web: peer fd00::1 is not of the vips' family"},
		{"missing interface", "router web {\n\tvrid 1\n\tvip 10.0.0.1\n}\n", "c.conf:1: router web: no interface"},
		{"missing vip", "router web {\n\tinterface lo\n\tvrid 1\n}\n", "c.conf:1: router web: no vip"},
		{"no such interface", "router web {\n\tinterface hat-nonesuch\n}\n", "c.conf:2: interface hat-nonesuch: no such interface"},
		{"empty template", "router web {\n\tinterface {{ GetAllInterfaces | include \"name\" \"^hat-none$\" | attr \"name\" }}\n}\n", "yields nothing on this host"},
		{"broken template", "router web {\n\tinterface {{ GetNothing }}\n}\n", `c.conf:2: template {{ GetNothing }}`},
		{"unclosed template", "router web {\n\tinterface {{ GetAllInterfaces\n}\n", "c.conf:2: template {{ not closed"},
		{"unclosed quote", "router web {\n\tnotify \"/bin/x\n}\n", `c.conf:2: quote " not closed`},
		{"duplicate router", router("") + router(""), "c.conf:6: router web is already defined at line 1"},
		{"duplicate vrid", router("") + strings.Replace(router(""), "web", "api", 1), "c.conf:6: router api: vrid 51 on lo is already used by router web (line 1)"},
		{"preempt word", router("\tpreempt yes\n"), "c.conf:5: want: preempt on|off|delay DURATION"},
		{"track kind", router("\ttrack ping 10.0.0.1\n"), `c.conf:5: unknown track kind "ping"`},
		{"track weight", router("\ttrack tcp 127.0.0.1:80 weight -300\n"), `c.conf:5: weight "-300": want a whole number from -253 to 253`},
		{"track option without value", router("\ttrack tcp 127.0.0.1:80 weight\n"), `c.conf:5: track option "weight" has no value`},
		{"track http url", router("\ttrack http 127.0.0.1:2019\n"), "c.conf:5: track http 127.0.0.1:2019: want a URL"},
		{"track tcp target", router("\ttrack tcp localhost\n"), "c.conf:5: track tcp localhost: want HOST:PORT"},
		{"track interface option", router("\ttrack interface lo every 1s\n"), `c.conf:5: track interface takes only weight, not "every"`},
		{"webhook", "webhook ftp://x\n", "c.conf:1: webhook URL"},
		{"mail syntax", "mail smtp.example.com:25 to a@example.com\n", "c.conf:1: want: mail SERVER from ADDRESS to ADDRESS [ADDRESS]"},
		{"announce", router("\tannounce many\n"), `c.conf:5: announce count "many"`},
		{"only own peers", router("\tpeers 127.0.0.1\n"), "c.conf:5: peers lists only this host's own addresses"},
		{"source count", router("\tsource 10.0.0.1 10.0.0.2\n"), "c.conf:5: source takes one value, got 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig("c.conf", strings.NewReader(c.conf))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *ConfigError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// FuzzParseConfig: no input may panic the parser, and whatever it accepts
// is a usable configuration.
func FuzzParseConfig(f *testing.F) {
	f.Add(minimalConfig)
	f.Add("router a {\n interface lo\n vrid 1\n vip fd00::1 fd00::2/64\n peers fd00::9\n track tcp [::1]:80 weight -3 rise 1\n}\n")
	f.Add("router a {\n interface {{ GetAllInterfaces | include \"name\" \"lo\" }}\n vrid 2\n vip 10.0.0.1\n preempt delay 1s\n}\n")
	f.Add("webhook http://127.0.0.1:9/x\nrouter b {\n interface lo\n vrid 3\n vip 10.0.0.1\n notify \"/bin/true\" x\n}\n")
	f.Fuzz(func(t *testing.T, conf string) {
		if strings.Contains(conf, "{{") {
			return // templates read the host's interfaces: slow, and tested above
		}
		c, err := ParseConfig("f.conf", strings.NewReader(conf))
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Line < 0 {
				t.Fatalf("error without a location: %v", err)
			}
			return
		}
		for _, r := range c.Routers {
			if r.VRID == 0 || r.Priority == 0 || len(r.VIPs) == 0 || r.Interval%(10*time.Millisecond) != 0 || r.Interval == 0 {
				t.Fatalf("accepted an unusable router: %+v", *r)
			}
		}
	})
}
