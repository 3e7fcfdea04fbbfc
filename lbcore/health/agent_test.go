package health

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseAgentReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line    string
		want    AgentReport
		wantErr string
	}{
		{line: "up 75%", want: AgentReport{AgentUp, 75}},
		{line: "75%", want: AgentReport{AgentUnset, 75}},
		{line: "drain", want: AgentReport{AgentDrain, -1}},
		{line: "down#disk full", want: AgentReport{AgentDown, -1}},
		{line: "ready,50%", want: AgentReport{AgentUp, 50}},
		{line: "UP", want: AgentReport{AgentUp, -1}},
		{line: "Ready", want: AgentReport{AgentUp, -1}},
		{line: "fail", want: AgentReport{AgentDown, -1}},
		{line: "stopped # by operator", want: AgentReport{AgentDown, -1}},
		{line: "MAINT", want: AgentReport{AgentDown, -1}},
		{line: "0%", want: AgentReport{AgentUnset, 0}},
		{line: "256%", want: AgentReport{AgentUnset, 256}},
		{line: "  up ,\t 100% \r\n", want: AgentReport{AgentUp, 100}},
		{line: "up drain", want: AgentReport{AgentDrain, -1}},
		{line: "drain up maint", want: AgentReport{AgentDown, -1}},
		{line: "ready up 10%", want: AgentReport{AgentUp, 10}},
		{line: "up maxconn:30 80%", want: AgentReport{AgentUp, 80}},
		{line: "007%", want: AgentReport{AgentUnset, 7}},
		{line: "", wantErr: "empty agent reply"},
		{line: "   ", wantErr: "empty agent reply"},
		{line: "#just a comment", wantErr: "empty agent reply"},
		{line: "garbage", wantErr: `agent reply has unknown word "garbage"`},
		{line: "up sideways", wantErr: `unknown word "sideways"`},
		{line: "-5%", wantErr: `agent weight "-5%" is negative`},
		{line: "257%", wantErr: `agent weight "257%" is above 256%`},
		{line: "99999999999999999999%", wantErr: "is above 256%"},
		{line: "%", wantErr: `agent weight "%" is not a number`},
		{line: "+5%", wantErr: "is not a number"},
		{line: "5.5%", wantErr: "is not a number"},
		{line: "75", wantErr: `unknown word "75"`},
		{line: "50% 60%", wantErr: `second weight "60%"`},
		{line: "maxconn:10", wantErr: "gives neither state nor weight"},
		{line: "maxconn:x up", wantErr: `unknown word "maxconn:x"`},
		{line: "up\x00", wantErr: "unknown word"},
	}
	for _, tt := range tests {
		got, err := ParseAgentReply(tt.line)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ParseAgentReply(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseAgentReply(%q) = %+v, %v; want error containing %q", tt.line, got, err, tt.wantErr)
		}
	}
}

func FuzzParseAgentReply(f *testing.F) {
	for _, s := range []string{
		"up 75%", "75%", "drain", "down#disk full", "ready,50%", "maint", "stopped",
		"fail#x", "256%", "257%", "-1%", "up maxconn:10", "", " , ", "UP\tDRAIN", "0%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		rep, err := ParseAgentReply(line)
		if err != nil {
			if rep != (AgentReport{}) {
				t.Fatalf("ParseAgentReply(%q) failed with a report %+v", line, rep)
			}
			return // rejecting is fine; panicking is the bug
		}
		if rep.WeightPercent < -1 || rep.WeightPercent > 256 {
			t.Fatalf("ParseAgentReply(%q).WeightPercent = %d, want -1..256", line, rep.WeightPercent)
		}
		switch rep.State {
		case AgentUnset, AgentUp, AgentDrain, AgentDown:
		default:
			t.Fatalf("ParseAgentReply(%q).State = %v, want a known state", line, rep.State)
		}
		if rep.State == AgentUnset && rep.WeightPercent < 0 {
			t.Fatalf("ParseAgentReply(%q) accepted a reply that says nothing", line)
		}
		// What parses must write back and re-parse to the same report.
		again, err := ParseAgentReply(rep.String())
		if err != nil || again != rep {
			t.Fatalf("ParseAgentReply(%q) = %+v, whose String %q re-parses to %+v, %v", line, rep, rep.String(), again, err)
		}
	})
}

// agentServer is an agent that waits for want (if any) and then writes
// reply and hangs up, as HAProxy agents do.
func agentServer(t *testing.T, want, reply string) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		if want != "" {
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != want {
				_, _ = io.WriteString(c, fmt.Sprintf("got %q, want %q\n", got, want))
				return
			}
		}
		_, _ = io.WriteString(c, reply)
	})
}

func TestAgentCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		check     *AgentCheck
		send      string // what the agent waits for
		reply     string
		wantAgent *AgentReport
		wantErr   string
	}{
		{name: "up and weight", check: &AgentCheck{}, reply: "up 75%\n", wantAgent: &AgentReport{AgentUp, 75}},
		{name: "weight only, no newline", check: &AgentCheck{}, reply: "75%", wantAgent: &AgentReport{AgentUnset, 75}},
		{name: "drain with CRLF", check: &AgentCheck{}, reply: "drain\r\n", wantAgent: &AgentReport{AgentDrain, -1}},
		{name: "only the first line counts", check: &AgentCheck{}, reply: "ready\ngarbage\n", wantAgent: &AgentReport{AgentUp, -1}},
		{
			name:      "down fails but reports",
			check:     &AgentCheck{},
			reply:     "down#disk full\n",
			wantAgent: &AgentReport{AgentDown, -1},
			wantErr:   `agent reports down: "down#disk full"`,
		},
		{name: "asked first", check: &AgentCheck{Send: "status\n"}, send: "status\n", reply: "up\n", wantAgent: &AgentReport{AgentUp, -1}},
		{name: "garbage", check: &AgentCheck{}, reply: "hello world\n", wantErr: `agent reply has unknown word "hello"`},
		{name: "silence then close", check: &AgentCheck{}, reply: "", wantErr: "empty agent reply"},
		{name: "too long", check: &AgentCheck{}, reply: strings.Repeat("x", 600) + "\n", wantErr: "agent reply longer than 512 bytes"},
		{name: "too long, no newline", check: &AgentCheck{}, reply: strings.Repeat("x", 513), wantErr: "agent reply longer than 512 bytes"},
		{
			name:      "512 bytes is fine",
			check:     &AgentCheck{},
			reply:     "up" + strings.Repeat(" ", 506) + "50%\n",
			wantAgent: &AgentReport{AgentUp, 50},
		},
		{
			name:      "512 bytes, no newline",
			check:     &AgentCheck{},
			reply:     "up" + strings.Repeat(" ", 507) + "50%",
			wantAgent: &AgentReport{AgentUp, 50},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCheck(t, tt.check, agentServer(t, tt.send, tt.reply), 2*time.Second)
			wantResult(t, r, tt.wantErr)
			switch {
			case tt.wantAgent == nil && r.Agent != nil:
				t.Errorf("Agent = %+v, want nil", *r.Agent)
			case tt.wantAgent != nil && (r.Agent == nil || *r.Agent != *tt.wantAgent):
				t.Errorf("Agent = %v, want %+v", r.Agent, *tt.wantAgent)
			}
		})
	}
}

func TestAgentCheckHTTP(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "up\n") })
	mux.HandleFunc("/agent", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ready,50%\n") })
	mux.HandleFunc("/maint", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "maint # upgrade\n") })
	mux.HandleFunc("/long", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, strings.Repeat("up ", 200)) })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "up", http.StatusInternalServerError) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tests := []struct {
		name      string
		path      string
		wantAgent *AgentReport
		wantErr   string
	}{
		{name: "default path", wantAgent: &AgentReport{AgentUp, -1}},
		{name: "state and weight", path: "/agent", wantAgent: &AgentReport{AgentUp, 50}},
		{name: "path without slash", path: "agent", wantAgent: &AgentReport{AgentUp, 50}},
		{name: "maint", path: "/maint", wantAgent: &AgentReport{AgentDown, -1}, wantErr: "agent reports down"},
		{name: "too long", path: "/long", wantErr: "agent reply longer than 512 bytes"},
		{name: "error status", path: "/broken", wantErr: "status 500 Internal Server Error, want 2xx"},
		{name: "not found", path: "/nope", wantErr: "status 404 Not Found, want 2xx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCheck(t, &AgentCheck{HTTP: true, Path: tt.path}, srv.Listener.Addr().String(), 2*time.Second)
			wantResult(t, r, tt.wantErr)
			switch {
			case tt.wantAgent == nil && r.Agent != nil:
				t.Errorf("Agent = %+v, want nil", *r.Agent)
			case tt.wantAgent != nil && (r.Agent == nil || *r.Agent != *tt.wantAgent):
				t.Errorf("Agent = %v, want %+v", r.Agent, *tt.wantAgent)
			}
		})
	}
}

// Agents usually listen beside the service: Port points the check there
// while the target stays the service's address.
func TestAgentCheckPort(t *testing.T) {
	t.Parallel()
	_, port, _ := net.SplitHostPort(agentServer(t, "", "up 40%\n"))
	var p int
	fmt.Sscan(port, &p)
	r := runCheck(t, &AgentCheck{Port: p}, refusedAddr(t), 2*time.Second)
	wantResult(t, r, "")
	if r.Agent == nil || *r.Agent != (AgentReport{AgentUp, 40}) {
		t.Errorf("Agent = %v, want up 40%%", r.Agent)
	}
}

func TestAgentStateString(t *testing.T) {
	t.Parallel()
	for s, want := range map[AgentState]string{
		AgentUnset: "unset", AgentUp: "up", AgentDrain: "drain", AgentDown: "down", AgentState(9): "AgentState(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("AgentState(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
