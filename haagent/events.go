package haagent

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/notify"
)

// scriptTimeout bounds a notify script: one that hangs must not hold back
// the next transition's.
const scriptTimeout = 30 * time.Second

// transition is one change of a router's state, told to operators.
type transition struct {
	router   string
	vrid     uint8
	iface    string
	from, to string // MASTER, BACKUP, FAULT, INIT; to is STOP on shutdown
	priority uint8
	why      string
	at       time.Time
	scripts  [][]string
}

// event is the transition as an lbcore/notify event: vrrp_master,
// vrrp_backup, vrrp_fault or vrrp_stop.
func (t transition) event() notify.Event {
	return notify.Event{
		Name:   "vrrp_" + strings.ToLower(t.to),
		Time:   t.at,
		From:   t.from,
		To:     t.to,
		Reason: t.why,
		Data: map[string]any{
			"router":    t.router,
			"vrid":      int(t.vrid),
			"interface": t.iface,
			"priority":  int(t.priority),
		},
	}
}

// notifier runs a router's notify scripts, one at a time in the order of
// its transitions, in the background so that the state machine never
// waits for a script.
type notifier struct {
	log   *zap.Logger
	queue chan transition
	done  chan struct{}
}

func newNotifier(log *zap.Logger) *notifier {
	n := &notifier{log: log, queue: make(chan transition, 64), done: make(chan struct{})}
	go n.loop()
	return n
}

func (n *notifier) loop() {
	defer close(n.done)
	for t := range n.queue {
		for _, s := range t.scripts {
			n.run(t, s)
		}
	}
}

// close runs the queued scripts and returns once they have finished or
// ctx ends.
func (n *notifier) close(ctx context.Context) {
	close(n.queue)
	select {
	case <-n.done:
	case <-ctx.Done():
	}
}

func (n *notifier) submit(t transition) {
	if len(t.scripts) == 0 {
		return
	}
	select {
	case n.queue <- t:
	default:
		n.log.Error("notify scripts queue full: scripts for this transition skipped",
			zap.String("router", t.router), zap.String("state", t.to))
	}
}

// run calls a script as keepalived's notify does: arguments INSTANCE,
// the router's name, the new state and the priority. The environment
// also says it, for scripts that prefer variables.
func (n *notifier) run(t transition, script []string) {
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	args := append(append([]string{}, script[1:]...), "INSTANCE", t.router, t.to, strconv.Itoa(int(t.priority)))
	cmd := exec.CommandContext(ctx, script[0], args...)
	cmd.Env = append(os.Environ(),
		"HAAGENT_ROUTER="+t.router, "HAAGENT_STATE="+t.to, "HAAGENT_FROM="+t.from,
		"HAAGENT_PRIORITY="+strconv.Itoa(int(t.priority)), "HAAGENT_VRID="+strconv.Itoa(int(t.vrid)),
		"HAAGENT_INTERFACE="+t.iface, "HAAGENT_REASON="+t.why)
	out, err := cmd.CombinedOutput()
	if err != nil {
		n.log.Error("notify script failed", zap.String("router", t.router), zap.String("state", t.to),
			zap.Strings("script", script), zap.Error(err), zap.ByteString("output", out))
		return
	}
	n.log.Debug("notify script ran", zap.String("router", t.router), zap.String("state", t.to), zap.Strings("script", script))
}
