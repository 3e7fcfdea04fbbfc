package haagent_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/nstest"
	"github.com/sluicelb/sluice/internal/wait"
)

// Namespaces of these tests are named hat-t-*, after the project's prefix
// for haagent tests, and removed by each test (and at the start of the
// next, should a run have died).
const prefix = "hat-t-"

const servicePort = 8080

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("Test requires root privileges: it builds network namespaces and runs haagent in them.")
	}
}

// haagentBinary builds cmd/haagent once per test run.
func haagentBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "hat-bin")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "haagent")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/sluicelb/sluice/cmd/haagent").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build cmd/haagent: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// lab is the test network: lb1 and lb2 serve their name on port 8080
// (so the client can tell who holds the VIP), watches follow the VIP on
// both, and the client can dial.
type lab struct {
	t      *testing.T
	net    *nstest.Net
	vip    netip.Addr
	w1, w2 *nstest.AddrWatch
	client *nstest.Dialer
	dir    string
}

func newLab(t *testing.T, vip string) *lab {
	t.Helper()
	needRoot(t)
	haagentBinary(t) // build before the clock matters
	n, err := nstest.Build(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("removing namespaces: %v", err)
		}
	})
	l := &lab{t: t, net: n, vip: netip.MustParseAddr(vip), dir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, h := range []nstest.Host{n.LB1, n.LB2} {
		if err := nstest.Serve(ctx, h.NS, servicePort, strings.TrimPrefix(h.NS, prefix)); err != nil {
			t.Fatal(err)
		}
	}
	if l.w1, err = nstest.WatchAddr(n.LB1.NS, l.vip); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.w1.Stop)
	if l.w2, err = nstest.WatchAddr(n.LB2.NS, l.vip); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.w2.Stop)
	if l.client, err = nstest.NewDialer(n.C.NS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.client.Close() })
	return l
}

// conf writes a configuration file and returns its path.
func (l *lab) conf(name, text string) string {
	l.t.Helper()
	p := filepath.Join(l.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// routerConf is a router block for the lab's VIP with 100 ms adverts.
func (l *lab) routerConf(priority int, extra ...string) string {
	bits := 24
	if l.vip.Is6() {
		bits = 64
	}
	return fmt.Sprintf("router web {\n\tinterface eth0\n\tvrid 51\n\tpriority %d\n\tadvert 100ms\n\tvip %s/%d\n\t%s\n}\n",
		priority, l.vip, bits, strings.Join(extra, "\n\t"))
}

// daemon is a process run in a namespace, its output kept for failure
// reports.
type daemon struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// start runs name with args in namespace ns until the test ends.
func (l *lab) start(ns, label string, name string, args ...string) *daemon {
	l.t.Helper()
	d := &daemon{t: l.t, name: label, cmd: nstest.Command(ns, name, args...), out: &syncBuffer{}, done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	l.t.Cleanup(func() {
		d.kill()
		if strings.Contains(d.out.String(), "DATA RACE") { // built with GOFLAGS=-race
			l.t.Errorf("%s reported a data race", d.name)
		}
		if l.t.Failed() {
			l.t.Logf("output of %s:\n%s", d.name, d.out)
		}
	})
	return d
}

// haagent runs the daemon in ns with configuration text.
func (l *lab) haagent(ns, text string) *daemon {
	l.t.Helper()
	path := l.conf(strings.TrimPrefix(ns, prefix)+".conf", text)
	return l.start(ns, "haagent in "+ns, haagentBinary(l.t), "-f", path, "-log-level", "debug")
}

func (d *daemon) signal(s syscall.Signal) {
	if d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(s)
	}
}

// stop sends SIGTERM and waits for the exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.t.Fatalf("%s did not stop within 15s of SIGTERM", d.name)
	}
}

// kill sends SIGKILL and waits for the exit.
func (d *daemon) kill() {
	d.signal(syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
	}
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// within returns a context that ends after d.
func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// vipAddr is host:port of the VIP's service.
func (l *lab) vipAddr() string {
	return netipAddrPort(l.vip, servicePort)
}

func netipAddrPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// answeredBy waits until the client's connections to the VIP are
// answered by host (its short name, e.g. "lb2"), and returns when the
// first such answer came.
func (l *lab) answeredBy(host string, timeout time.Duration) (time.Time, bool) {
	var at time.Time
	ok := wait.For(timeout, func() bool {
		s, err := l.client.Ask(l.vipAddr(), 50*time.Millisecond)
		if err == nil && s == host {
			at = time.Now()
			return true
		}
		return false
	})
	return at, ok
}

// settled waits until exactly lbN holds the VIP and the client reaches it.
func (l *lab) settled(holder string, timeout time.Duration) {
	l.t.Helper()
	ctx := within(l.t, timeout)
	w, other := l.w1, l.w2
	if holder == "lb2" {
		w, other = l.w2, l.w1
	}
	if w.Wait(ctx, true).IsZero() || other.Wait(ctx, false).IsZero() {
		l.t.Fatalf("%s never became the only holder of %s within %v (lb1 has it: %v, lb2: %v)", holder, l.vip, timeout, l.w1.Has(), l.w2.Has())
	}
	if _, ok := l.answeredBy(holder, timeout); !ok {
		l.t.Fatalf("client never reached %s at %s within %v", holder, l.vipAddr(), timeout)
	}
}
