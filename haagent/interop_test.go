package haagent_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/haagent"
	"github.com/sluicelb/sluice/internal/wait"
)

// keepalived runs keepalived 2.x as a VRRPv3 peer in ns. Its adverts
// are the reference haagent must interoperate with.
type keepalived struct {
	*daemon
	vrrpPid string
}

func (l *lab) keepalived(ns string, priority int, unicastSrc, unicastPeer string) *keepalived {
	l.t.Helper()
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		l.t.Fatal("keepalived is not installed: ./test.sh installs it (Debian package keepalived)")
	}
	name := strings.TrimPrefix(ns, prefix)
	uc := ""
	if unicastPeer != "" {
		uc = fmt.Sprintf("unicast_src_ip %s\n  unicast_peer {\n    %s\n  }", unicastSrc, unicastPeer)
	}
	bits := 24
	if l.vip.Is6() {
		bits = 64
	}
	conf := l.conf("ka-"+name+".conf", fmt.Sprintf(`global_defs {
  router_id %s
  vrrp_version 3
  script_user root
  enable_script_security
}
vrrp_instance web {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority %d
  advert_int 0.1
  %s
  virtual_ipaddress {
    %s/%d dev eth0
  }
}
`, name, priority, uc, l.vip, bits))
	pid := filepath.Join(l.dir, "ka-"+name+".pid")
	vrrpPid := filepath.Join(l.dir, "ka-"+name+".vrrp.pid")
	for _, f := range []string{pid, vrrpPid} {
		os.Remove(f)
	}
	d := l.start(ns, "keepalived in "+ns, bin, "-n", "-l", "-D", "-P", "-f", conf, "-p", pid, "-r", vrrpPid)
	k := &keepalived{daemon: d, vrrpPid: vrrpPid}
	if !wait.For(5*time.Second, func() bool { _, err := os.Stat(vrrpPid); return err == nil }) {
		l.t.Fatal("keepalived did not start its VRRP process within 5s")
	}
	l.t.Cleanup(k.kill)
	return k
}

// kill SIGKILLs keepalived's VRRP child and then its parent, as a crash
// would take both.
func (k *keepalived) kill() {
	if b, err := os.ReadFile(k.vrrpPid); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	k.daemon.kill()
}

// TestInteropWithKeepalived puts haagent and keepalived in one virtual
// router, each way round: the higher priority wins, and each takes over
// from the other on a crash and on a graceful stop.
func TestInteropWithKeepalived(t *testing.T) {
	down, skew := haagent.MasterDownInterval(100, advert), haagent.SkewTime(100, advert)
	cases := []struct {
		name      string
		vip       string
		haagentLB string // "lb1" (priority 150) or "lb2" (100)
		unicast   bool
	}{
		{"haagent master, keepalived backup", "10.99.0.100", "lb1", false},
		{"keepalived master, haagent backup", "10.99.0.100", "lb2", false},
		{"unicast, haagent master", "10.99.0.100", "lb1", true},
		{"unicast, keepalived master", "10.99.0.100", "lb2", true},
		{"ipv6, keepalived master, haagent backup", "fd99::100", "lb2", false},
		{"ipv6, haagent master, keepalived backup", "fd99::100", "lb1", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t, c.vip)
			type peer struct {
				ns, addr, other string
				prio            int
			}
			p1 := peer{l.net.LB1.NS, "10.99.0.11", "10.99.0.12", 150}
			p2 := peer{l.net.LB2.NS, "10.99.0.12", "10.99.0.11", 100}
			// start runs the peer's daemon and returns its crash and
			// graceful-stop functions.
			start := func(p peer, isHaagent bool) (kill, stop func()) {
				if isHaagent {
					var extra []string
					if c.unicast {
						extra = append(extra, "peers "+p.other)
					}
					d := l.haagent(p.ns, l.routerConf(p.prio, extra...))
					return d.kill, d.stop
				}
				src, dst := "", ""
				if c.unicast {
					src, dst = p.addr, p.other
				}
				k := l.keepalived(p.ns, p.prio, src, dst)
				return k.kill, k.stop
			}
			_, _ = start(p2, c.haagentLB == "lb2")
			kill1, _ := start(p1, c.haagentLB == "lb1")
			l.settled("lb1", 5*time.Second) // priority 150 wins, whoever runs it

			t0 := time.Now()
			kill1()
			took := l.w2.Wait(within(t, 3*time.Second), true)
			if took.IsZero() || took.Sub(t0) > down+margin {
				t.Fatalf("after a crash of lb1, lb2 took the VIP after %v, want within Master_Down_Interval %v + %v", took.Sub(t0), down, margin)
			}
			t.Logf("crash: lb2 took over in %v", took.Sub(t0))
			// lb1 comes back (both daemons first clear the VIP the crash
			// left) and preempts: priority 150 > 100.
			_, stop1 := start(p1, c.haagentLB == "lb1")
			l.settled("lb1", 5*time.Second)

			t0 = time.Now()
			stop1()
			took = l.w2.Wait(within(t, 3*time.Second), true)
			if took.IsZero() || took.Sub(t0) > skew+margin {
				t.Fatalf("after a graceful stop of lb1, lb2 took the VIP after %v, want within Skew_Time %v + %v", took.Sub(t0), skew, margin)
			}
			t.Logf("graceful stop: lb2 took over in %v", took.Sub(t0))
			if _, ok := l.answeredBy("lb2", time.Second); !ok {
				t.Error("client did not reach lb2 after the handover")
			}
		})
	}
}
