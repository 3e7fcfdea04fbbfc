package caddymodules

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sluicelb/sluice/lbcore/content"
)

func init() {
	caddy.RegisterModule(MatchCookie{})
}

// MatchCookie matches requests by their cookies: a cookie's presence, its
// value, or fields inside a structured value — key=value pairs, JSON, or
// either in base64 — such as the tier inside a profile cookie. Values are
// compared as globs ('*' matches any run of characters). Every rule must
// hold; a cookie whose value does not parse holds no field.
//
// Caddyfile:
//
//	@gold cookie profile {
//		field tier gold platinum     # any of these
//		format pairs | json          # default pairs
//		separator "|"                # between pairs; default &
//		base64                       # the value is base64 of that
//	}
//	@session cookie JSESSIONID       # present
//	@beta cookie beta on yes         # with one of these values
type MatchCookie []CookieRule

// CookieRule is one cookie's condition.
type CookieRule struct {
	// The cookie's name.
	Name string `json:"name"`
	// Value globs, any of which the whole value must match. None: any
	// value, the cookie need only be present.
	Values []string `json:"values,omitempty"`
	// Fields inside the value, each with globs any of which it must match.
	Fields map[string][]string `json:"fields,omitempty"`
	// How fields are laid out: "pairs" (default) or "json".
	Format string `json:"format,omitempty"`
	// Pairs: what joins them. Default: "&".
	Separator string `json:"separator,omitempty"`
	// The value is base64 (either alphabet, padded or not).
	Base64 bool `json:"base64,omitempty"`

	layout content.Layout
}

// CaddyModule returns the Caddy module information.
func (MatchCookie) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.matchers.cookie",
		New: func() caddy.Module { return new(MatchCookie) },
	}
}

// Provision checks the rules and prepares their layouts.
func (m MatchCookie) Provision(caddy.Context) error {
	for i := range m {
		r := &m[i]
		if !validToken(r.Name) {
			return fmt.Errorf("cookie matcher: %q is not a cookie name", r.Name)
		}
		format, err := content.ParseFormat(r.Format)
		if err != nil {
			return fmt.Errorf("cookie matcher for %s: %v", r.Name, err)
		}
		if len(r.Fields) == 0 && (r.Format != "" || r.Separator != "" || r.Base64) {
			return fmt.Errorf("cookie matcher for %s: format, separator and base64 describe fields, and no field is given", r.Name)
		}
		r.layout = content.Layout{Format: format, Separator: r.Separator, Base64: r.Base64}
	}
	return nil
}

// Match reports whether r's cookies satisfy every rule.
func (m MatchCookie) Match(r *http.Request) bool {
	match, _ := m.MatchWithError(r)
	return match
}

// MatchWithError reports whether r's cookies satisfy every rule.
func (m MatchCookie) MatchWithError(r *http.Request) (bool, error) {
	for i := range m {
		if !m[i].match(r) {
			return false, nil
		}
	}
	return true, nil
}

func (rule *CookieRule) match(r *http.Request) bool {
	c, err := r.Cookie(rule.Name)
	if err != nil {
		return false
	}
	if len(rule.Values) > 0 && !anyGlob(rule.Values, c.Value) {
		return false
	}
	if len(rule.Fields) == 0 {
		return true
	}
	fields, err := rule.layout.Fields(c.Value)
	if err != nil {
		return false
	}
	for name, globs := range rule.Fields {
		v, ok := fields[name]
		if !ok || !anyGlob(globs, v) {
			return false
		}
	}
	return true
}

func anyGlob(globs []string, s string) bool {
	return slices.ContainsFunc(globs, func(g string) bool { return content.Glob(g, s) })
}

// UnmarshalCaddyfile sets up the matcher from Caddyfile tokens; each
// line adds a rule.
func (m *MatchCookie) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for d.Next() {
		var rule CookieRule
		if !d.NextArg() {
			return d.Err("cookie matcher needs a cookie name")
		}
		rule.Name = d.Val()
		rule.Values = d.RemainingArgs()
		for d.NextBlock(0) {
			opt := d.Val()
			switch opt {
			case "field":
				args := d.RemainingArgs()
				if len(args) < 2 {
					return d.Errf("field takes a field name and one or more values, as in 'field tier gold'")
				}
				if rule.Fields == nil {
					rule.Fields = make(map[string][]string)
				}
				rule.Fields[args[0]] = append(rule.Fields[args[0]], args[1:]...)
			case "format":
				if !d.NextArg() {
					return d.ArgErr()
				}
				if _, err := content.ParseFormat(d.Val()); err != nil {
					return d.Err(err.Error())
				}
				rule.Format = d.Val()
			case "separator":
				if !d.NextArg() || d.Val() == "" {
					return d.Err("separator takes the text between pairs, such as '|'")
				}
				rule.Separator = d.Val()
			case "base64":
				rule.Base64 = true
			default:
				return d.Errf("cookie matcher has no option %q; it takes field, format, separator and base64", opt)
			}
			if opt != "field" && d.NextArg() {
				return d.ArgErr()
			}
		}
		if len(rule.Fields) == 0 && (rule.Format != "" || rule.Separator != "" || rule.Base64) {
			return d.Err("format, separator and base64 describe fields: add a field line")
		}
		*m = append(*m, rule)
	}
	if len(*m) == 0 {
		return errors.New("cookie matcher needs a cookie name")
	}
	return nil
}

// Interface guards
var (
	_ caddyhttp.RequestMatcherWithError = (*MatchCookie)(nil)
	_ caddy.Provisioner                 = (*MatchCookie)(nil)
	_ caddyfile.Unmarshaler             = (*MatchCookie)(nil)
)
