// Command failover measures the outage a client sees when the master of
// a load-balancer pair fails, with haagent and with keepalived as the
// VRRP daemon, in the same namespaces, at the same advert interval, runs
// interleaved. run.sh builds and runs it; README.md has the results.
//
// Topology (internal/nstest): a bridge, lb1 (priority 150) and lb2 (100)
// each serving its name on VIP:8080, and a client that connects to the
// VIP every 10 ms with a 10 ms timeout. Modes:
//
//	crash: SIGKILL the daemon on lb1 and take lb1's link down at once,
//	       as a host that dies (it can no longer answer on the VIP).
//	stop:  SIGTERM the daemon on lb1 (priority-0 advert, VIP removed).
//
// Per run: vip = when lb2's VIP appeared (netlink), first = the first
// probe lb2 answered, outage = the longest gap between successful probes
// around the failure; all in ms after the signal.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"

	"github.com/sluicelb/sluice/internal/nstest"
)

const (
	prefix = "hat-b-" // namespaces of this benchmark
	port   = 8080
)

var vip = netip.MustParseAddr("10.99.0.100")

func main() {
	reps := flag.Int("reps", 5, "runs per daemon and mode")
	modes := flag.String("modes", "crash,stop", "failure modes to measure: crash, stop")
	advert := flag.Duration("advert", 100*time.Millisecond, "advert interval of both daemons")
	haagentBin := flag.String("haagent", "", "path of the haagent binary (required)")
	keepalivedBin := flag.String("keepalived", "keepalived", "path of keepalived")
	post := flag.Duration("post", 1500*time.Millisecond, "how long to observe after each failure")
	flag.Parse()
	if *haagentBin == "" {
		fmt.Fprintln(os.Stderr, "failover: -haagent is required (run.sh builds it)")
		os.Exit(2)
	}
	ka, err := exec.LookPath(*keepalivedBin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "failover: keepalived not found:", err)
		os.Exit(2)
	}
	b := &bench{haagent: *haagentBin, keepalived: ka, advert: *advert, post: *post}
	if err := b.run(*reps, strings.Split(*modes, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

type bench struct {
	haagent, keepalived string
	advert, post        time.Duration
	net                 *nstest.Net
	dir                 string
	probes              *prober
	adverts             *sniffer
}

type result struct {
	daemon, mode       string
	vip, first, outage float64 // ms after the signal
}

func (b *bench) run(reps int, modes []string) error {
	var err error
	if b.net, err = nstest.Build(prefix); err != nil {
		return err
	}
	defer b.net.Close()
	if b.dir, err = os.MkdirTemp("", "hat-b"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, h := range []nstest.Host{b.net.LB1, b.net.LB2} {
		if err := nstest.Serve(ctx, h.NS, port, strings.TrimPrefix(h.NS, prefix)); err != nil {
			return err
		}
	}
	if b.probes, err = startProber(b.net.C.NS, netip.AddrPortFrom(vip, port).String()); err != nil {
		return err
	}
	defer b.probes.stop()
	if b.adverts, err = startSniffer(b.net.C.NS, netip.MustParseAddr("10.99.0.11")); err != nil {
		return err
	}
	defer b.adverts.stop()
	out, _ := exec.Command(b.keepalived, "--version").CombinedOutput()
	fmt.Printf("load average at start: %s", loadavg())
	fmt.Printf("keepalived: %s\nadvert interval %v, %d runs per cell, probes every 10 ms, failure at a random phase (10-90%%) after an advert, the same for both daemons in a rep\n\n",
		strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0], b.advert, reps)
	fmt.Println("daemon      mode   vip_ms  first_ms  outage_ms")
	var results []result
	for rep := range reps {
		// Both daemons of a rep fail at the same phase after one of lb1's
		// adverts, so that the comparison is paired. The phase stays
		// within 10-90% of the interval: at its edges, whether lb1's next
		// advert beats the kill is a coin toss worth a whole interval,
		// which would unpair the pair.
		phase := b.advert/10 + time.Duration(rand.Int64N(int64(b.advert*8/10)))
		for _, mode := range modes {
			daemons := []string{"haagent", "keepalived"}
			if rep%2 == 1 { // alternate who goes first
				slices.Reverse(daemons)
			}
			for _, d := range daemons {
				r, err := b.once(d, mode, phase)
				if err != nil {
					return fmt.Errorf("%s %s run %d: %w", d, mode, rep+1, err)
				}
				fmt.Printf("%-11s %-6s %6.1f %9.1f %10.1f\n", r.daemon, r.mode, r.vip, r.first, r.outage)
				results = append(results, r)
			}
		}
	}
	fmt.Printf("\nload average at end: %s", loadavg())
	summarize(results, modes)
	return nil
}

// loadavg is /proc/loadavg: the figures mean little on a busy host.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown\n"
	}
	return string(b)
}

// once starts both daemons afresh, waits for lb1 to serve, fails it and
// measures.
func (b *bench) once(daemon, mode string, phase time.Duration) (result, error) {
	r := result{daemon: daemon, mode: mode}
	if err := nstest.IP("-n", b.net.LB1.NS, "link", "set", "eth0", "up"); err != nil {
		return r, err
	}
	for _, h := range []nstest.Host{b.net.LB1, b.net.LB2} {
		_ = nstest.IP("-n", h.NS, "addr", "del", vip.String()+"/24", "dev", "eth0") // left by a crash
	}
	watch, err := nstest.WatchAddr(b.net.LB2.NS, vip)
	if err != nil {
		return r, err
	}
	defer watch.Stop()
	p2, err := b.start(daemon, b.net.LB2, 100)
	if err != nil {
		return r, err
	}
	defer p2.stop()
	p1, err := b.start(daemon, b.net.LB1, 150)
	if err != nil {
		return r, err
	}
	defer p1.stop()
	// 20 answers in a row: on a loaded host a 10 ms probe times out now
	// and then even with nothing failing.
	if !b.probes.waitStreak("lb1", 20, 30*time.Second) {
		return r, fmt.Errorf("lb1 never served the VIP steadily")
	}
	time.Sleep(time.Second) // settle
	link, linkNS, err := linkIn(b.net.LB1.NS)
	if err != nil {
		return r, err
	}
	defer linkNS.Close()
	// Fail phase after an advert of lb1, as the client saw it.
	if !b.adverts.next(time.Second) {
		return r, fmt.Errorf("no advert from lb1 seen in 1s")
	}
	time.Sleep(phase)
	t0 := time.Now()
	switch mode {
	case "crash":
		p1.kill()
		err = linkNS.LinkSetDown(link) // ip -n lb1 link set eth0 down
	case "stop":
		p1.signal(syscall.SIGTERM)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return r, err
	}
	time.Sleep(b.post)
	ms := func(t time.Time) float64 {
		if t.IsZero() {
			return -1
		}
		return float64(t.Sub(t0).Microseconds()) / 1000
	}
	for _, e := range watch.Events() {
		if e.Added && e.At.After(t0) {
			r.vip = ms(e.At)
			break
		}
	}
	r.first, r.outage = b.probes.analyze(t0, t0.Add(b.post))
	if r.vip <= 0 || r.first <= 0 {
		return r, fmt.Errorf("lb2 never took over (vip %.1f ms, first answer %.1f ms)", r.vip, r.first)
	}
	return r, nil
}

func linkIn(ns string) (netlink.Link, *netlink.Handle, error) {
	nh, err := netns.GetFromName(ns)
	if err != nil {
		return nil, nil, err
	}
	defer nh.Close()
	h, err := netlink.NewHandleAt(nh)
	if err != nil {
		return nil, nil, err
	}
	l, err := h.LinkByName("eth0")
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return l, h, nil
}

// proc is a daemon process (keepalived: its parent, and its VRRP child's
// pid file).
type proc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	vrrpPid string
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

// kill takes the whole daemon down at once, as a dying host does.
func (p *proc) kill() {
	if p.vrrpPid != "" {
		if b, err := os.ReadFile(p.vrrpPid); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	p.signal(syscall.SIGKILL)
}

// stop ends the daemon gracefully, or by force after 10 s.
func (p *proc) stop() {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
		<-p.done
	}
}

func (b *bench) start(daemon string, h nstest.Host, prio int) (*proc, error) {
	name := strings.TrimPrefix(h.NS, prefix)
	conf := filepath.Join(b.dir, daemon+"-"+name+".conf")
	log, err := os.Create(filepath.Join(b.dir, daemon+"-"+name+".log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	p := &proc{done: make(chan struct{})}
	var text string
	switch daemon {
	case "haagent":
		text = fmt.Sprintf("router web {\n\tinterface eth0\n\tvrid 51\n\tpriority %d\n\tadvert %v\n\tvip %s/24\n}\n", prio, b.advert, vip)
		p.cmd = nstest.Command(h.NS, b.haagent, "-f", conf)
	default:
		text = fmt.Sprintf(`global_defs {
  router_id %s
  vrrp_version 3
}
vrrp_instance web {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority %d
  advert_int %g
  virtual_ipaddress {
    %s/24 dev eth0
  }
}
`, name, prio, b.advert.Seconds(), vip)
		pid := filepath.Join(b.dir, "ka-"+name+".pid")
		p.vrrpPid = filepath.Join(b.dir, "ka-"+name+".vrrp.pid")
		os.Remove(pid)
		os.Remove(p.vrrpPid)
		p.cmd = nstest.Command(h.NS, b.keepalived, "-n", "-l", "-D", "-P", "-f", conf, "-p", pid, "-r", p.vrrpPid)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// prober connects to the VIP from the client every 10 ms with a 10 ms
// timeout, on one thread inside the client's namespace, and keeps every
// outcome.
type prober struct {
	mu    sync.Mutex
	log   []probe
	quit  chan struct{}
	ended chan struct{}
}

type probe struct {
	at     time.Time
	answer string // the host's name, or "" on failure
}

func startProber(ns, addr string) (*prober, error) {
	p := &prober{quit: make(chan struct{}), ended: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(p.ended)
		err := nstest.In(ns, func() error {
			started <- nil
			next := time.Now()
			buf := make([]byte, 16)
			for {
				select {
				case <-p.quit:
					return nil
				default:
				}
				at := time.Now()
				answer := ""
				if c, err := net.DialTimeout("tcp", addr, 10*time.Millisecond); err == nil {
					_ = c.SetDeadline(at.Add(10 * time.Millisecond))
					if n, err := c.Read(buf); err == nil {
						answer = strings.TrimSpace(string(buf[:n]))
					}
					c.Close()
				}
				p.mu.Lock()
				p.log = append(p.log, probe{at, answer})
				p.mu.Unlock()
				next = next.Add(10 * time.Millisecond)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				} else {
					next = time.Now()
				}
			}
		})
		if err != nil {
			started <- err
		}
	}()
	return p, <-started
}

func (p *prober) stop() {
	close(p.quit)
	<-p.ended
}

// waitStreak waits for n answers in a row from host.
func (p *prober) waitStreak(host string, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		ok := len(p.log) >= n
		for i := len(p.log) - n; ok && i < len(p.log); i++ {
			ok = p.log[i].answer == host
		}
		p.mu.Unlock()
		if ok {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// analyze returns, in ms after t0, the first probe lb2 answered and the
// longest gap between answered probes (start to start) from the last
// answer before t0 up to end.
func (p *prober) analyze(t0, end time.Time) (first, outage float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	first = -1
	for _, pr := range p.log {
		if pr.at.After(end) {
			break
		}
		if pr.answer == "" {
			continue
		}
		if pr.at.After(t0) {
			if first < 0 && pr.answer == "lb2" {
				first = float64(pr.at.Sub(t0).Microseconds()) / 1000
			}
			if !last.IsZero() {
				outage = max(outage, float64(pr.at.Sub(last).Microseconds())/1000)
			}
		}
		last = pr.at
	}
	return first, outage
}

// sniffer notes when lb1's adverts reach the client.
type sniffer struct {
	mu    sync.Mutex
	seen  chan struct{} // closed and replaced on every advert
	conn  net.PacketConn
	ended chan struct{}
}

func startSniffer(ns string, from netip.Addr) (*sniffer, error) {
	s := &sniffer{seen: make(chan struct{}), ended: make(chan struct{})}
	err := nstest.In(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err := net.ListenPacket("ip4:112", "0.0.0.0")
		if err != nil {
			return err
		}
		s.conn = c
		return ipv4.NewPacketConn(c).JoinGroup(ifi, &net.IPAddr{IP: net.IPv4(224, 0, 0, 18)})
	})
	if err != nil {
		if s.conn != nil {
			s.conn.Close()
		}
		return nil, err
	}
	go func() {
		defer close(s.ended)
		buf := make([]byte, 1500)
		for {
			_, a, err := s.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if ip, ok := a.(*net.IPAddr); ok && ip.IP.Equal(from.AsSlice()) {
				s.mu.Lock()
				close(s.seen)
				s.seen = make(chan struct{})
				s.mu.Unlock()
			}
		}
	}()
	return s, nil
}

// next waits for the next advert.
func (s *sniffer) next(timeout time.Duration) bool {
	s.mu.Lock()
	ch := s.seen
	s.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (s *sniffer) stop() {
	s.conn.Close()
	<-s.ended
}

func summarize(rs []result, modes []string) {
	fmt.Println("\nmedians (min–max), ms after the signal:")
	fmt.Println("| mode | daemon | VIP on lb2 | client reaches lb2 | client outage |")
	fmt.Println("|---|---|---|---|---|")
	for _, mode := range modes {
		med := map[string]float64{}
		for _, d := range []string{"haagent", "keepalived"} {
			var vips, firsts, outs []float64
			for _, r := range rs {
				if r.mode == mode && r.daemon == d {
					vips, firsts, outs = append(vips, r.vip), append(firsts, r.first), append(outs, r.outage)
				}
			}
			med[d] = median(outs)
			fmt.Printf("| %s | %s | %s | %s | %s |\n", mode, d, cell(vips), cell(firsts), cell(outs))
		}
		fmt.Printf("| %s | haagent / keepalived | | | %.2f |\n", mode, med["haagent"]/med["keepalived"])
	}
}

func cell(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f (%.0f–%.0f)", median(xs), slices.Min(xs), slices.Max(xs))
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
