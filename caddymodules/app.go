package caddymodules

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/health"
)

func init() {
	caddy.RegisterModule(new(App))
	httpcaddyfile.RegisterGlobalOption("sluice", parseAppOptions)
}

// App is the state Sluice's modules share within one configuration: it
// runs the health monitors and relays their verdicts to Caddy's events
// app. Policies load it; it needs no configuration of its own.
//
// Monitors start only once the whole configuration runs: Caddy binds event
// subscriptions when the events app starts, after every module is
// provisioned, so a verdict reached earlier (a backend already down at
// start) would reach no handler.
type App struct {
	// How often operator decisions (offline, drain, weights taken through
	// the admin API) are read from Caddy's storage, where every instance
	// sharing the storage writes them. Default: 2s.
	SyncInterval caddy.Duration `json:"sync_interval,omitempty"`

	ctx     caddy.Context
	storage certmagic.Storage
	events  *caddyevents.App
	logger  *zap.Logger

	run    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// ready is closed, under mu, once the configuration runs and its
	// static pools are bound; monitors watched from then on start at once.
	ready chan struct{}

	mu       sync.Mutex
	monitors []watchedMonitor
	pools    map[string]*binder // by the operator's pool name
	binders  []*binder          // every pool's, named or not

	syncMu        sync.Mutex
	lastDecisions []byte // the document last read from or written to storage
}

// activeApp returns the app of the running configuration, for what lives
// outside any configuration (admin routes), once it has bound its pools;
// nil if the running configuration has none, or ctx ends first.
//
// It asks Caddy rather than keeping a pointer of its own: during a reload
// Caddy makes the new configuration the running one before it stops the
// old, so there is no moment with no app to answer.
func activeApp(ctx context.Context) *App {
	app, err := caddy.ActiveContext().AppIfConfigured("sluice")
	if err != nil {
		return nil
	}
	a := app.(*App)
	select {
	case <-a.ready:
		return a
	case <-a.run.Done():
	case <-ctx.Done():
	}
	return nil
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sluice",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets up the app.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	ev, err := ctx.App("events")
	if err != nil {
		return err
	}
	a.events = ev.(*caddyevents.App)
	a.run, a.cancel = context.WithCancel(context.Background())
	a.ready = make(chan struct{})
	registerMetrics(ctx)
	if a.SyncInterval < 0 {
		return fmt.Errorf("sluice sync_interval must not be negative")
	}
	if a.SyncInterval == 0 {
		a.SyncInterval = caddy.Duration(DefaultSyncInterval)
	}
	// Decisions taken before a restart, or on another instance, apply
	// before the first request.
	a.storage = ctx.Storage()
	if err := a.loadDecisions(); err != nil {
		a.logger.Error("keeping the operator decisions held", zap.Error(err))
	}
	return nil
}

// parseAppOptions reads the sluice global option. Syntax:
//
//	sluice {
//		sync_interval <duration>
//	}
func parseAppOptions(d *caddyfile.Dispenser, _ any) (any, error) {
	d.Next() // consume option name
	app := new(App)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "sync_interval":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return nil, d.Errf("sync_interval must be a positive duration such as 2s, not %q", d.Val())
			}
			app.SyncInterval = caddy.Duration(dur)
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		default:
			return nil, d.Errf("the sluice global option has no %q; it takes sync_interval", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "sluice", Value: caddyconfig.JSON(app, nil)}, nil
}

// Start waits, in the background, for the configuration to be running,
// then binds the policies of static upstreams and starts their monitors.
func (a *App) Start() error {
	if err := a.checkFailovers(); err != nil {
		return err
	}
	if err := a.checkLearning(); err != nil {
		return err
	}
	a.wg.Go(func() {
		if !a.waitActive() {
			return
		}
		a.bindStatic()
		a.wg.Go(a.syncDecisions)
		a.mu.Lock()
		close(a.ready)
		monitors := a.monitors
		a.mu.Unlock()
		for _, m := range monitors {
			a.start(m)
		}
	})
	return nil
}

// waitActive waits until Caddy has made this configuration the running one
// (every app started, event subscriptions bound), or the app stops.
func (a *App) waitActive() bool {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if app, err := caddy.ActiveContext().AppIfConfigured("sluice"); err == nil && app == a {
			return true
		}
		select {
		case <-a.run.Done():
			return false
		case <-tick.C:
		}
	}
}

// Stop stops the monitors. Backends keep their states for the next
// configuration.
func (a *App) Stop() error {
	a.cancel()
	a.wg.Wait()
	return nil
}

// register adds a policy's binder to this configuration's, checking that
// a pool name names one pool.
func (a *App) register(bd *binder) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if bd.name != "" {
		if _, dup := a.pools[bd.name]; dup {
			return fmt.Errorf("pool %q is named by two reverse_proxy blocks; pool names must be unique", bd.name)
		}
		if a.pools == nil {
			a.pools = make(map[string]*binder)
		}
		a.pools[bd.name] = bd
	}
	a.binders = append(a.binders, bd)
	return nil
}

// namedPool returns the policy binder of the pool called name.
func (a *App) namedPool(name string) (*binder, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	bd, ok := a.pools[name]
	return bd, ok
}

// bindings returns the bound pools of this configuration, those called
// name only if name is not empty.
func (a *App) bindings(name string) []*binding {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*binding
	for _, bd := range a.binders {
		if b := bd.current.Load(); b != nil && (name == "" || b.pool.Name == name) {
			out = append(out, b)
		}
	}
	return out
}

// watch adds a monitor, started now if the configuration runs, else when
// it does. The function returned stops it.
func (a *App) watch(m *health.Monitor) context.CancelFunc {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithCancel(a.run)
	a.monitors = append(a.monitors, watchedMonitor{m, ctx})
	select {
	case <-a.ready:
		a.start(watchedMonitor{m, ctx})
	default: // started with the others once the configuration runs
	}
	return cancel
}

type watchedMonitor struct {
	monitor *health.Monitor
	ctx     context.Context
}

func (a *App) start(w watchedMonitor) {
	a.wg.Go(func() { w.monitor.Run(w.ctx) })
}

// emit sends an event to Caddy's events app.
func (a *App) emit(name string, data map[string]any) {
	a.events.Emit(a.ctx, name, data)
}

// bindStatic binds every Sluice policy of a reverse_proxy with static
// upstreams, so their backends are checked before any request arrives.
func (a *App) bindStatic() {
	httpApp, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	for _, srv := range httpApp.(*caddyhttp.App).Servers {
		a.bindRoutes(srv.Routes)
		if srv.Errors != nil {
			a.bindRoutes(srv.Errors.Routes)
		}
	}
}

func (a *App) bindRoutes(routes caddyhttp.RouteList) {
	for _, r := range routes {
		for _, h := range r.Handlers {
			switch h := h.(type) {
			case *caddyhttp.Subroute:
				a.bindRoutes(h.Routes)
			case *reverseproxy.Handler:
				if h.LoadBalancing == nil || len(h.Upstreams) == 0 {
					continue
				}
				if s, ok := h.LoadBalancing.SelectionPolicy.(interface{ core() *selector }); ok {
					s.core().binder.bind(h.Upstreams)
				}
			}
		}
	}
}

// checkFailovers refuses a configuration where a pool falls over to a
// pool that no reverse_proxy names.
func (a *App) checkFailovers() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, bd := range a.binders {
		if _, ok := a.pools[bd.failover]; bd.failover != "" && !ok {
			return fmt.Errorf("pool %q fails over to pool %q, which no reverse_proxy names", bd.name, bd.failover)
		}
	}
	return nil
}

// checkLearning refuses a configuration where lb_policy sticky learn
// cannot see responses: no sticky_learn handler runs before its
// reverse_proxy.
func (a *App) checkLearning() error {
	httpApp, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return nil
	}
	for name, srv := range httpApp.(*caddyhttp.App).Servers {
		if err := checkLearningRoutes(srv.Routes, false); err != nil {
			return fmt.Errorf("server %s: %v", name, err)
		}
	}
	return nil
}

// checkLearningRoutes walks routes in the order their handlers run;
// learning says a sticky_learn handler ran before.
func checkLearningRoutes(routes caddyhttp.RouteList, learning bool) error {
	for _, r := range routes {
		routeLearns := learning
		for _, h := range r.Handlers {
			switch h := h.(type) {
			case *StickyLearn:
				routeLearns = true
			case *caddyhttp.Subroute:
				if err := checkLearningRoutes(h.Routes, routeLearns); err != nil {
					return err
				}
			case *reverseproxy.Handler:
				if h.LoadBalancing == nil {
					continue
				}
				if s, ok := h.LoadBalancing.SelectionPolicy.(*Sticky); ok && s.By == "learn" && !routeLearns {
					return fmt.Errorf("lb_policy sticky learn %s needs the sticky_learn directive before its reverse_proxy, to see the responses that set the cookie", s.Name)
				}
			}
		}
		// A route without matchers runs for every request that reaches
		// it, so what it sets up holds for the routes after it.
		if len(r.MatcherSets) == 0 && routeLearns {
			learning = true
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
