package haagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicelb/sluice/lbcore/health"
)

// trackItem is one tracked thing of a router, checked by its own
// goroutine, which reports each change of its damped state.
type trackItem struct {
	cfg    TrackConfig
	up     bool   // damped state as last reported; true until the first report
	known  bool   // reported at least once
	reason string // why it failed, for logs and events
	cancel context.CancelFunc
}

// trackUpdate is a tracked item's new state, as sent to its router.
type trackUpdate struct {
	item   *trackItem
	up     bool
	reason string
}

// effectivePriority is the priority a router advertises given its
// tracked items, and the reason for FAULT if one must hold it down. As in
// keepalived: a failing item of weight 0 forces FAULT, a failing item of
// negative weight lowers the priority by that much, a passing item of
// positive weight raises it; the result stays within 1-254, and the
// owner's 255 never changes.
func effectivePriority(base uint8, items []*trackItem) (uint8, string) {
	p := int(base)
	var fault []string
	for _, it := range items {
		switch {
		case it.cfg.Weight == 0 && !it.up:
			fault = append(fault, it.describe())
		case it.cfg.Weight < 0 && !it.up:
			p += it.cfg.Weight
		case it.cfg.Weight > 0 && it.up:
			p += it.cfg.Weight
		}
	}
	if base == 255 {
		p = 255
	} else {
		p = min(max(p, 1), 254)
	}
	return uint8(p), strings.Join(fault, "; ")
}

func (it *trackItem) describe() string {
	s := "track " + it.cfg.Kind + " " + it.cfg.Target
	if it.reason != "" {
		s += ": " + it.reason
	}
	return s
}

// run checks the item until ctx ends, sending each change of its damped
// state to out.
func (it *trackItem) run(ctx context.Context, h *netlink.Handle, out chan<- trackUpdate) {
	if it.cfg.Kind == "interface" {
		it.watchLink(ctx, h, out)
		return
	}
	probe := it.prober()
	tr := &health.Tracker{Rise: it.cfg.Rise, Fall: it.cfg.Fall}
	t := time.NewTicker(it.cfg.Every)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, it.cfg.Timeout)
		err := probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if tr.Observe(err == nil) {
			u := trackUpdate{item: it, up: tr.Up()}
			if err != nil {
				u.reason = err.Error()
			}
			select {
			case out <- u:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// prober returns the item's one-shot check.
func (it *trackItem) prober() func(context.Context) error {
	switch it.cfg.Kind {
	case "http":
		c, target, _ := parseHTTPTarget(it.cfg.Target) // checked when parsed
		return func(ctx context.Context) error { return c.Check(ctx, target).Err }
	case "tcp":
		c := &health.TCPCheck{}
		return func(ctx context.Context) error { return c.Check(ctx, it.cfg.Target).Err }
	}
	return func(ctx context.Context) error { return runScript(ctx, it.cfg.Target) }
}

// runScript runs a tracking script through the shell, as keepalived does:
// exit status 0 passes. A script still running at the deadline is killed
// with its process group and fails.
func runScript(ctx context.Context, command string) error {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("timed out: %w", ctx.Err())
	}
}

// watchLink follows an interface's state through netlink: it fails while
// the link is administratively down or has no carrier.
func (it *trackItem) watchLink(ctx context.Context, h *netlink.Handle, out chan<- trackUpdate) {
	updates := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	var last *bool
	report := func(up bool, reason string) bool {
		if last != nil && *last == up {
			return true
		}
		last = &up
		select {
		case out <- trackUpdate{item: it, up: up, reason: reason}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	subscribed := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(error) {},
	}) == nil
	for ctx.Err() == nil {
		l, err := h.LinkByName(it.cfg.Target)
		up, reason := false, ""
		switch {
		case errors.As(err, &netlink.LinkNotFoundError{}):
			reason = "no such interface"
		case err != nil:
			reason = err.Error()
		default:
			up, reason = linkUp(l.Attrs())
		}
		if !report(up, reason) {
			return
		}
		if !subscribed { // fall back to polling
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				subscribed = false
			} else if u.Attrs().Name != it.cfg.Target {
				continue
			}
		}
	}
}

// linkUp tells whether a link can carry traffic.
func linkUp(a *netlink.LinkAttrs) (bool, string) {
	switch {
	case a.Flags&net.FlagUp == 0:
		return false, "link administratively down"
	case a.RawFlags&unix.IFF_LOWER_UP == 0:
		return false, "link has no carrier (" + a.OperState.String() + ")"
	}
	return true, ""
}
