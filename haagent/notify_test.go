package haagent_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicelb/sluice/haagent"
	"github.com/sluicelb/sluice/internal/nstest"
	"github.com/sluicelb/sluice/internal/wait"
	"github.com/sluicelb/sluice/lbcore/notify"
)

// TestNotifications checks that every transition runs the notify script
// with keepalived's arguments and reaches a webhook as an lbcore/notify
// event.
func TestNotifications(t *testing.T) {
	l := newLab(t, "10.99.0.100")
	var mu sync.Mutex
	var events []notify.Event
	serveHTTP(t, l.net.LB1.NS, "127.0.0.1:9090", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e notify.Event
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("webhook body %q: %v", body, err)
		}
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}))
	dir := t.TempDir()
	script := filepath.Join(dir, "notify.sh")
	record := filepath.Join(dir, "calls")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$* $HAAGENT_FROM\" >> "+record+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := "webhook http://127.0.0.1:9090/hook\n" + l.routerConf(150, "notify "+script+" first-arg")
	lb1 := l.haagent(l.net.LB1.NS, conf)
	l.settled("lb1", 5*time.Second)
	lb1.stop()

	want := []string{
		"first-arg INSTANCE web BACKUP 150 INIT",
		"first-arg INSTANCE web MASTER 150 BACKUP",
		"first-arg INSTANCE web STOP 150 MASTER",
	}
	var calls []string
	if !wait.For(3*time.Second, func() bool {
		b, _ := os.ReadFile(record)
		calls = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(calls) >= len(want)
	}) || !slices.Equal(calls, want) {
		t.Errorf("notify script calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	mu.Lock()
	defer mu.Unlock()
	var names []string
	for _, e := range events {
		names = append(names, fmt.Sprintf("%s %s>%s %v", e.Name, e.From, e.To, e.Data["router"]))
	}
	if w := []string{"vrrp_backup INIT>BACKUP web", "vrrp_master BACKUP>MASTER web", "vrrp_stop MASTER>STOP web"}; !slices.Equal(names, w) {
		t.Errorf("webhook events %q, want %q", names, w)
	}
}

// TestExampleConfig loads the shipped example on a host shaped like the
// one it is written for: eth0 on a private network.
func TestExampleConfig(t *testing.T) {
	needRoot(t)
	n, err := nstest.Build(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	var c *haagent.Config
	if err := nstest.In(n.LB1.NS, func() error {
		c, err = haagent.LoadConfig("examples/haagent.conf")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r := c.Routers[0]
	if r.Interface != "eth0" || r.VRID != 51 || len(r.Tracks) != 4 || len(r.Peers) != 2 || len(c.Webhooks) != 1 || len(c.Mails) != 1 {
		t.Errorf("example parsed as %+v", *r)
	}
}
