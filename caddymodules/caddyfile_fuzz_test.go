package caddymodules

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalPolicy feeds arbitrary lb_policy text to every Sluice
// policy's Caddyfile parser. Parsing may fail, but must not panic, and
// what it accepts must be valid: positive weights, prefixes in range,
// hash keys that name something.
func FuzzUnmarshalPolicy(f *testing.F) {
	for _, seed := range []string{
		"fast_response",
		"fast_response {\n weight 10.0.0.1:80 3\n standby 10.0.0.2:80\n decay 2s\n}",
		"smooth_weighted_round_robin {\n weight http://app 2\n}",
		"weighted_least_conn {\n weight a:1 0\n}",
		"two_choices {\n decay -1s\n}",
		"consistent_hash header X-User {\n weight a:1 2\n}",
		"consistent_hash cookie",
		"source_ip_hash /24 /64",
		"source_ip_hash {\n ipv4_prefix 33\n}",
		"source_ip_hash /0",
		"consistent_hash query q extra",
		"weighted_least_conn {\n weight\n}",
		"sticky client_ip /24 /64 {\n timeout 5m\n max_entries 10\n fallback fast_response {\n decay 1s\n }\n}",
		"sticky cookie lb {\n secret s3cret\n pool web\n}",
		"sticky learn JSESSIONID {\n fallback consistent_hash uri\n}",
		"sticky header X-Api-Key {\n removal_grace 0s\n}",
		"sticky header {\n secret x\n}",
		"sticky cookie {\n fallback sticky cookie\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		name, _, _ := strings.Cut(strings.TrimSpace(input), " ")
		var u caddyfile.Unmarshaler
		var members *Members
		switch name {
		case "smooth_weighted_round_robin":
			p := new(SmoothWeightedRoundRobin)
			u, members = p, &p.Members
		case "weighted_least_conn":
			p := new(WeightedLeastConn)
			u, members = p, &p.Members
		case "fast_response":
			p := new(FastResponse)
			u, members = p, &p.Members
		case "two_choices":
			p := new(TwoChoices)
			u, members = p, &p.Members
		case "consistent_hash":
			p := new(ConsistentHash)
			u, members = p, &p.Members
		case "source_ip_hash":
			p := new(SourceIPHash)
			u, members = p, &p.Members
		case "sticky":
			p := new(Sticky)
			u, members = p, &p.Members
		default:
			return
		}
		if err := u.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		if err := members.validate(); err != nil {
			t.Fatalf("accepted %q with invalid members: %v", input, err)
		}
		switch p := u.(type) {
		case *ConsistentHash:
			if p.Key == "" {
				p.Key = "uri"
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted %q: %v", input, err)
			}
		case *SourceIPHash:
			if p.IPv4Prefix == 0 {
				p.IPv4Prefix = 32
			}
			if p.IPv6Prefix == 0 {
				p.IPv6Prefix = 128
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted %q: %v", input, err)
			}
		case *FastResponse:
			if p.Decay < 0 {
				t.Fatalf("accepted %q with a negative decay", input)
			}
		case *TwoChoices:
			if p.Decay < 0 {
				t.Fatalf("accepted %q with a negative decay", input)
			}
		case *Sticky:
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted %q: %v", input, err)
			}
		}
	})
}

// FuzzUnmarshalCookieMatcher: whatever the cookie matcher's parser
// accepts provisions, and matching it never panics.
func FuzzUnmarshalCookieMatcher(f *testing.F) {
	for _, seed := range []string{
		"cookie profile {\n field tier gold platinum\n format json\n separator |\n base64\n}",
		"cookie JSESSIONID",
		"cookie beta on yes*",
		"cookie p {\n base64\n}",
		"cookie a\ncookie b c",
		"cookie {\n}",
	} {
		f.Add(seed, "profile=tier=gold; beta=on; a=1; b=c")
	}
	f.Fuzz(func(t *testing.T, input, cookies string) {
		var m MatchCookie
		if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			return
		}
		if err := m.Provision(caddy.Context{}); err != nil {
			if strings.Contains(err.Error(), "format") || strings.Contains(err.Error(), "fields") {
				t.Fatalf("accepted %q, which does not provision: %v", input, err)
			}
			return // names that are no cookie names are checked at provisioning
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Cookie", cookies)
		m.Match(r)
	})
}
