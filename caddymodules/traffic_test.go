package caddymodules_test

// End-to-end tests of traffic management on the real custom Caddy: content
// switching, persistence, operator actions through the admin API, reloads
// and TLS termination.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/wait"
)

// request sends a GET to url with the given headers and returns the
// status and body.
func request(t *testing.T, c *http.Client, url string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// served sends n requests with the given headers, which must all succeed,
// and counts them by backend.
func served(t *testing.T, url string, n int, header map[string]string) map[string]int {
	t.Helper()
	got := make(map[string]int)
	for range n {
		status, body := request(t, client, url, header)
		if status != http.StatusOK {
			t.Fatalf("GET %s %v: %d %s", url, header, status, body)
		}
		got[body]++
	}
	return got
}

// call calls a Sluice admin route and decodes its JSON answer into out,
// if not nil; it returns the status and the raw answer.
func (p *caddyProc) call(t *testing.T, method, path, body string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+p.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

// act takes an operator action and fails the test unless it succeeds.
func (p *caddyProc) act(t *testing.T, pool, backend, action, body string) {
	t.Helper()
	if status, raw := p.call(t, http.MethodPost, "/sluice/pools/"+pool+"/backends/"+backend+"/"+action, body, nil); status != http.StatusOK {
		t.Fatalf("%s %s in %s: %d %s", action, backend, pool, status, raw)
	}
}

// poolView is the admin API's view of a pool, as far as tests read it.
type poolView struct {
	Name        string `json:"name"`
	Persistence *struct {
		Entries    int    `json:"entries"`
		BadCookies uint64 `json:"bad_cookies"`
	} `json:"persistence"`
	Backends []struct {
		Address        string  `json:"address"`
		State          string  `json:"state"`
		Weight         int     `json:"weight"`
		StickySessions *int    `json:"sticky_sessions"`
		LeavesAt       *string `json:"leaves_at"`
	} `json:"backends"`
}

func (p *caddyProc) pool(t *testing.T, name string) poolView {
	t.Helper()
	var v poolView
	if status, raw := p.call(t, http.MethodGet, "/sluice/pools/"+name, "", &v); status != http.StatusOK {
		t.Fatalf("GET pool %s: %d %s", name, status, raw)
	}
	return v
}

func (v poolView) state(address string) string {
	for _, b := range v.Backends {
		if b.Address == address {
			return b.State
		}
	}
	return "absent"
}

// load replaces the running configuration, as caddy reload does.
func (p *caddyProc) load(t *testing.T, cfg map[string]any) {
	t.Helper()
	body, _ := json.Marshal(cfg)
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.admin+"/load", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("reload refused: %d %s", resp.StatusCode, raw)
	}
}

func TestContentSwitchingByCookieField(t *testing.T) {
	p1, p2 := startBackend(t, "premium1"), startBackend(t, "premium2")
	f1, f2 := startBackend(t, "free1"), startBackend(t, "free2")
	url := "http://localhost:8091/"
	runCaddy(t, "premium.Caddyfile", map[string]string{
		"127.0.0.1:9711": p1.addr, "127.0.0.1:9712": p2.addr, "127.0.0.1:9721": f1.addr, "127.0.0.1:9722": f2.addr,
	}, url)
	gold := map[string]string{"Cookie": "profile=tier=gold&region=eu"}
	onlyOn := func(got map[string]int, prefix string) bool {
		for name := range got {
			if !strings.HasPrefix(name, prefix) {
				return false
			}
		}
		return true
	}

	if got := served(t, url, 100, gold); !onlyOn(got, "premium") {
		t.Fatalf("gold-tier requests went to %v, want the premium pool only", got)
	}
	if got := served(t, url, 100, nil); !onlyOn(got, "free") {
		t.Fatalf("requests without a profile went to %v, want the free pool only", got)
	}
	for _, other := range []string{"tier=silver", "region=eu&tier=golden", "tier", "garbage%zz"} {
		if got := served(t, url, 10, map[string]string{"Cookie": "profile=" + other}); !onlyOn(got, "free") {
			t.Fatalf("profile %q went to %v, want the free pool", other, got)
		}
	}

	// The premium pool goes down: its requests fall over to the free pool,
	// and not one fails.
	p1.stop()
	p2.stop()
	if got := served(t, url, 50, gold); !onlyOn(got, "free") {
		t.Fatalf("with the premium pool down, gold requests went to %v", got)
	}
	// It comes back, and takes its requests back.
	p1.restart(t)
	wait.Until(t, "premium requests to return to the premium pool", 30*time.Second, func() bool {
		_, body := request(t, client, url, gold)
		return body == "premium1"
	})
}

func TestLearnedSessionCookieKeepsUsersOnTheirServer(t *testing.T) {
	t1, t2 := startBackend(t, "tomcat1"), startBackend(t, "tomcat2")
	s1, s2 := startBackend(t, "static1"), startBackend(t, "static2")
	base := "http://localhost:8092"
	runCaddy(t, "jsp_static.Caddyfile", map[string]string{
		"127.0.0.1:9731": t1.addr, "127.0.0.1:9732": t2.addr, "127.0.0.1:9741": s1.addr, "127.0.0.1:9742": s2.addr,
	}, base+"/")

	for name := range served(t, base+"/img/logo.png", 20, nil) {
		if !strings.HasPrefix(name, "static") {
			t.Fatalf("a static file was served by %s", name)
		}
	}
	// Without a session, the fallback (round robin) alternates.
	if got := served(t, base+"/catalog.jsp", 20, nil); got["tomcat1"] != 10 || got["tomcat2"] != 10 {
		t.Fatalf("pages without a session: %v, want round robin over both", got)
	}

	// A login: the answering server sets JSESSIONID, and the user's next
	// 50 requests carrying it go back to that server, which round robin
	// would not do.
	for range 2 {
		resp, err := client.Get(base + "/login.jsp")
		if err != nil {
			t.Fatal(err)
		}
		server, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var session string
		for _, c := range resp.Cookies() {
			if c.Name == "JSESSIONID" {
				session = c.Value
			}
		}
		if !strings.HasPrefix(session, string(server)+"-") {
			t.Fatalf("login answered by %s set JSESSIONID %q", server, session)
		}
		got := served(t, base+"/cart.jsp", 50, map[string]string{"Cookie": "JSESSIONID=" + session})
		if got[string(server)] != 50 {
			t.Fatalf("session %s opened on %s: its 50 requests went to %v", session, server, got)
		}
	}
}

// clientFrom returns an HTTP client whose connections come from ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

func TestClientIPPersistence(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	url := "http://localhost:8094/"
	// A one-second timeout, so the entries' expiry shows in real time.
	caddy := runCaddy(t, "sticky.Caddyfile", map[string]string{
		"127.0.0.1:9771": a.addr, "127.0.0.1:9772": b.addr, `"timeout":600000000000`: `"timeout":1000000000`,
	}, url)

	one := func(c *http.Client, n int) string {
		got := make(map[string]int)
		for range n {
			status, body := request(t, c, url, nil)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			got[body]++
		}
		if len(got) != 1 {
			t.Fatalf("%d requests from one client network went to %v", n, got)
		}
		for name := range got {
			return name
		}
		return ""
	}
	first := one(clientFrom("127.0.0.1"), 200)
	if again := one(clientFrom("127.0.0.2"), 20); again != first {
		t.Fatalf("127.0.0.2 went to %s, 127.0.0.1 to %s: one /24 should share a backend", again, first)
	}
	one(clientFrom("127.0.1.1"), 20) // another /24: sticks too, wherever it went
	if v := caddy.pool(t, "cart"); v.Persistence == nil || v.Persistence.Entries != 2 {
		t.Fatalf("pool cart: %+v; want 2 sticky entries, one a /24", v.Persistence)
	}
	// Prometheus sees them too.
	_, metrics := caddy.call(t, http.MethodGet, "/metrics", "", nil)
	sessions := 0
	for line := range strings.Lines(metrics) {
		if strings.HasPrefix(line, `sluice_sticky_sessions{`) && strings.Contains(line, `pool="cart"`) {
			var n int
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &n)
			sessions += n
		}
	}
	if sessions != 2 {
		t.Fatalf("sluice_sticky_sessions for pool cart sum to %d, want 2:\n%s", sessions, metrics)
	}
	wait.Until(t, "idle entries to expire after their 1s timeout", 10*time.Second, func() bool {
		return caddy.pool(t, "cart").Persistence.Entries == 0
	})
}

// stickyKeys sends one request for each of n API keys and returns where
// each went.
func stickyKeys(t *testing.T, url, prefix string, n int) map[string]string {
	t.Helper()
	where := make(map[string]string)
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		status, body := request(t, client, url, map[string]string{"X-Api-Key": key})
		if status != http.StatusOK {
			t.Fatalf("key %s: %d %s", key, status, body)
		}
		where[key] = body
	}
	return where
}

func keyOn(where map[string]string, backend string) string {
	for k, b := range where {
		if b == backend {
			return k
		}
	}
	return ""
}

// apiPool is sticky.Caddyfile's api pool (sticky by X-Api-Key) running
// on backends a and b, with a client key already bound to a.
type apiPool struct {
	a, b    *backend
	url     string
	replace map[string]string
	cfg     map[string]any
	caddy   *caddyProc
	ka      string // a client key bound to a
}

// runAPIPool starts an apiPool.
func runAPIPool(t *testing.T) *apiPool {
	t.Helper()
	p := &apiPool{a: startBackend(t, "a"), b: startBackend(t, "b"), url: "http://localhost:8096/"}
	p.replace = map[string]string{"127.0.0.1:9781": p.a.addr, "127.0.0.1:9782": p.b.addr}
	p.cfg = exampleConfig(t, "sticky.Caddyfile", p.replace)
	p.caddy = runConfig(t, p.cfg, p.url)
	if p.ka = keyOn(stickyKeys(t, p.url, "client", 20), "a"); p.ka == "" {
		t.Fatal("no client of 20 went to a")
	}
	return p
}

func TestDrainKeepsStickySessionsUntilItsDeadline(t *testing.T) {
	p := runAPIPool(t)
	a, url, cfg, caddy, ka := p.a, p.url, p.cfg, p.caddy, p.ka
	caddy.act(t, "api", a.addr, "drain", `{"deadline": "6s"}`)
	if got := caddy.pool(t, "api").state(a.addr); got != "draining" {
		t.Fatalf("a is %s after drain", got)
	}
	checkDraining := func(when string) {
		t.Helper()
		for k, to := range stickyKeys(t, url, "new-"+when, 10) {
			if to != "b" {
				t.Fatalf("%s: new client %s went to draining a", when, k)
			}
		}
		if got := served(t, url, 10, map[string]string{"X-Api-Key": ka}); got["a"] != 10 {
			t.Fatalf("%s: a's sticky client went to %v, want a until the deadline", when, got)
		}
	}
	checkDraining("draining")

	// A reload with an edited configuration keeps sticky entries and the
	// drain.
	cfg["apps"].(map[string]any)["sluice"] = map[string]any{"sync_interval": int64(time.Second)}
	caddy.load(t, cfg)
	checkDraining("after reload")

	// Past the deadline a receives nothing, its sticky client included.
	wait.Until(t, "the drain deadline to cut a's sessions", 15*time.Second, func() bool {
		_, body := request(t, client, url, map[string]string{"X-Api-Key": ka})
		return body == "b"
	})
	if got := served(t, url, 10, map[string]string{"X-Api-Key": ka}); got["b"] != 10 {
		t.Fatalf("after the deadline a's former client went to %v", got)
	}
	for k, to := range stickyKeys(t, url, "late", 10) {
		if to != "b" {
			t.Fatalf("after the deadline client %s went to a", k)
		}
	}

	// online restores it.
	caddy.act(t, "api", a.addr, "online", "")
	if keyOn(stickyKeys(t, url, "back", 20), "a") == "" {
		t.Fatal("after online no new client went to a")
	}
}

func TestReloadThatDropsABackendDrainsIt(t *testing.T) {
	p := runAPIPool(t)
	a, b, url, replace, cfg, caddy, ka := p.a, p.b, p.url, p.replace, p.cfg, p.caddy, p.ka

	// The edited configuration drops a from the pool.
	replace["127.0.0.1:9781"] = b.addr
	edited := exampleConfig(t, "sticky.Caddyfile", replace)
	edited["admin"], edited["storage"] = cfg["admin"], cfg["storage"]
	caddy.load(t, edited)
	// The admin routes answer the moment the reload returns: Caddy stops
	// the old configuration after the new one runs, and there must be no
	// moment between the two with no pool to show.
	if v := caddy.pool(t, "api"); v.state(a.addr) != "draining" {
		t.Fatalf("straight after the reload the dropped backend shows as %s, want draining", v.state(a.addr))
	}
	if got := served(t, url, 10, map[string]string{"X-Api-Key": ka}); got["a"] != 10 {
		t.Fatalf("after a reload dropped a, its sticky client went to %v; want a until removal_grace ends", got)
	}
	for k, to := range stickyKeys(t, url, "new", 10) {
		if to != "b" {
			t.Fatalf("new client %s went to the dropped backend", k)
		}
	}
	v := caddy.pool(t, "api")
	if v.state(a.addr) != "draining" {
		t.Fatalf("the dropped backend shows as %s, want draining", v.state(a.addr))
	}
}

func TestStickyCookieSurvivesItsBackendDying(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	url := "http://localhost:8095/"
	cfg := exampleConfig(t, "sticky.Caddyfile", map[string]string{"127.0.0.1:9773": a.addr, "127.0.0.1:9774": b.addr})
	sink := newEventSink()
	hooks := httptest.NewServer(sink)
	t.Cleanup(hooks.Close)
	cfg["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{"sticky_moved"},
		"handlers": []any{map[string]any{"handler": "sluice_webhook", "url": hooks.URL}},
	}}}
	caddy := runConfig(t, cfg, url)

	jar := &cookieJar{}
	browser := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	status, first := request(t, browser, url, nil)
	if status != http.StatusOK || jar.value("lb") == "" {
		t.Fatalf("first request: %d %s, cookie %q", status, first, jar.value("lb"))
	}
	if strings.Contains(jar.value("lb"), "127.0.0.1") {
		t.Fatalf("the sticky cookie %q reveals the backend's address", jar.value("lb"))
	}
	for range 20 {
		if _, body := request(t, browser, url, nil); body != first {
			t.Fatalf("the session began on %s, then went to %s", first, body)
		}
	}
	// The sticky backend dies mid-session: retries carry the next
	// requests to the other, and no response is an error.
	map[string]*backend{"a": a, "b": b}[first].stop()
	var other string
	for range 20 {
		status, body := request(t, browser, url, nil)
		if status != http.StatusOK {
			t.Fatalf("after %s died: %d %s", first, status, body)
		}
		if body == first || other != "" && body != other {
			t.Fatalf("after %s died the session went to %s, then %s", first, other, body)
		}
		other = body
	}

	// One event says the session moved, and why.
	dead := map[string]*backend{"a": a, "b": b}[first].addr
	sink.waitUntil(t, "a sticky_moved webhook", 10*time.Second, func() bool { return sink.hooksFor("sticky_moved", dead) > 0 })
	sink.mu.Lock()
	for _, h := range sink.hooks {
		if data, _ := h["data"].(map[string]any); h["reason"] != "failed" || data["sessions"] != 1.0 {
			t.Errorf("sticky_moved webhook %v: want one session moved because its backend failed", h)
		}
	}
	sink.mu.Unlock()

	// A forged cookie is ignored: a new session, a new cookie, no error.
	forged := map[string]string{"Cookie": "lb=AQAAAAAAAAAqAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
	if got := served(t, url, 5, forged); got[other] != 5 {
		t.Fatalf("forged cookies went to %v", got)
	}
	if v := caddy.pool(t, "web"); v.Persistence == nil || v.Persistence.BadCookies < 5 {
		t.Fatalf("pool web: %+v; want the forged cookies counted", v.Persistence)
	}
}

// cookieJar keeps a browser's cookies, whatever their domain.
type cookieJar struct{ cookies []*http.Cookie }

func (j *cookieJar) SetCookies(_ *neturl.URL, cs []*http.Cookie) {
	for _, c := range cs {
		kept := j.cookies[:0]
		for _, old := range j.cookies {
			if old.Name != c.Name {
				kept = append(kept, old)
			}
		}
		j.cookies = append(kept, c)
	}
}
func (j *cookieJar) Cookies(*neturl.URL) []*http.Cookie { return j.cookies }
func (j *cookieJar) value(name string) string {
	for _, c := range j.cookies {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// sharedConfig is one Caddy of a cluster sharing storage: pool web, two
// backends.
func sharedConfig(t *testing.T, storage, a, b string) (map[string]any, string) {
	listen := freePort(t)
	var cfg map[string]any
	err := json.Unmarshal(fmt.Appendf(nil, `{
		"admin": {"listen": %q},
		"storage": {"module": "file_system", "root": %q},
		"logging": {"logs": {"default": {"level": "ERROR"}}},
		"apps": {
			"sluice": {"sync_interval": 200000000},
			"http": {"servers": {"lb": {
				"listen": [%q],
				"routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": %q}, {"dial": %q}],
					"load_balancing": {"selection_policy": {"policy": "weighted_least_conn", "pool": "web"}}}]}]
			}}}
		}
	}`, freePort(t), storage, listen, a, b), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, "http://" + listen + "/"
}

func TestOperatorDecisionsReachEveryInstanceSharingStorage(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	storage := t.TempDir()
	cfg1, url1 := sharedConfig(t, storage, a.addr, b.addr)
	cfg2, url2 := sharedConfig(t, storage, a.addr, b.addr)
	lb1, lb2 := runConfig(t, cfg1, url1), runConfig(t, cfg2, url2)

	lb1.act(t, "web", a.addr, "offline", "")
	if got := served(t, url1, 10, nil); got["b"] != 10 {
		t.Fatalf("lb1 sent %v after a went offline there", got)
	}
	wait.Until(t, "lb2 to take the offline decision from storage", 10*time.Second, func() bool {
		return lb2.pool(t, "web").state(a.addr) == "offline"
	})
	if got := served(t, url2, 10, nil); got["b"] != 10 {
		t.Fatalf("lb2 sent %v after a went offline on lb1", got)
	}

	lb2.act(t, "web", b.addr, "weight", `{"weight": 4}`)
	wait.Until(t, "lb1 to take lb2's weight", 10*time.Second, func() bool {
		for _, be := range lb1.pool(t, "web").Backends {
			if be.Address == b.addr {
				return be.Weight == 4
			}
		}
		return false
	})

	// A restart comes up with the decisions in force.
	cfg3, url3 := sharedConfig(t, storage, a.addr, b.addr)
	lb3 := runConfig(t, cfg3, url3)
	if got := lb3.pool(t, "web").state(a.addr); got != "offline" {
		t.Fatalf("a restarted instance shows a as %s, want offline", got)
	}
	if got := served(t, url3, 10, nil); got["b"] != 10 {
		t.Fatalf("a restarted instance sent %v", got)
	}
	lb3.act(t, "web", a.addr, "online", "")
	wait.Until(t, "lb1 to take the online decision", 10*time.Second, func() bool {
		return lb1.pool(t, "web").state(a.addr) == "active"
	})

	// Bad calls are refused with a plain reason.
	for _, c := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/sluice/pools/nope/backends/" + a.addr + "/offline", "", 404, `no pool named "nope"`},
		{"POST", "/sluice/pools/web/backends/10.9.9.9:1/offline", "", 404, `pool "web" has no backend "10.9.9.9:1"`},
		{"POST", "/sluice/pools/web/backends/" + a.addr + "/explode", "", 404, `unknown action "explode"`},
		{"GET", "/sluice/pools/web/backends/" + a.addr + "/offline", "", 405, "actions take POST"},
		{"POST", "/sluice/pools/web/backends/" + a.addr + "/drain", `{"deadline": "soon"}`, 400, "body must be JSON"},
		{"POST", "/sluice/pools/web/backends/" + a.addr + "/drain", `{"dedline": "1m"}`, 400, "unknown field"},
		{"POST", "/sluice/pools/web/backends/" + a.addr + "/offline", `{"deadline": "1m"}`, 400, "only drain takes"},
		{"POST", "/sluice/pools/web/backends/" + a.addr + "/weight", `{"weight": -1}`, 400, "weight takes"},
		{"POST", "/sluice/pools/web/backends/" + a.addr + "/weight", ``, 400, "weight takes"},
		{"GET", "/sluice/elsewhere", "", 404, "no such route"},
	} {
		status, raw := lb1.call(t, c.method, c.path, c.body, nil)
		var answer struct{ Error string }
		json.Unmarshal([]byte(raw), &answer)
		if status != c.status || !strings.Contains(answer.Error, c.want) {
			t.Errorf("%s %s %s: %d %s; want %d saying %q", c.method, c.path, c.body, status, raw, c.status, c.want)
		}
	}
	if got := served(t, url1, 10, nil); got["a"]+got["b"] != 10 {
		t.Fatalf("after bad admin calls: %v", got)
	}
}

func TestTLSSitesHaveTheirOwnCertificates(t *testing.T) {
	shop1, shop2, blog := startBackend(t, "shop1"), startBackend(t, "shop2"), startBackend(t, "blog")
	cfg := exampleConfig(t, "tls_sites.Caddyfile", map[string]string{
		"127.0.0.1:9791": shop1.addr, "127.0.0.1:9792": shop2.addr, "127.0.0.1:9793": blog.addr,
	})
	caddy := runConfig(t, cfg, "http://"+cfg["admin"].(map[string]any)["listen"].(string)+"/config/")

	roots := x509.NewCertPool()
	wait.Until(t, "Caddy's internal CA to exist", 30*time.Second, func() bool {
		pem, err := os.ReadFile(filepath.Join(caddy.storage, "pki", "authorities", "local", "root.crt"))
		return err == nil && roots.AppendCertsFromPEM(pem)
	})
	for site, pool := range map[string]string{"shop.localhost": "shop", "blog.localhost": "blog"} {
		tlsConfig := &tls.Config{ServerName: site, RootCAs: roots}
		dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:8443")
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig, DialContext: dial}}
		var body string
		wait.Until(t, site+" to serve with its certificate", 30*time.Second, func() bool {
			resp, err := c.Get("https://" + site + ":8443/")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			body = string(raw)
			cert := resp.TLS.PeerCertificates[0]
			if err := cert.VerifyHostname(site); err != nil {
				t.Fatalf("%s presented a certificate for %v", site, cert.DNSNames)
			}
			return true
		})
		if !strings.HasPrefix(body, pool) {
			t.Fatalf("%s was answered by %s", site, body)
		}
	}
}

func TestVirtualHostsHaveTheirOwnPools(t *testing.T) {
	shop1, shop2, blog := startBackend(t, "shop1"), startBackend(t, "shop2"), startBackend(t, "blog")
	url := "http://127.0.0.1:8093/"
	runCaddy(t, "vhosts.Caddyfile", map[string]string{
		"127.0.0.1:9751": shop1.addr, "127.0.0.1:9752": shop2.addr, "127.0.0.1:9761": blog.addr,
	}, url)
	if got := served(t, url, 20, map[string]string{"Host": "shop.localhost:8093"}); got["shop1"]+got["shop2"] != 20 {
		t.Fatalf("shop.localhost went to %v", got)
	}
	if got := served(t, url, 20, map[string]string{"Host": "blog.localhost:8093"}); got["blog"] != 20 {
		t.Fatalf("blog.localhost went to %v", got)
	}
	if status, _ := request(t, client, url, map[string]string{"Host": "other.localhost:8093"}); status != http.StatusNotFound {
		t.Fatalf("an unknown host got %d, want 404", status)
	}
}

// TestBadTrafficRulesAreRefused: configuration errors that span a site
// name the file and line, or stop caddy run with a plain reason.
func TestBadTrafficRulesAreRefused(t *testing.T) {
	write := func(t *testing.T, cfg string) string {
		path := filepath.Join(t.TempDir(), "bad.Caddyfile")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, c := range []struct{ name, matcher, want string }{
		{"cookie matcher without a name", "cookie", "cookie matcher needs a cookie name"},
		{"unknown cookie format", "cookie profile {\n\t\tfield tier gold\n\t\tformat xml\n\t}", `unknown cookie format \"xml\"`},
		{"field without a value", "cookie profile {\n\t\tfield tier\n\t}", "field takes a field name and one or more values"},
		{"layout without a field", "cookie profile {\n\t\tbase64\n\t}", "describe fields: add a field line"},
		{"unknown matcher option", "cookie profile {\n\t\tfields tier gold\n\t}", `cookie matcher has no option \"fields\"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, "http://localhost:8090 {\n\t@m "+c.matcher+"\n\treverse_proxy @m 127.0.0.1:9001\n}\n")
			out, err := exec.Command(caddyBinary, "adapt", "--config", path, "--validate").CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) || !strings.Contains(string(out), "bad.Caddyfile:") {
				t.Fatalf("want a refusal naming the file, line and %q; got %v:\n%s", c.want, err, out)
			}
		})
	}
	// Errors only the whole configuration shows stop caddy run.
	for _, c := range []struct{ name, site, want string }{
		{"learning without sticky_learn",
			"reverse_proxy 127.0.0.1:9001 {\n\t\tlb_policy sticky learn JSESSIONID\n\t}",
			"lb_policy sticky learn JSESSIONID needs the sticky_learn directive"},
		{"failover to no pool",
			"reverse_proxy 127.0.0.1:9001 {\n\t\tlb_policy fast_response {\n\t\t\tpool web\n\t\t\tfailover spare\n\t\t}\n\t}",
			`pool \"web\" fails over to pool \"spare\", which no reverse_proxy names`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, "{\n\tadmin off\n\tstorage file_system "+t.TempDir()+"\n}\nhttp://localhost:8090 {\n\t"+c.site+"\n}\n")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, caddyBinary, "run", "--config", path).CombinedOutput()
			if err == nil || ctx.Err() != nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("want caddy run to refuse, saying %q; got %v:\n%s", c.want, err, out)
			}
		})
	}
}
