package caddymodules_test

// End-to-end tests: they build the real custom Caddy once (cmd/caddy), run
// it on the example Caddyfiles with their backend addresses pointed at test
// servers, and send real HTTP through it.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/wait"
)

var caddyBinary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-caddy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Caddy's default storage, which holds operator decisions and keys,
	// is the test's own, never the user's.
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	caddyBinary = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBinary, "../cmd/caddy")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the custom Caddy:", err)
		return 1
	}
	return m.Run()
}

// backend is a test server that names itself in its answers.
type backend struct {
	name     string
	addr     string
	delay    atomic.Int64 // nanoseconds added to each answer
	sick     atomic.Bool  // /health answers 503
	agent    atomic.Value // string: /agent's reply
	sessions atomic.Int64 // sessions opened by /login.jsp
	listener net.Listener
	server   *http.Server
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String()}
	b.serve(t, ln)
	return b
}

func (b *backend) serve(t *testing.T, ln net.Listener) {
	b.listener = ln
	b.server = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			if b.sick.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		case "/agent":
			reply, _ := b.agent.Load().(string)
			fmt.Fprint(w, cmp.Or(reply, "up 100%"))
			return
		case "/login.jsp":
			// An application server opens a session: the cookie names it.
			http.SetCookie(w, &http.Cookie{Name: "JSESSIONID", Value: fmt.Sprintf("%s-%d", b.name, b.sessions.Add(1)), Path: "/"})
		}
		time.Sleep(time.Duration(b.delay.Load()))
		fmt.Fprint(w, b.name)
	})}
	go b.server.Serve(ln)
	srv := b.server
	t.Cleanup(func() { srv.Close() })
}

// stop takes the backend down, connections and all.
func (b *backend) stop() { b.server.Close() }

// restart brings a stopped backend back on its address.
func (b *backend) restart(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", b.addr)
		if err == nil {
			b.serve(t, ln)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relisten on %s: %v", b.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// caddyProc is a running custom Caddy.
type caddyProc struct {
	admin   string // the admin endpoint's host:port
	storage string // the storage directory
}

// exampleConfig adapts an example Caddyfile and readies it for a test:
// addresses replaced (example backends by test servers), the admin
// endpoint on a free port, storage in a fresh directory, quiet logs.
func exampleConfig(t *testing.T, example string, replace map[string]string) map[string]any {
	t.Helper()
	out, err := exec.Command(caddyBinary, "adapt", "--config", filepath.Join("..", "Caddyfile.examples", example)).Output()
	if err != nil {
		t.Fatalf("adapting %s: %v", example, err)
	}
	for from, to := range replace {
		out = bytes.ReplaceAll(out, []byte(from), []byte(to))
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["admin"] = map[string]any{"listen": freePort(t)}
	cfg["storage"] = map[string]any{"module": "file_system", "root": t.TempDir()}
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}}
	return cfg
}

// runCaddy runs Caddy on an example readied by exampleConfig and waits
// until url answers.
func runCaddy(t *testing.T, example string, replace map[string]string, url string) *caddyProc {
	t.Helper()
	return runConfig(t, exampleConfig(t, example, replace), url)
}

// runConfig runs Caddy on cfg and waits until url answers without a
// server error. Caddy is killed when the test ends.
func runConfig(t *testing.T, cfg map[string]any, url string) *caddyProc {
	t.Helper()
	out, _ := json.Marshal(cfg)
	path := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(caddyBinary, "run", "--config", path)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("caddy exited before serving: %s", stderr.String())
		default:
		}
		// Ready means served: a 502 says a backend of the same Caddy (the
		// quickstart's) has not opened its listener yet.
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not serve %s within 30s: %s", url, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p := &caddyProc{}
	if admin, ok := cfg["admin"].(map[string]any); ok {
		p.admin, _ = admin["listen"].(string)
	}
	if st, ok := cfg["storage"].(map[string]any); ok {
		p.storage, _ = st["root"].(string)
	}
	return p
}

var client = &http.Client{Timeout: 10 * time.Second}

// get sends one request and returns the body, which names the backend.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	return string(body)
}

// count sends n requests, workers at a time, and counts answers by backend.
func count(t *testing.T, url string, n, workers int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	got := make(map[string]int)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				name := get(t, url)
				mu.Lock()
				got[name]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return got
}

func TestWeightsSplitTraffic(t *testing.T) {
	app1, app2, standby := startBackend(t, "app1"), startBackend(t, "app2"), startBackend(t, "standby")
	url := "http://localhost:8081/"
	runCaddy(t, "weighted.Caddyfile", map[string]string{
		"127.0.0.1:9101": app1.addr, "127.0.0.1:9102": app2.addr, "127.0.0.1:9103": standby.addr,
	}, url)
	got := count(t, url, 400, 1)
	if share := float64(got["app1"]) / 400; share < 0.70 || share > 0.80 {
		t.Fatalf("weights 3:1 gave app1 %.1f%% of 400 requests (%v), want 75%% ± 5%%", share*100, got)
	}
	if got["standby"] != 0 {
		t.Fatalf("standby served %d requests while both primaries were up", got["standby"])
	}

	// Both primaries die: the standby takes over once health checks see it.
	app1.stop()
	app2.stop()
	wait.Until(t, "the standby to take over", 10*time.Second, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body) == "standby"
	})
	if got := count(t, url, 20, 1); got["standby"] != 20 {
		t.Fatalf("with both primaries down: %v, want all on the standby", got)
	}

	// A primary returns: traffic leaves the standby.
	app2.restart(t)
	wait.Until(t, "traffic to return to app2", 10*time.Second, func() bool { return get(t, url) == "app2" })
	if got := count(t, url, 20, 1); got["app2"] != 20 {
		t.Fatalf("after app2 returned: %v, want all on app2", got)
	}
}

func TestFastResponseAvoidsASlowBackend(t *testing.T) {
	a, b, slow := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "slow")
	url := "http://localhost:8082/"
	runCaddy(t, "fast_response.Caddyfile", map[string]string{
		"127.0.0.1:9201": a.addr, "127.0.0.1:9202": b.addr, "127.0.0.1:9203": slow.addr,
	}, url)
	slow.delay.Store(int64(20 * time.Millisecond))
	got := count(t, url, 600, 4)
	if got["slow"] >= 600*15/100 {
		t.Fatalf("backend 20ms slower got %d of 600 requests (%v), want under 15%%", got["slow"], got)
	}
	t.Logf("with one backend 20ms slower: %v", got)

	// It recovers and wins its share back within seconds.
	slow.delay.Store(0)
	var last map[string]int
	wait.Until(t, "the recovered backend to win its share back", 20*time.Second, func() bool {
		last = count(t, url, 300, 4)
		return last["slow"] >= 300*25/100
	})
	t.Logf("after recovery: %v", last)
}

func TestConsistentHashKeepsURLsTogether(t *testing.T) {
	c1, c2, c3 := startBackend(t, "c1"), startBackend(t, "c2"), startBackend(t, "c3")
	url := "http://localhost:8083"
	runCaddy(t, "cache_affinity.Caddyfile", map[string]string{
		"127.0.0.1:9301": c1.addr, "127.0.0.1:9302": c2.addr, "127.0.0.1:9303": c3.addr,
		"127.0.0.1:9401": c1.addr, "127.0.0.1:9402": c2.addr,
	}, url+"/")
	owners := make(map[string]int)
	for i := range 60 {
		path := fmt.Sprintf("%s/objects/%d", url, i)
		first := get(t, path)
		for range 3 {
			if again := get(t, path); again != first {
				t.Fatalf("%s went to %s, then %s", path, first, again)
			}
		}
		owners[first]++
	}
	if len(owners) != 3 {
		t.Fatalf("60 URLs mapped to %v; want all three caches used", owners)
	}
	// One client address: one server.
	first := get(t, "http://localhost:8084/")
	for range 20 {
		if got := get(t, "http://localhost:8084/"); got != first {
			t.Fatalf("source_ip_hash moved one client from %s to %s", first, got)
		}
	}
}

func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "Caddyfile.examples", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := exec.Command(caddyBinary, "adapt", "--config", f, "--validate").CombinedOutput()
			if err != nil {
				t.Fatalf("caddy adapt --validate: %v\n%s", err, out)
			}
			if strings.Contains(string(out), "Caddyfile input is not formatted") {
				t.Errorf("not formatted: run caddy fmt --overwrite %s", f)
			}
		})
	}
}

func TestBadInputIsRefused(t *testing.T) {
	cases := []struct {
		name, policy, want string
	}{
		{"unknown policy", "lb_policy fastest_response", "fastest_response"},
		{"zero weight", "lb_policy smooth_weighted_round_robin {\n\t\tweight 127.0.0.1:9001 0\n\t}", "positive whole number"},
		{"negative weight", "lb_policy fast_response {\n\t\tweight 127.0.0.1:9001 -2\n\t}", "positive whole number"},
		{"weight without number", "lb_policy weighted_least_conn {\n\t\tweight 127.0.0.1:9001\n\t}", "weight takes an upstream address and a whole number"},
		{"malformed prefix", "lb_policy source_ip_hash /33", "IPv4 prefix must be a length from /1 to /32"},
		{"malformed IPv6 prefix", "lb_policy source_ip_hash /24 /129", "IPv6 prefix must be a length from /1 to /128"},
		{"hash key naming nothing", "lb_policy consistent_hash header", "hash key header needs a name"},
		{"unknown hash key", "lb_policy consistent_hash path", "unknown hash key"},
		{"unknown option", "lb_policy two_choices {\n\t\tbackup 127.0.0.1:9001\n\t}", "two_choices has no option"},
		{"bad decay", "lb_policy fast_response {\n\t\tdecay soon\n\t}", "decay must be a positive duration"},
		{"bad pool name", "lb_policy fast_response {\n\t\tpool web/1\n\t}", `web/1\" must be letters`},
		{"sticky without a key", "lb_policy sticky", "sticky needs what identifies a session"},
		{"sticky by nothing known", "lb_policy sticky session", `sticky cannot identify sessions by \"session\"`},
		{"sticky learn without a cookie", "lb_policy sticky learn", "sticky learn needs a cookie name"},
		{"sticky header with a bad field", "lb_policy sticky header X:Key", "sticky header needs a header field"},
		{"sticky prefix too long", "lb_policy sticky client_ip /33", "prefix must be a length from /1 to /32"},
		{"sticky secret for a table", "lb_policy sticky header X-Key {\n\t\tsecret s\n\t}", "takes no secret"},
		{"sticky bad timeout", "lb_policy sticky cookie {\n\t\ttimeout forever\n\t}", "timeout must be a positive duration"},
		{"sticky on Caddy's policy", "lb_policy sticky cookie {\n\t\tfallback round_robin\n\t}", "fallback must be one of Sluice's other policies"},
		{"sticky on sticky", "lb_policy sticky cookie {\n\t\tfallback sticky cookie\n\t}", "sticky cannot fall back on sticky"},
		{"pool options in the fallback", "lb_policy sticky cookie {\n\t\tfallback fast_response {\n\t\t\tweight 127.0.0.1:9001 2\n\t\t}\n\t}", "in sticky's block, not in its fallback"},
		{"failover to itself", "lb_policy fast_response {\n\t\tpool web\n\t\tfailover web\n\t}", "names itself as its failover"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.Caddyfile")
			cfg := "http://localhost:8090 {\n\treverse_proxy 127.0.0.1:9001 {\n\t\t" + c.policy + "\n\t}\n}\n"
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(caddyBinary, "adapt", "--config", path, "--validate").CombinedOutput()
			if err == nil {
				t.Fatalf("accepted:\n%s", cfg)
			}
			msg := string(out)
			if !strings.Contains(msg, c.want) {
				t.Fatalf("error does not say %q:\n%s", c.want, msg)
			}
			if !strings.Contains(msg, "bad.Caddyfile:") {
				t.Fatalf("error does not name the file and line:\n%s", msg)
			}
		})
	}
	// caddy run refuses to start on such a file, and says why.
	path := filepath.Join(t.TempDir(), "bad.Caddyfile")
	cfg := "{\n\tadmin off\n}\nhttp://localhost:8090 {\n\treverse_proxy 127.0.0.1:9001 {\n\t\tlb_policy source_ip_hash /33\n\t}\n}\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, caddyBinary, "run", "--config", path).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("caddy run did not refuse a bad config (err %v):\n%s", err, out)
	}
	if !strings.Contains(string(out), "bad.Caddyfile:6") {
		t.Fatalf("caddy run's refusal does not name the file and line:\n%s", out)
	}
}

func TestQuickstart(t *testing.T) {
	url := "http://localhost:8080/"
	runCaddy(t, "quickstart.Caddyfile", nil, url)
	// fast_response may shun a backend whose first answer was slow (a cold
	// start) until one of its exploring picks, one in 32, finds it fast:
	// every backend answers within a few batches, not always in the first.
	got := map[string]int{}
	answered := wait.For(10*time.Second, func() bool {
		for k, n := range count(t, url, 60, 3) {
			got[k] += n
		}
		for _, name := range []string{"backend-1", "backend-2", "backend-3"} {
			if got[fmt.Sprintf("Hello from %s (127.0.0.1:900%s)\n", name, name[len(name)-1:])] == 0 {
				return false
			}
		}
		return true
	})
	if !answered || len(got) != 3 {
		t.Fatalf("want answers from the three backends only, within 10s: %v", got)
	}
}
