package caddymodules

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/health"
)

func init() {
	caddy.RegisterModule(new(App))
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
	ctx    caddy.Context
	events *caddyevents.App
	logger *zap.Logger

	run    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	running  bool
	monitors []watchedMonitor
	pools    map[string]*binder // by the operator's pool name
}

// active is the app of the running configuration, for what lives outside
// any configuration: admin routes.
var active atomic.Pointer[App]

// activeApp returns the app of the running configuration, or nil.
func activeApp() *App { return active.Load() }

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
	registerMetrics(ctx)
	return nil
}

// Start waits, in the background, for the configuration to be running,
// then binds the policies of static upstreams and starts their monitors.
func (a *App) Start() error {
	a.wg.Go(func() {
		if !a.waitActive() {
			return
		}
		a.bindStatic()
		active.Store(a)
		a.mu.Lock()
		a.running = true
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
	active.CompareAndSwap(a, nil)
	return nil
}

// registerPool names a pool of this configuration.
func (a *App) registerPool(name string, bd *binder) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.pools[name]; dup {
		return fmt.Errorf("pool %q is named by two reverse_proxy blocks; pool names must be unique", name)
	}
	if a.pools == nil {
		a.pools = make(map[string]*binder)
	}
	a.pools[name] = bd
	return nil
}

// namedPool returns the policy binder of the pool called name.
func (a *App) namedPool(name string) (*binder, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	bd, ok := a.pools[name]
	return bd, ok
}

// watch adds a monitor, started now if the configuration runs, else when
// it does. The function returned stops it.
func (a *App) watch(m *health.Monitor) context.CancelFunc {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithCancel(a.run)
	a.monitors = append(a.monitors, watchedMonitor{m, ctx})
	if a.running {
		a.start(watchedMonitor{m, ctx})
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

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
