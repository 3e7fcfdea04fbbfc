package haagent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicelb/sluice/lbcore/notify"
)

// DefaultConfigPath is where haagent looks for its configuration.
const DefaultConfigPath = "/etc/haagent/haagent.conf"

// stopTimeout bounds a graceful stop: priority-0 adverts, addresses
// removed, queued notifications delivered.
const stopTimeout = 10 * time.Second

// Run is the haagent command: it parses args, then runs the routers of
// the configuration until ctx ends, reloading the file on SIGHUP and
// logging counters on SIGUSR1. Output goes to stdout (-t) and stderr.
func Run(ctx context.Context, args []string) error {
	return run(ctx, args, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("haagent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("f", DefaultConfigPath, "configuration `file`")
	test := fs.Bool("t", false, "check the configuration file and exit")
	level := zapcore.InfoLevel
	fs.Var(&level, "log-level", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	if *test {
		fmt.Fprintf(stdout, "configuration %s is valid: %d router(s)\n", *path, len(cfg.Routers))
		return nil
	}
	// Before anything slow: an early SIGHUP must not kill the daemon.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sig)
	log := newLogger(level, stderr)
	defer log.Sync() //nolint:errcheck // nothing to do if stderr is gone

	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	a := NewAgent(log, h)
	if err := a.Start(cfg); err != nil {
		a.Stop()
		return err
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: handing over to the peers")
			a.Stop()
			return nil
		case s := <-sig:
			if s == syscall.SIGUSR1 {
				a.LogStatus()
				continue
			}
			if err := a.Reload(*path); err != nil {
				log.Error("reload refused: the running configuration is kept", zap.Error(err))
			}
		}
	}
}

func newLogger(level zapcore.Level, w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core).Named("haagent")
}

// Agent runs the virtual routers of one configuration and swaps in a new
// one on reload.
type Agent struct {
	log  *zap.Logger
	h    *netlink.Handle
	disp atomic.Pointer[notify.Dispatcher]

	mu      sync.Mutex // serialises Start, Reload and Stop
	routers map[string]*running
}

// running is a started router.
type running struct {
	cfg    *RouterConfig
	in     *instance
	cancel context.CancelFunc
}

// NewAgent returns an agent that changes addresses through h and logs to
// log.
func NewAgent(log *zap.Logger, h *netlink.Handle) *Agent {
	return &Agent{log: log, h: h, routers: map[string]*running{}}
}

func (a *Agent) publish(e notify.Event) { a.disp.Load().Publish(e) }

func (a *Agent) dispatcher(cfg *Config) *notify.Dispatcher {
	ns := []notify.Notifier{notify.Log{Logger: a.log.Named("event")}}
	for _, w := range cfg.Webhooks {
		ns = append(ns, w)
	}
	for _, m := range cfg.Mails {
		ns = append(ns, m)
	}
	return notify.NewDispatcher(a.log, 0, ns...)
}

// Start starts every router of cfg. On error, the routers already
// started keep running; call Stop.
func (a *Agent) Start(cfg *Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.disp.Store(a.dispatcher(cfg))
	for _, rc := range cfg.Routers {
		if err := a.startRouter(rc); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) startRouter(rc *RouterConfig) error {
	in, err := newInstance(rc, a.h, a.log, a.publish)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.routers[rc.Name] = &running{cfg: rc, in: in, cancel: cancel}
	go in.run(ctx)
	return nil
}

func (a *Agent) stopRouter(r *running) {
	r.cancel()
	select {
	case <-r.in.done:
	case <-time.After(stopTimeout):
		a.log.Error("router did not stop in time", zap.String("router", r.cfg.Name))
	}
	delete(a.routers, r.cfg.Name)
}

// Stop shuts every router down gracefully and delivers the queued
// notifications.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range a.routers {
		r.cancel() // all at once: each sends its priority-0 advert now
	}
	for _, r := range a.routers {
		wg.Go(func() { <-r.in.done })
	}
	wg.Wait()
	clear(a.routers)
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := a.disp.Load().Close(ctx); err != nil {
		a.log.Warn("notifications not delivered", zap.Error(err))
	}
}

// Reload reads the configuration file again. A file with errors changes
// nothing. A router whose interface, VRID, family, source and peers are
// unchanged takes the new settings in place and keeps its state, so a
// master stays master; any other is restarted, and routers no longer
// listed are stopped.
func (a *Agent) Reload(path string) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.disp.Swap(a.dispatcher(cfg))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		_ = old.Close(ctx) // events already queued still go out
	}()
	keep := map[string]bool{}
	for _, rc := range cfg.Routers {
		keep[rc.Name] = true
	}
	for name, r := range a.routers {
		if !keep[name] {
			a.log.Info("router removed from the configuration", zap.String("router", name))
			a.stopRouter(r)
		}
	}
	var errs []error
	for _, rc := range cfg.Routers {
		r, ok := a.routers[rc.Name]
		if ok && sameRouter(r.cfg, rc) {
			r.cfg = rc
			select {
			case r.in.reloads <- rc:
			case <-r.in.done: // it stopped on its own: start it afresh below
				ok = false
			}
			if ok {
				continue
			}
		}
		if ok {
			a.log.Info("router's interface, VRID, source or peers changed: restarting it", zap.String("router", rc.Name))
			a.stopRouter(r)
		}
		if err := a.startRouter(rc); err != nil {
			errs = append(errs, err)
		}
	}
	a.log.Info("configuration reloaded", zap.String("file", path), zap.Int("routers", len(cfg.Routers)))
	return errors.Join(errs...)
}

// LogStatus logs each router's state, priority and dropped-advert counts.
func (a *Agent) LogStatus() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, r := range a.routers {
		s := &r.in.status
		s.mu.Lock()
		state, prio := s.state, s.priority
		s.mu.Unlock()
		a.log.Info("status", zap.String("router", name), zap.String("state", state.String()),
			zap.Uint8("priority", prio), zap.Any("dropped_adverts", r.in.drops.snapshot()),
			zap.Uint64("foreign_address_lists", r.in.foreignLists.Load()))
	}
}
