package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// AgentCheck asks an agent running on the backend how the backend is,
// in the words of HAProxy's agent-check, so agents written for HAProxy
// work unchanged. See ParseAgentReply for the reply's grammar.
//
// A reply that parses passes the check, with the agent's words in
// Result.Agent, except a reply whose state is down: that one fails (Err
// says so) and still carries Result.Agent, because a backend that declares
// itself down is down for whoever reads only Err. A reply that does not
// parse fails with Agent nil.
//
// Configure an AgentCheck before its first Check and leave it unchanged
// afterwards; it must not be copied after first use.
type AgentCheck struct {
	// HTTP asks with GET http://target/Path instead of a TCP line.
	HTTP bool
	// Path of the HTTP variant. Default: "/".
	Path string
	// Send is written to the agent before reading its reply, for agents
	// that wait to be asked ("status\n"). Empty sends nothing. TCP only.
	Send string
	// Port, when non-zero, is asked on the target's host instead of the
	// target's own port: agents usually listen beside the service.
	Port int

	once   sync.Once
	client *http.Client
}

// maxAgentReply caps an agent's reply, as HAProxy's buffer does: a status
// line is short, and anything longer is not an agent talking.
const maxAgentReply = 512

var errAgentTooLong = fmt.Errorf("agent reply longer than %d bytes: %w", maxAgentReply, ErrBadAgentReply)

// ErrBadAgentReply is wrapped by a check's error when the agent answered
// but its reply could not be read (garbage, oversized). The agent is
// alive; what it said is worthless. Monitors ignore such rounds and keep
// the backend's last good state.
var ErrBadAgentReply = errors.New("bad agent reply")

// Name returns "agent".
func (c *AgentCheck) Name() string { return "agent" }

// Check asks the agent once.
func (c *AgentCheck) Check(ctx context.Context, target string) Result {
	p, cancel := startProbe(ctx)
	defer cancel()
	line, err := c.ask(p, target)
	if err != nil {
		return p.result(err)
	}
	rep, err := ParseAgentReply(line)
	if err != nil {
		return p.result(&checkError{msg: err.Error(), cause: fmt.Errorf("%w: %w", ErrBadAgentReply, err)})
	}
	res := p.result(nil)
	res.Agent = &rep
	if rep.State == AgentDown {
		res.Err = failf("agent reports down: %s", quote(strings.TrimSpace(line)))
	}
	return res
}

// ask returns the agent's reply line.
func (c *AgentCheck) ask(p *probe, target string) (string, error) {
	addr, err := hostPort(target, c.Port)
	if err != nil {
		return "", err
	}
	if c.HTTP {
		return c.askHTTP(p, addr)
	}
	conn, err := p.dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if c.Send != "" {
		if _, err := io.WriteString(conn, c.Send); err != nil {
			return "", p.fail("send to agent", err)
		}
	}
	// Read to the end of the first line, or to the agent's close: HAProxy
	// agents may write their words and hang up without a newline.
	buf := make([]byte, maxAgentReply+1)
	n := 0
	for {
		m, err := conn.Read(buf[n:])
		if i := bytes.IndexByte(buf[n:n+m], '\n'); i >= 0 {
			return string(buf[:n+i]), nil
		}
		n += m
		if n > maxAgentReply {
			return "", errAgentTooLong
		}
		if errors.Is(err, io.EOF) {
			return string(buf[:n]), nil
		}
		if err != nil {
			return "", p.fail("read agent reply", err)
		}
	}
}

func (c *AgentCheck) askHTTP(p *probe, addr string) (string, error) {
	c.once.Do(func() { c.client = newHTTPClient(nil) })
	path := c.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := "http://" + addr + path
	op := "GET " + u
	req, err := http.NewRequestWithContext(p.ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", &checkError{msg: "bad request " + quote(op) + ": " + err.Error(), cause: err}
	}
	req.Header.Set("User-Agent", "sluice-health")
	resp, err := c.client.Do(req)
	if err != nil {
		return "", p.fail(op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", failf("%s: status %d %s, want 2xx", op, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAgentReply+1))
	if err != nil {
		return "", p.fail(op+": read body", err)
	}
	if len(body) > maxAgentReply {
		return "", errAgentTooLong
	}
	line, _, _ := bytes.Cut(body, []byte("\n")) // the first line speaks, as over TCP
	return string(line), nil
}

// AgentState is what an agent says of its backend's state.
type AgentState int

// The states an agent can report.
const (
	// AgentUnset is a reply that gave a weight but no state.
	AgentUnset AgentState = iota
	// AgentUp is "up" or "ready".
	AgentUp
	// AgentDrain is "drain": finish existing sessions, take no new ones.
	AgentDrain
	// AgentDown is "down", "fail", "stopped" or "maint". ParseAgentReply
	// relies on the states being declared from mildest to gravest.
	AgentDown
)

// String returns "unset", "up", "drain" or "down".
func (s AgentState) String() string {
	switch s {
	case AgentUnset:
		return "unset"
	case AgentUp:
		return "up"
	case AgentDrain:
		return "drain"
	case AgentDown:
		return "down"
	}
	return "AgentState(" + strconv.Itoa(int(s)) + ")"
}

// AgentReport is an agent's reply: a state and/or a weight percentage.
type AgentReport struct {
	State         AgentState // AgentUp, AgentDrain, AgentDown, AgentUnset
	WeightPercent int        // 0..100 (HAProxy allows up to 256%: accept 0..256), -1 when not given
}

// String writes the report back in the agent's grammar: "up 75%",
// "drain", "50%". ParseAgentReply reads it back to the same report.
func (a AgentReport) String() string {
	var words []string
	if a.State != AgentUnset {
		words = append(words, a.State.String())
	}
	if a.WeightPercent >= 0 {
		words = append(words, strconv.Itoa(a.WeightPercent)+"%")
	}
	return strings.Join(words, " ")
}

// maxAgentWeight is HAProxy's ceiling: an agent may ask for up to 256% of
// the configured weight.
const maxAgentWeight = 256

// ParseAgentReply reads one line of an agent's reply, in HAProxy's
// agent-check grammar: words separated by commas or spaces, in any case.
//
//	up, ready                   AgentUp
//	drain                       AgentDrain
//	down, fail, stopped, maint  AgentDown
//	N%                          WeightPercent N, 0 to 256
//	maxconn:N                   accepted and ignored (HAProxy's connection limit)
//	#comment                    ignored, with the rest of the line
//
// Examples: "up 75%", "75%", "drain", "down#disk full", "ready,50%". When
// a reply names several states, the gravest wins ("up drain" drains),
// since HAProxy keeps each of them. An empty reply, an unknown word, a
// second weight, or a weight that is negative or above 256% is an error.
func ParseAgentReply(line string) (AgentReport, error) {
	rep := AgentReport{WeightPercent: -1}
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	words := strings.FieldsFunc(line, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n'
	})
	if len(words) == 0 {
		return AgentReport{}, errors.New("empty agent reply")
	}
	for _, w := range words {
		var st AgentState
		switch strings.ToLower(w) {
		case "up", "ready":
			st = AgentUp
		case "drain":
			st = AgentDrain
		case "down", "fail", "stopped", "maint":
			st = AgentDown
		default:
			if err := parseAgentWord(w, &rep); err != nil {
				return AgentReport{}, err
			}
			continue
		}
		rep.State = max(rep.State, st) // states are declared gravest last
	}
	if rep.State == AgentUnset && rep.WeightPercent < 0 {
		// Only maxconn: the agent said nothing we act on.
		return AgentReport{}, fmt.Errorf("agent reply %s gives neither state nor weight", quote(line))
	}
	return rep, nil
}

// parseAgentWord reads a word that is not a state: a weight or a maxconn.
func parseAgentWord(w string, rep *AgentReport) error {
	if num, ok := strings.CutSuffix(w, "%"); ok {
		if strings.HasPrefix(num, "-") && isDigits(num[1:]) {
			return fmt.Errorf("agent weight %s is negative", quote(w))
		}
		if !isDigits(num) {
			return fmt.Errorf("agent weight %s is not a number", quote(w))
		}
		n, err := strconv.Atoi(num)
		if err != nil || n > maxAgentWeight {
			return fmt.Errorf("agent weight %s is above %d%%", quote(w), maxAgentWeight)
		}
		if rep.WeightPercent >= 0 {
			return fmt.Errorf("agent reply gives a second weight %s", quote(w))
		}
		rep.WeightPercent = n
		return nil
	}
	if len(w) > len("maxconn:") && strings.EqualFold(w[:len("maxconn:")], "maxconn:") && isDigits(w[len("maxconn:"):]) {
		return nil
	}
	return fmt.Errorf("agent reply has unknown word %s", quote(w))
}

// isDigits reports whether s is one or more ASCII digits. strconv.Atoi
// alone would also take "+5" and "-5".
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Interface guards
var _ Checker = (*AgentCheck)(nil)
