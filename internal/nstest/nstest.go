// Package nstest holds what the tests that build network namespaces share:
// running ip(8) and sysctl in a namespace, removing namespaces with the
// processes left in them, and the throwaway network that haagent's
// integration tests and failover benchmark run in: a bridge in a namespace
// of its own, two load-balancer hosts and a client, each a namespace with
// an eth0 on the bridge. Only these namespaces carry traffic; the host's
// own network is never touched. Everything here needs root.
package nstest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Host is one namespace on the bridge.
type Host struct {
	NS    string       // namespace name
	Port  string       // its veth end in the bridge namespace
	Addr4 netip.Prefix // on eth0
	Addr6 netip.Prefix // on eth0, besides the link-local address
}

// Net is a built topology.
type Net struct {
	Prefix      string
	Bridge      string // the bridge's namespace
	LB1, LB2, C Host
}

// Hosts lists the load balancers and the client.
func (n *Net) Hosts() []Host { return []Host{n.LB1, n.LB2, n.C} }

// Build removes namespaces left over from an earlier run with prefix,
// then builds a fresh topology whose namespaces are named prefix+"br",
// prefix+"lb1", prefix+"lb2" and prefix+"c". Addresses: 10.99.0.11,
// .12 and .50/24, fd99::11, ::12 and ::50/64. DAD is off, so IPv6
// addresses work at once.
func Build(prefix string) (*Net, error) {
	if err := Remove(prefix); err != nil {
		return nil, err
	}
	n := &Net{Prefix: prefix, Bridge: prefix + "br",
		LB1: Host{NS: prefix + "lb1", Port: "p1", Addr4: netip.MustParsePrefix("10.99.0.11/24"), Addr6: netip.MustParsePrefix("fd99::11/64")},
		LB2: Host{NS: prefix + "lb2", Port: "p2", Addr4: netip.MustParsePrefix("10.99.0.12/24"), Addr6: netip.MustParsePrefix("fd99::12/64")},
		C:   Host{NS: prefix + "c", Port: "p3", Addr4: netip.MustParsePrefix("10.99.0.50/24"), Addr6: netip.MustParsePrefix("fd99::50/64")},
	}
	cmds := [][]string{{"netns", "add", n.Bridge}}
	for _, h := range n.Hosts() {
		cmds = append(cmds, []string{"netns", "add", h.NS})
	}
	for _, ns := range append([]string{n.Bridge}, n.LB1.NS, n.LB2.NS, n.C.NS) {
		cmds = append(cmds, []string{"-n", ns, "link", "set", "lo", "up"})
	}
	// Multicast snooping off: a bridge that has heard no MLD report for
	// ff02::12 might otherwise not flood IPv6 adverts.
	cmds = append(cmds, []string{"-n", n.Bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"},
		[]string{"-n", n.Bridge, "link", "set", "br0", "up"})
	if err := ip(cmds...); err != nil {
		_ = Remove(prefix)
		return nil, err
	}
	for _, h := range n.Hosts() {
		if err := Sysctl(h.NS, "net.ipv6.conf.default.accept_dad", "0", "net.ipv6.conf.all.accept_dad", "0"); err != nil {
			_ = Remove(prefix)
			return nil, err
		}
		err := ip([]string{"-n", n.Bridge, "link", "add", h.Port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			[]string{"-n", n.Bridge, "link", "set", h.Port, "master", "br0", "up"},
			[]string{"-n", h.NS, "addr", "add", h.Addr4.String(), "dev", "eth0"},
			[]string{"-n", h.NS, "addr", "add", h.Addr6.String(), "dev", "eth0", "nodad"},
			[]string{"-n", h.NS, "link", "set", "eth0", "up"})
		if err != nil {
			_ = Remove(prefix)
			return nil, err
		}
	}
	return n, nil
}

// Close removes the topology's namespaces.
func (n *Net) Close() error { return Remove(n.Prefix) }

// Remove deletes every namespace whose name starts with prefix, and with
// them their interfaces, after ending the processes left in them.
func Remove(prefix string) error {
	if prefix == "" {
		return errors.New("nstest: refusing to remove namespaces with an empty prefix")
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			if err := RemoveNS(f[0]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// RemoveNS ends the processes left in namespace name, which would keep
// its network alive, and deletes it. The calling process is spared: a
// thread of its own that In switched into name counts it among them.
func RemoveNS(name string) error {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return ip([]string{"netns", "del", name})
}

func ip(cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := Output(c...); err != nil {
			return err
		}
	}
	return nil
}

// IP runs an ip(8) command, e.g. IP("-n", ns, "link", "set", "eth0", "down").
func IP(args ...string) error { return ip(args) }

// Output runs an ip(8) command (with "netns exec", any command in a
// namespace) and returns what it printed.
func Output(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sysctl sets key=value pairs in namespace ns.
func Sysctl(ns string, kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", kv[i]+"="+kv[i+1]).CombinedOutput(); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w: %s", kv[i], ns, err, out)
		}
	}
	return nil
}

// Command returns cmd to be run in namespace ns.
func Command(ns string, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// In runs f on an OS thread switched into namespace ns. Sockets f opens
// stay in ns for their whole life, whichever goroutine later uses them.
func In(ns string, f func() error) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer h.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is never unlocked: if switching back failed it must
		// die with this goroutine rather than serve others in ns.
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Serve answers every TCP connection to port in namespace ns with name
// and a newline, the way the failover measurements tell which host
// answered. It stops when ctx ends.
func Serve(ctx context.Context, ns string, port int, name string) error {
	var ls []net.Listener
	err := In(ns, func() error {
		for _, network := range []string{"tcp4", "tcp6"} {
			l, err := net.Listen(network, fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			ls = append(ls, l)
		}
		return nil
	})
	if err != nil {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	for _, l := range ls {
		go func() {
			<-ctx.Done()
			l.Close()
		}()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(name + "\n"))
				c.Close()
			}
		}()
	}
	return nil
}

// Dialer connects from inside a namespace.
type Dialer struct {
	ns netns.NsHandle
}

// NewDialer returns a dialer for namespace ns; Close releases it.
func NewDialer(ns string) (*Dialer, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	return &Dialer{ns: h}, nil
}

// Close releases the namespace handle.
func (d *Dialer) Close() error { return d.ns.Close() }

// Ask connects to addr (host:port) within timeout and returns the first
// line the server sends: the name of the host that answered.
func (d *Dialer) Ask(addr string, timeout time.Duration) (string, error) {
	type result struct {
		s   string
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see In
		if err := netns.Set(d.ns); err != nil {
			rc <- result{err: err}
			return
		}
		deadline := time.Now().Add(timeout)
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			rc <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		s, err := bufio.NewReader(c).ReadString('\n')
		rc <- result{strings.TrimSpace(s), err}
	}()
	r := <-rc
	return r.s, r.err
}

// AddrEvent is an address appearing on or leaving a namespace's link.
type AddrEvent struct {
	At    time.Time
	Added bool
}

// AddrWatch follows one address in one namespace through netlink, with
// the time each change was seen.
type AddrWatch struct {
	ip   netip.Addr
	done chan struct{}

	mu     sync.Mutex
	events []AddrEvent
	has    bool
	change chan struct{} // closed and replaced on every event
}

// WatchAddr starts following ip in namespace ns; Stop ends it.
func WatchAddr(ns string, ip netip.Addr) (*AddrWatch, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer h.Close()
	w := &AddrWatch{ip: ip, done: make(chan struct{}), change: make(chan struct{})}
	ch := make(chan netlink.AddrUpdate, 256)
	if err := netlink.AddrSubscribeWithOptions(ch, w.done, netlink.AddrSubscribeOptions{Namespace: &h, ListExisting: true}); err != nil {
		return nil, fmt.Errorf("watch addresses in %s: %w", ns, err)
	}
	go func() {
		for u := range ch {
			at := time.Now()
			a, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok || a.Unmap() != ip {
				continue
			}
			w.mu.Lock()
			if w.has != u.NewAddr {
				w.has = u.NewAddr
				w.events = append(w.events, AddrEvent{At: at, Added: u.NewAddr})
				close(w.change)
				w.change = make(chan struct{})
			}
			w.mu.Unlock()
		}
	}()
	return w, nil
}

// Stop ends the watch.
func (w *AddrWatch) Stop() { close(w.done) }

// Has reports whether the address is on the link now.
func (w *AddrWatch) Has() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.has
}

// Events returns the changes seen so far.
func (w *AddrWatch) Events() []AddrEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]AddrEvent(nil), w.events...)
}

// Wait waits until the address's presence is want, or ctx ends, and
// returns when it changed to want (the watch's own clock), or the
// zero time on timeout.
func (w *AddrWatch) Wait(ctx context.Context, want bool) time.Time {
	for {
		w.mu.Lock()
		has, change := w.has, w.change
		var at time.Time
		if has == want && len(w.events) > 0 {
			at = w.events[len(w.events)-1].At
		}
		w.mu.Unlock()
		if has == want {
			if at.IsZero() {
				at = time.Now()
			}
			return at
		}
		select {
		case <-change:
		case <-ctx.Done():
			return time.Time{}
		}
	}
}
