package caddymodules

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sluicelb/sluice/lbcore/persist"
	"github.com/sluicelb/sluice/lbcore/pool"
)

func init() {
	caddy.RegisterModule(StickyLearn{})
	httpcaddyfile.RegisterHandlerDirective("sticky_learn", parseStickyLearn)
	httpcaddyfile.RegisterDirectiveOrder("sticky_learn", httpcaddyfile.Before, "reverse_proxy")
}

// StickyLearn lets `lb_policy sticky learn` see responses: when an
// upstream's response sets the session cookie the policy learns, the
// cookie is bound to that upstream before the response leaves, so the
// client's very next request finds the binding. A selection policy sees
// only requests; this handler goes before reverse_proxy.
type StickyLearn struct{}

// CaddyModule returns the Caddy module information.
func (StickyLearn) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sticky_learn",
		New: func() caddy.Module { return new(StickyLearn) },
	}
}

// learnVar is the request var holding the request's learnRecorder.
const learnVar = "sluice.learn"

// learnRecorder carries, from the policy to the response, what to learn:
// the cookie, the table and the upstream of the latest attempt.
type learnRecorder struct {
	table   *persist.Table
	cookie  string
	backend *pool.Backend
}

func (l *learnRecorder) expect(table *persist.Table, cookie string, b *pool.Backend) {
	l.table, l.cookie, l.backend = table, cookie, b
}

// learn binds the session cookie a response sets, and forgets one it
// deletes (a logout).
func (l *learnRecorder) learn(h http.Header) {
	if l.table == nil {
		return
	}
	for _, line := range h.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil || c.Name != l.cookie {
			continue
		}
		key := persist.Key(c.Value)
		if c.Value == "" || c.MaxAge < 0 {
			l.table.Forget(key)
			continue
		}
		l.table.Bind(key, l.backend)
	}
}

// ServeHTTP watches the response of the rest of the chain.
func (StickyLearn) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	rec := new(learnRecorder)
	caddyhttp.SetVar(r.Context(), learnVar, rec)
	return next.ServeHTTP(&learnWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, rec: rec}, r)
}

// learnWriter learns from the response header as it is written.
type learnWriter struct {
	*caddyhttp.ResponseWriterWrapper
	rec  *learnRecorder
	done bool
}

func (w *learnWriter) WriteHeader(status int) {
	if !w.done && status >= 200 {
		w.done = true
		w.rec.learn(w.Header())
	}
	w.ResponseWriterWrapper.WriteHeader(status)
}

func (w *learnWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriterWrapper.Write(b)
}

// parseStickyLearn sets up the handler from Caddyfile tokens. Syntax:
//
//	sticky_learn
func parseStickyLearn(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // consume directive name
	if h.NextArg() {
		return nil, h.Errf("sticky_learn takes no arguments, found %q: the cookie is named in lb_policy sticky learn <cookie>", h.Val())
	}
	if h.NextBlock(0) {
		return nil, h.Errf("sticky_learn takes no block")
	}
	return new(StickyLearn), nil
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*StickyLearn)(nil)
	_ caddyfile.Unmarshaler       = (*StickyLearn)(nil)
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens; it takes
// nothing.
func (*StickyLearn) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}
