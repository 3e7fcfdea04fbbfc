package health

import (
	"context"
	"errors"
	"math"
	"net"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// A checker under the failure tests below: how to build one, and how its
// protocol begins, which decides what a failing server must look like.
type checkerCase struct {
	name string
	new  func() Checker
	// serverFirst: the server speaks first (a greeting), so a reset can
	// come at once; otherwise it comes after the client's first bytes.
	serverFirst bool
	// connectOnly: the check passes once connected, so silence and resets
	// after accept cannot fail it.
	connectOnly bool
	udp         bool
}

var checkerCases = []checkerCase{
	{name: "http", new: func() Checker { return &HTTPCheck{} }},
	{name: "https", new: func() Checker { return &HTTPCheck{TLS: true, InsecureSkipVerify: true} }},
	{name: "tcp", new: func() Checker { return &TCPCheck{} }, connectOnly: true},
	{name: "tls", new: func() Checker { return &TLSCheck{InsecureSkipVerify: true} }},
	{name: "smtp", new: func() Checker { return &SMTPCheck{} }, serverFirst: true},
	{name: "pop3", new: func() Checker { return &POP3Check{} }, serverFirst: true},
	{name: "imap", new: func() Checker { return &IMAPCheck{} }, serverFirst: true},
	{name: "ftp", new: func() Checker { return &FTPCheck{} }, serverFirst: true},
	{name: "dns/udp", new: func() Checker { return &DNSCheck{} }, udp: true},
	{name: "dns/tcp", new: func() Checker { return &DNSCheck{TCP: true} }},
	{name: "agent", new: func() Checker { return &AgentCheck{} }, serverFirst: true},
	{name: "agent/send", new: func() Checker { return &AgentCheck{Send: "status\n"} }},
	{name: "agent/http", new: func() Checker { return &AgentCheck{HTTP: true} }},
}

func TestNames(t *testing.T) {
	want := map[string]string{
		"http": "http", "https": "https", "tcp": "tcp", "tls": "tls", "smtp": "smtp", "pop3": "pop3",
		"imap": "imap", "ftp": "ftp", "dns/udp": "dns", "dns/tcp": "dns",
		"agent": "agent", "agent/send": "agent", "agent/http": "agent",
	}
	for _, tc := range checkerCases {
		if got := tc.new().Name(); got != want[tc.name] {
			t.Errorf("%s: Name() = %q, want %q", tc.name, got, want[tc.name])
		}
	}
}

// A server that accepts and then says nothing must fail the check at its
// deadline, not after.
func TestSilentServerTimesOut(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	for _, tc := range checkerCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var addr string
			if tc.udp {
				addr, _ = silentUDP(t)
			} else {
				addr = serveTCP(t, silent)
			}
			r := runCheck(t, tc.new(), addr, timeout)
			if tc.connectOnly {
				wantResult(t, r, "")
				return
			}
			wantResult(t, r, "timed out after")
			// The message repeats the caller's timeout, less the moments
			// between the caller's WithTimeout and the probe's start,
			// which a loaded test machine can stretch to milliseconds.
			if r.Err != nil && !regexp.MustCompile(`timed out after (2[5-9]0|300)ms$`).MatchString(r.Err.Error()) {
				t.Errorf("Err = %q, want it to end \"timed out after 300ms\"", r.Err)
			}
			if !isTimeoutErr(r.Err) {
				t.Errorf("errors.Is(%q, context.DeadlineExceeded) = false, want true", r.Err)
			}
		})
	}
}

func TestConnectionReset(t *testing.T) {
	t.Parallel()
	for _, tc := range checkerCases {
		if tc.udp {
			continue // no connection to reset
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			handle := resetAfterRead
			if tc.serverFirst || tc.connectOnly {
				handle = resetNow
			}
			r := runCheck(t, tc.new(), serveTCP(t, handle), 2*time.Second)
			if tc.connectOnly && r.Err == nil {
				// Connected before the reset: all a TCP check asks. If the
				// reset wins the race with connect, it fails as below.
				return
			}
			wantResult(t, r, "connection reset by peer")
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range checkerCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := refusedAddr(t)
			if tc.udp {
				addr = refusedUDPAddr(t)
			}
			r := runCheck(t, tc.new(), addr, 2*time.Second)
			wantResult(t, r, "connection refused")
		})
	}
}

// Cancelling the context, with no deadline set, ends a check at once.
func TestCancelEndsCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range checkerCases {
		if tc.connectOnly {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				addr     string
				accepted <-chan struct{}
			)
			if tc.udp {
				addr, accepted = silentUDP(t)
			} else {
				ch := make(chan struct{}, 1)
				addr = serveTCP(t, func(c net.Conn) {
					ch <- struct{}{}
					silent(c)
				})
				accepted = ch
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan Result, 1)
			go func() { done <- tc.new().Check(ctx, addr) }()
			recv(t, accepted, "the check to reach the server")
			cancel()
			r := recv(t, done, "the check to end after cancel")
			wantResult(t, r, "check canceled")
			if !errors.Is(r.Err, context.Canceled) {
				t.Errorf("errors.Is(%q, context.Canceled) = false, want true", r.Err)
			}
		})
	}
}

// Port sends the probe to another port of the target's host.
func TestPortOverride(t *testing.T) {
	t.Parallel()
	_, port, err := net.SplitHostPort(serveTCP(t, silent))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	for _, target := range []string{refusedAddr(t), "127.0.0.1"} {
		r := runCheck(t, &TCPCheck{Port: p}, target, 2*time.Second)
		wantResult(t, r, "")
	}
}

func TestHostPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, target string
		port         int
		want         string
		wantErr      bool
	}{
		{name: "target as is", target: "10.0.0.1:80", want: "10.0.0.1:80"},
		{name: "port replaced", target: "10.0.0.1:80", port: 8080, want: "10.0.0.1:8080"},
		{name: "bare host takes port", target: "backend.example", port: 25, want: "backend.example:25"},
		{name: "IPv6 with port", target: "[2001:db8::1]:80", port: 81, want: "[2001:db8::1]:81"},
		{name: "bare IPv6", target: "2001:db8::1", port: 81, want: "[2001:db8::1]:81"},
		{name: "bracketed bare IPv6", target: "[2001:db8::1]", port: 81, want: "[2001:db8::1]:81"},
		{name: "no port anywhere", target: "10.0.0.1", wantErr: true},
		{name: "port out of range", target: "10.0.0.1:80", port: 70000, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hostPort(tt.target, tt.port)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("hostPort(%q, %d) = %q, %v; want %q, error %v", tt.target, tt.port, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// A context without a deadline gets DefaultTimeout, so that no check can
// hang forever.
func TestNoDeadlineGetsDefault(t *testing.T) {
	t.Parallel()
	p, cancel := startProbe(context.Background())
	defer cancel()
	dl, ok := p.ctx.Deadline()
	if !ok {
		t.Fatal("probe context has no deadline")
	}
	if left := time.Until(dl); left <= DefaultTimeout-time.Second || left > DefaultTimeout {
		t.Errorf("deadline in %v, want about %v", left, DefaultTimeout)
	}
}

func TestDaysToExpiry(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		expiry time.Time
		want   float64
	}{
		{"a day and a half", t0.Add(36 * time.Hour), 1.5},
		{"expired yesterday", t0.Add(-24 * time.Hour), -1},
	}
	for _, tt := range tests {
		if got := (Result{CertExpiry: tt.expiry}).DaysToExpiry(t0); got != tt.want {
			t.Errorf("%s: DaysToExpiry = %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := (Result{}).DaysToExpiry(t0); !math.IsNaN(got) {
		t.Errorf("no certificate: DaysToExpiry = %v, want NaN", got)
	}
}

func TestRoundDuration(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want time.Duration }{
		{1999987342 * time.Nanosecond, 2 * time.Second},
		{299990 * time.Microsecond, 300 * time.Millisecond},
		{1540 * time.Millisecond, 1500 * time.Millisecond},
		{12345 * time.Millisecond, 12 * time.Second},
		{5400 * time.Microsecond, 5 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := roundDuration(tt.in); got != tt.want {
			t.Errorf("roundDuration(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestTCPCheck(t *testing.T) {
	t.Parallel()
	var accepted atomic.Int32
	addr := serveTCP(t, func(c net.Conn) { accepted.Add(1) })
	r := runCheck(t, &TCPCheck{}, addr, 2*time.Second)
	wantResult(t, r, "")
	r = runCheck(t, &TCPCheck{}, "127.0.0.1", 2*time.Second)
	wantResult(t, r, `target "127.0.0.1" is not host:port`)
}
