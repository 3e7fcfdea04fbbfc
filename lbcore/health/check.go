package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A Checker probes a backend once. target is host:port. Implementations
// must honour ctx (the caller sets the timeout with context.WithTimeout)
// and never block past its deadline.
//
// A ctx without a deadline still gets one, DefaultTimeout: a probe against
// a backend that accepts and then says nothing must end some time, or it
// would hold its scheduler's goroutine forever.
type Checker interface {
	Check(ctx context.Context, target string) Result
	// Name is a short label for logs and metrics: "http", "https", "tcp", "tls", "smtp", "pop3", "imap", "ftp", "dns", "agent".
	Name() string
}

// DefaultTimeout bounds a probe whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// Result is one probe's outcome.
type Result struct {
	Err     error         // nil when the check passed; else says plainly what was wrong ("SMTP greeting was \"554 busy\", want 220", "connection refused", "timed out after 2s")
	Latency time.Duration // time the probe took
	// Agent checks only: what the backend says of itself.
	Agent *AgentReport
	// TLS and HTTPS checks: when the leaf certificate expires (zero if none).
	CertExpiry time.Time
}

// DaysToExpiry returns how many days after now the leaf certificate
// expires: negative once it has expired. It returns NaN when the probe saw
// no certificate, so a "fewer than 14 days left" alert stays quiet rather
// than firing on a made-up zero.
func (r Result) DaysToExpiry(now time.Time) float64 {
	if r.CertExpiry.IsZero() {
		return math.NaN()
	}
	return r.CertExpiry.Sub(now).Hours() / 24
}

// probe is one check in progress: its context, bounded by a deadline, and
// the moment it started, from which Latency and "timed out after" are told.
type probe struct {
	ctx   context.Context
	start time.Time
}

// startProbe begins a probe, giving ctx DefaultTimeout when it has no
// deadline of its own. The caller must call the returned cancel.
func startProbe(ctx context.Context) (*probe, context.CancelFunc) {
	start := time.Now()
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
	}
	return &probe{ctx: ctx, start: start}, cancel
}

// result closes the probe with its verdict.
func (p *probe) result(err error) Result {
	return Result{Err: err, Latency: time.Since(p.start)}
}

// dial connects to addr and ties the connection to the probe's context: its
// deadline becomes the connection's, and cancellation unblocks any read or
// write at once, so no protocol step can outlive the probe.
func (p *probe) dial(network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(p.ctx, network, addr)
	if err != nil {
		return nil, p.fail("connect "+addr, err)
	}
	if dl, ok := p.ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(p.ctx, func() {
		// A deadline in the past fails pending and future I/O at once.
		_ = c.SetDeadline(time.Unix(1, 0))
	})
	return &probeConn{Conn: c, stop: stop}, nil
}

// probeConn is a connection whose deadline follows a probe's context.
type probeConn struct {
	net.Conn
	stop func() bool
}

func (c *probeConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// fail describes err, met while doing op, in the words an operator reads in
// a log. The original error stays reachable through errors.Is and As, and
// a timeout or a cancellation also matches context.DeadlineExceeded or
// context.Canceled, whichever layer noticed it first.
func (p *probe) fail(op string, err error) error {
	e := &checkError{op: op, cause: err}
	switch {
	case errors.Is(p.ctx.Err(), context.Canceled):
		e.msg = "check canceled"
		e.ctxErr = context.Canceled
	case p.ctx.Err() != nil || isTimeout(err):
		e.msg = "timed out after " + roundDuration(p.timeout()).String()
		e.ctxErr = context.DeadlineExceeded
	default:
		e.msg = plain(err)
	}
	return e
}

// timeout is the time the probe was given: the context's deadline less the
// start. The caller's timeout is what the operator configured, so that is
// what a timeout message should repeat, not the few microseconds more that
// the probe happened to run.
func (p *probe) timeout() time.Duration {
	if dl, ok := p.ctx.Deadline(); ok {
		return dl.Sub(p.start)
	}
	return time.Since(p.start)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// plain says what a network or TLS error means without the layers of
// "dial tcp 127.0.0.1:25: connect:" that Go stacks on it.
func plain(err error) string {
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		opErr   *net.OpError
		urlErr  *url.Error
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, syscall.EPIPE):
		return "connection closed by peer (broken pipe)"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by peer"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &dnsErr):
		return dnsErr.Error()
	case errors.As(err, &certErr):
		return certErr.Err.Error()
	case errors.As(err, &opErr) && opErr.Err != nil:
		return plain(opErr.Err)
	case errors.As(err, &urlErr) && urlErr.Err != nil:
		return plain(urlErr.Err)
	}
	var sysErr *os.SyscallError
	if errors.As(err, &sysErr) {
		return sysErr.Err.Error()
	}
	return err.Error()
}

// checkError is a probe failure: what the probe was doing, what went wrong
// in plain words, and the error underneath, if any.
type checkError struct {
	op     string // "connect 127.0.0.1:25", "read SMTP greeting"; empty when msg says it all
	msg    string
	cause  error
	ctxErr error // context.DeadlineExceeded or context.Canceled when that ended the probe
}

func (e *checkError) Error() string {
	if e.op == "" {
		return e.msg
	}
	return e.op + ": " + e.msg
}

func (e *checkError) Unwrap() []error {
	var errs []error
	if e.ctxErr != nil {
		errs = append(errs, e.ctxErr)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// failf is a protocol failure: the backend answered, but not as it should.
func failf(format string, args ...any) error {
	return &checkError{msg: fmt.Sprintf(format, args...)}
}

// hostPort returns where to probe: target, or target's host on port when
// port is set, so a check can watch another port of the same backend (an
// agent beside the service, a status page on an admin port).
func hostPort(target string, port int) (string, error) {
	if port == 0 {
		if _, _, err := net.SplitHostPort(target); err != nil {
			return "", &checkError{msg: fmt.Sprintf("target %q is not host:port", target), cause: err}
		}
		return target, nil
	}
	if port < 0 || port > 65535 {
		return "", failf("port %d out of range 1-65535", port)
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		// A bare host is fine when the port comes from the check.
		host = strings.TrimSuffix(strings.TrimPrefix(target, "["), "]")
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// roundDuration trims a duration to the precision a person reads: "2s",
// "300ms", "1.5s", not "1.999987342s".
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= 100*time.Millisecond:
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// quote shows a backend's words in an error, cut short so that a chatty
// or hostile backend cannot flood the logs.
func quote(s string) string {
	const limit = 80
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "..."
	}
	return strconv.Quote(s)
}
