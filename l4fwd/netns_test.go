package l4fwd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/nstest"
	"github.com/sluicelb/sluice/internal/wait"
	"github.com/sluicelb/sluice/l4fwd"
)

// The namespace tests re-execute this test binary inside the namespaces
// they build (ip netns exec), in one of these roles, chosen by L4T_ROLE:
//
//	server NAME ADDR        HTTP server answering NAME to every request
//	client URL N [SRC,...] [TIMEOUT]
//	                        N requests from each source, each on a new connection; prints {"SRC": {"NAME": count}}
//	hold URL                one keep-alive connection; a request per stdin line, prints "NAME reused"
//	once URL SRC:PORT       one request from that source address and port, closed with a reset; prints NAME
//	l4fwd ARGS...           the daemon itself (l4fwd.Run)
const roleEnv = "L4T_ROLE"

// prefix marks every namespace and interface these tests create; the
// benchmark's are l4b-*.
const prefix = "l4t-"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runRole(role string, args []string) error {
	switch role {
	case "server":
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return err
		}
		name := args[0]
		fmt.Println("listening")
		return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				fmt.Fprintln(os.Stderr, "health check answered") // for tests to count
			}
			io.WriteString(w, name)
		}))
	case "client":
		n, _ := strconv.Atoi(args[1])
		sources := []string{""}
		if len(args) > 2 && args[2] != "" {
			sources = strings.Split(args[2], ",")
		}
		timeout := 3 * time.Second
		if len(args) > 3 {
			timeout, _ = time.ParseDuration(args[3])
		}
		all := map[string]map[string]int{}
		for _, src := range sources {
			tr := &http.Transport{DisableKeepAlives: true}
			if src != "" {
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				tr.DialContext = d.DialContext
			}
			c := &http.Client{Transport: tr, Timeout: timeout}
			counts := map[string]int{}
			for range n {
				name, err := get(c, args[0], nil)
				if err != nil {
					name = "error"
				}
				counts[name]++
			}
			all[src] = counts
		}
		return json.NewEncoder(os.Stdout).Encode(all)
	case "hold":
		c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 3 * time.Second}
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			reused := false
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
			name, err := get(c, args[0], trace)
			if err != nil {
				name = "error"
			}
			fmt.Println(name, reused)
		}
		return nil
	case "once":
		return once(args[0], args[1])
	case "l4fwd":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		reload := make(chan os.Signal, 1)
		signal.Notify(reload, syscall.SIGHUP)
		return l4fwd.Run(ctx, args, reload, os.Stdout)
	}
	return fmt.Errorf("unknown role %q", role)
}

// once asks url once from the source address from (ip:port) and prints
// the name that answered. The connection ends with a reset, so no
// TIME_WAIT holds the port and the next call can reuse it at once, as
// clients do.
func once(url, from string) error {
	local, err := net.ResolveTCPAddr("tcp", from)
	if err != nil {
		return err
	}
	d := &net.Dialer{LocalAddr: local, Control: func(_, _ string, c syscall.RawConn) error {
		var opt error
		err := c.Control(func(fd uintptr) {
			opt = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		return errors.Join(err, opt)
	}}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return c, c.(*net.TCPConn).SetLinger(0)
	}}
	name, err := get(&http.Client{Transport: tr, Timeout: 3 * time.Second}, url, nil)
	if err != nil {
		return err
	}
	fmt.Println(name)
	return nil
}

func get(c *http.Client, url string, trace *httptrace.ClientTrace) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if trace != nil {
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// needRoot skips a test that builds namespaces when it cannot.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("Test requires root privileges: it builds network namespaces.")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("Test requires the ip command (iproute2) to build network namespaces.")
	}
}

var cleanOnce sync.Once

// removeStale deletes namespaces left by an earlier run that died before
// its cleanup, with the processes inside them (ours, from then).
func removeStale() {
	cleanOnce.Do(func() { _ = nstest.Remove(prefix) })
}

// ip runs an ip(8) command (or, with "netns exec", any command in a
// namespace) and fails the test if it fails.
func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := nstest.Output(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDrain holds a connection open from client to url, drains the real
// server that answered it with the configuration config(r1's state, r2's
// state), and checks that the held connection keeps reaching it while 40
// new ones all go to the other. ok counts the eligible servers.
func checkDrain(t *testing.T, d *daemon, client, url string, ok func() int, config func(r1, r2 string) string) {
	t.Helper()
	hold := start(t, client, "hold", url)
	first, _ := hold.ask(t)
	other := map[string]string{"r1": "r2", "r2": "r1"}[first]
	if other == "" {
		t.Fatalf("held connection answered %q", first)
	}
	states := map[string]string{first: "drain", other: "active"}
	d.reload(t, config(states["r1"], states["r2"]))
	wait.Until(t, first+" to drain", 5*time.Second, func() bool { return ok() == 1 })
	for range 5 {
		name, reused := hold.ask(t)
		if name != first || !reused {
			t.Fatalf("established connection to drained %s answered by %q (reused %v)", first, name, reused)
		}
	}
	if counts := requests(t, client, url, 40); counts[other] != 40 {
		t.Errorf("new connections during the drain of %s went %v, want all to %s", first, counts, other)
	}
}

// checkResetOnDown holds a connection to r2 (namespace r2ns) through url
// from client, then cuts r2's link, as if its host died: neither answers
// nor resets come from it. Once health checks take r2 out, l4fwd forgets
// its connections, so the held connection's next request is answered with
// a reset by r1 and the client's retry reaches r1 at once, instead of
// waiting out its timeout. ok counts the eligible servers; d's
// configuration must have reset_on_down.
func checkResetOnDown(t *testing.T, d *daemon, client, url, r2ns string, ok func() int) {
	t.Helper()
	wait.Until(t, "the reload", 5*time.Second, func() bool { return ok() == 2 })
	var held *proc
	for range 16 { // NAT takes the servers in turn; DR hashes, and misses r2 16 times in 65,536
		h := start(t, client, "hold", url)
		if name, _ := h.ask(t); name == "r2" {
			held = h
			break
		}
		h.stop()
	}
	if held == nil {
		t.Fatal("none of 16 new connections went to r2")
	}
	forgot := d.logs.count("reset_on_down: forgot")
	// The link going down takes r2's default route (NAT) with it.
	route := strings.Fields(ip(t, "-n", r2ns, "route", "show", "default"))
	ip(t, "-n", r2ns, "link", "set", prefix+"e", "down")
	defer func() {
		ip(t, "-n", r2ns, "link", "set", prefix+"e", "up")
		if len(route) > 0 {
			ip(t, append([]string{"-n", r2ns, "route", "replace"}, route...)...)
		}
		wait.Until(t, "r2 to return", 10*time.Second, func() bool { return ok() == 2 })
	}()
	wait.Until(t, "r2 to be taken out and its connections forgotten", 5*time.Second, func() bool {
		return ok() == 1 && d.logs.count("reset_on_down: forgot") > forgot
	})
	asked := time.Now()
	name, reused := held.ask(t)
	took := time.Since(asked)
	t.Logf("the held connection's request after r2 died: answered by %s (reused %v) in %v", name, reused, took)
	if name != "r1" || reused {
		t.Errorf("the held connection's request after r2 died was answered by %q (reused %v), want r1 on a new connection", name, reused)
	}
	if took > time.Second {
		t.Errorf("the request took %v: the client should have had a reset at once", took)
	}
}

// tcpExtCounter reads one TcpExt counter of the network namespace ns from
// /proc/net/netstat, failing if this kernel does not count it.
func tcpExtCounter(t *testing.T, ns, name string) int64 {
	t.Helper()
	out := ip(t, "netns", "exec", ns, "cat", "/proc/net/netstat")
	var names []string
	for line := range strings.Lines(out) {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, f := range fields {
			if i < len(names) && names[i] == name {
				n, err := strconv.ParseInt(f, 10, 64)
				if err != nil {
					t.Fatalf("%s in %s: %v", name, ns, err)
				}
				return n
			}
		}
	}
	t.Fatalf("this kernel has no TcpExt counter %s", name)
	return 0
}

// addNS creates a namespace with loopback up, removed when the test ends.
func addNS(t *testing.T, name string) string {
	t.Helper()
	ip(t, "netns", "add", name)
	t.Cleanup(func() { _ = nstest.RemoveNS(name) })
	ip(t, "-n", name, "link", "set", "lo", "up")
	return name
}

// sysctl sets key, value pairs in namespace ns.
func sysctl(t *testing.T, ns string, kv ...string) {
	t.Helper()
	if err := nstest.Sysctl(ns, kv...); err != nil {
		t.Fatal(err)
	}
}

// proc is a process started in a namespace.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	done  chan struct{}
	logs  *logWriter
}

// start runs this test binary in role inside ns. It is ended when the
// test ends (SIGTERM, then SIGKILL), so the daemon can remove its tables.
func start(t *testing.T, ns, role string, args ...string) *proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, self}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	logs := &logWriter{t: t, prefix: ns + " " + role + ": "}
	cmd.Stderr = logs
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), done: make(chan struct{}), logs: logs}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	return p
}

// stop ends p and waits for it.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// line reads p's next line of output, or fails after a deadline.
func (p *proc) line(t *testing.T) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if p.out.Scan() {
			got <- p.out.Text()
		} else {
			got <- ""
		}
	}()
	select {
	case l := <-got:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no output within 10s")
		return ""
	}
}

// logWriter sends a child's stderr to the test log and keeps it, so a
// test can wait for a message.
type logWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	text   strings.Builder
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.text.Write(b)
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.t.Log(w.prefix + l)
	}
	return len(b), nil
}

// count returns how many times s occurs in what was written.
func (w *logWriter) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.text.String(), s)
}

// server starts an HTTP server named name on addr inside ns and waits
// until it listens.
func server(t *testing.T, ns, name, addr string) *proc {
	t.Helper()
	p := start(t, ns, "server", name, addr)
	if l := p.line(t); l != "listening" {
		t.Fatalf("server %s in %s did not start: %q", name, ns, l)
	}
	return p
}

// requests makes n requests, each on a new connection, from ns and
// counts the answers by server name ("error" for failures).
func requests(t *testing.T, ns, url string, n int) map[string]int {
	t.Helper()
	return requestsFrom(t, ns, url, n, "")[""]
}

// requestsFrom makes n requests from each source address and counts the
// answers per source.
func requestsFrom(t *testing.T, ns, url string, n int, sources ...string) map[string]map[string]int {
	t.Helper()
	return requestsWithin(t, ns, url, n, 3*time.Second, sources...)
}

// requestsWithin is requestsFrom with a timeout per request other than 3s.
func requestsWithin(t *testing.T, ns, url string, n int, timeout time.Duration, sources ...string) map[string]map[string]int {
	t.Helper()
	p := start(t, ns, "client", url, strconv.Itoa(n), strings.Join(sources, ","), timeout.String())
	var counts map[string]map[string]int
	if err := json.Unmarshal([]byte(p.line(t)), &counts); err != nil {
		t.Fatalf("client output: %v", err)
	}
	<-p.done
	return counts
}

// askOnce makes one request to url from ns, from the source address and
// port from, and returns the name that answered.
func askOnce(t *testing.T, ns, url, from string) string {
	t.Helper()
	p := start(t, ns, "once", url, from)
	name := p.line(t)
	<-p.done
	return name
}

// daemon writes config to a file and runs l4fwd with it inside ns.
type daemon struct {
	*proc
	config string
}

func startDaemon(t *testing.T, ns, config string) *daemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "l4fwd.conf")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return &daemon{proc: start(t, ns, "l4fwd", "-config", path), config: path}
}

// reload rewrites the configuration and sends SIGHUP.
func (d *daemon) reload(t *testing.T, config string) {
	t.Helper()
	if err := os.WriteFile(d.config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
}

// ask sends one request over a hold process's connection and returns the
// answering server and whether the connection was reused.
func (p *proc) ask(t *testing.T) (string, bool) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, "\n"); err != nil {
		t.Fatal(err)
	}
	name, reused, _ := strings.Cut(p.line(t), " ")
	return name, reused == "true"
}
