package caddymodules_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/wait"
)

// eventSink receives webhooks and e-mails and counts them by event.
type eventSink struct {
	mu     sync.Mutex
	hooks  []map[string]any
	mails  []string
	change chan struct{}
}

func newEventSink() *eventSink { return &eventSink{change: make(chan struct{}, 100)} }

func (s *eventSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev map[string]any
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.hooks = append(s.hooks, ev)
	s.mu.Unlock()
	s.change <- struct{}{}
}

// hooksFor counts webhooks named name about backend.
func (s *eventSink) hooksFor(name, backend string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, h := range s.hooks {
		if h["name"] == name && h["backend"] == backend {
			n++
		}
	}
	return n
}

func (s *eventSink) mailsAbout(name, backend string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.mails {
		if strings.Contains(m, name) && strings.Contains(m, backend) {
			n++
		}
	}
	return n
}

// waitUntil waits for cond, checking after each delivery, up to timeout;
// on a timeout it reports what explain says, if given.
func (s *eventSink) waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool, explain ...func() string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-s.change:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			detail := ""
			for _, e := range explain {
				detail += "; " + e()
			}
			t.Fatalf("timed out after %v waiting for %s%s", timeout, what, detail)
		}
	}
	return time.Since(start)
}

// summary lists what was delivered, for failure messages.
func (s *eventSink) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var hooks []string
	for _, h := range s.hooks {
		hooks = append(hooks, fmt.Sprintf("%v %v (%v)", h["name"], h["backend"], h["reason"]))
	}
	return fmt.Sprintf("webhooks: %v; %d mails", hooks, len(s.mails))
}

// serveSMTP is a small SMTP server that keeps each message's text.
func (s *eventSink) serveSMTP(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.smtpSession(conn)
		}
	}()
	return ln.Addr().String()
}

func (s *eventSink) smtpSession(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	reply := func(line string) { fmt.Fprintf(conn, "%s\r\n", line) }
	reply("220 sink ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			reply("250 sink")
		case strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RCPT"), strings.HasPrefix(cmd, "RSET"), strings.HasPrefix(cmd, "NOOP"):
			reply("250 ok")
		case cmd == "DATA":
			reply("354 go on")
			var msg strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(l)
			}
			s.mu.Lock()
			s.mails = append(s.mails, msg.String())
			s.mu.Unlock()
			reply("250 queued")
			s.change <- struct{}{}
		case cmd == "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 not here")
		}
	}
}

// TestHealthChecksAndNotifications runs the health example against real
// backends: a backend dead from the start is reported once; killing a
// backend under load fails no client request and takes it out within
// interval × fall; its agent's "up 25%" cuts a backend to a quarter of its
// peers' share; a returning backend is reported up. Every change reaches
// the webhook and the mailbox exactly once.
func TestHealthChecksAndNotifications(t *testing.T) {
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	dead := freePort(t) // nothing listens: down from the start
	sink := newEventSink()
	hook := httptest.NewServer(sink)
	defer hook.Close()
	smtp := sink.serveSMTP(t)
	url := "http://localhost:8087/"
	runCaddy(t, "health.Caddyfile", map[string]string{
		"127.0.0.1:9601": a.addr, "127.0.0.1:9602": b.addr, "127.0.0.1:9603": c.addr, "127.0.0.1:9604": dead,
		"http://127.0.0.1:9690/hooks/lb": hook.URL + "/hooks/lb", "127.0.0.1:9625": smtp,
	}, url)

	sink.waitUntil(t, "the backend dead from the start to be reported", 10*time.Second, func() bool {
		return sink.hooksFor("backend_down", dead) == 1 && sink.mailsAbout("backend_down", dead) == 1
	})

	// Load from four clients while c dies.
	ctx, stopLoad := context.WithCancel(context.Background())
	var failures, sent atomic.Int64
	var load sync.WaitGroup
	for range 4 {
		load.Go(func() {
			for ctx.Err() == nil {
				resp, err := client.Get(url)
				sent.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
				}
			}
		})
	}
	wait.Until(t, "load to build up", 10*time.Second, func() bool { return sent.Load() >= 200 })
	c.stop()
	took := sink.waitUntil(t, "the killed backend to be reported down", 10*time.Second, func() bool {
		return sink.hooksFor("backend_down", c.addr) == 1 && sink.mailsAbout("backend_down", c.addr) == 1
	}, sink.summary)
	stopLoad()
	load.Wait()
	t.Logf("killed backend reported down after %v; %d requests, %d failed", took, sent.Load(), failures.Load())
	if failures.Load() != 0 {
		t.Fatalf("%d of %d client requests failed while a backend died; retries should hide it", failures.Load(), sent.Load())
	}
	// Interval 200ms × fall 2, plus check timeout, jitter and delivery.
	if took > 2*time.Second {
		t.Errorf("killed backend reported down after %v; want about interval × fall", took)
	}

	// a's agent asks for a quarter of its share.
	a.agent.Store("up 25%")
	var got map[string]int
	wait.Until(t, "a's agent weight to take effect", 10*time.Second, func() bool {
		got = count(t, url, 250, 1)
		return got["a"] > 0 && float64(got["a"]) < float64(got["b"])*0.35
	})
	if ratio := float64(got["a"]) / float64(got["b"]); ratio < 0.15 {
		t.Fatalf("agent at 25%%: a got %d to b's %d, want about a quarter", got["a"], got["b"])
	}

	// c returns: reported up once, after rise.
	c.restart(t)
	sink.waitUntil(t, "the returning backend to be reported up", 10*time.Second, func() bool {
		return sink.hooksFor("backend_up", c.addr) == 1 && sink.mailsAbout("backend_up", c.addr) == 1
	})
	if n := sink.hooksFor("backend_down", c.addr); n != 1 {
		t.Fatalf("%d backend_down webhooks for one death", n)
	}
	if n := sink.hooksFor("backend_down", dead); n != 1 {
		t.Fatalf("%d backend_down webhooks for the backend dead from the start", n)
	}
}
