package health

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
)

// The banner protocols' checks: each reads the server's greeting, says
// the least that proves the server is serving, and says goodbye. None
// logs in. The reply to the goodbye is not awaited: the verdict is in by
// then, and a server slow to say goodbye must not cost the probe its
// deadline.

// Bounds on what a banner server may send: generous for real greetings
// and EHLO replies, small enough that a broken or hostile server cannot
// make a probe buffer much.
const (
	maxLineLen    = 4096
	maxReplyLines = 100
)

// SMTPCheck passes when an SMTP server greets with 220 and answers EHLO
// with 250 (RFC 5321).
type SMTPCheck struct {
	// Hello is the name sent with EHLO. Default: "sluice.health".
	Hello string
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int
}

// Name returns "smtp".
func (c *SMTPCheck) Name() string { return "smtp" }

// Check greets the SMTP server at target.
func (c *SMTPCheck) Check(ctx context.Context, target string) Result {
	hello := c.Hello
	if hello == "" {
		hello = "sluice.health"
	}
	if strings.ContainsAny(hello, "\r\n ") {
		// It would end the command early and smuggle in another: refuse
		// before connecting.
		p, cancel := startProbe(ctx)
		defer cancel()
		return p.result(failf("EHLO name %s contains a space or line break", quote(hello)))
	}
	return converse(ctx, target, c.Port, "QUIT\r\n", func(s *bannerSession) error {
		if err := s.expectCode("SMTP greeting", 220); err != nil {
			return err
		}
		if err := s.send("EHLO " + hello + "\r\n"); err != nil {
			return err
		}
		return s.expectCode("SMTP EHLO reply", 250)
	})
}

// FTPCheck passes when an FTP server greets with 220 (RFC 959).
type FTPCheck struct {
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int
}

// Name returns "ftp".
func (c *FTPCheck) Name() string { return "ftp" }

// Check reads the greeting of the FTP server at target.
func (c *FTPCheck) Check(ctx context.Context, target string) Result {
	return converse(ctx, target, c.Port, "QUIT\r\n", func(s *bannerSession) error {
		return s.expectCode("FTP greeting", 220)
	})
}

// POP3Check passes when a POP3 server greets with +OK (RFC 1939).
type POP3Check struct {
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int
}

// Name returns "pop3".
func (c *POP3Check) Name() string { return "pop3" }

// Check reads the greeting of the POP3 server at target.
func (c *POP3Check) Check(ctx context.Context, target string) Result {
	return converse(ctx, target, c.Port, "QUIT\r\n", func(s *bannerSession) error {
		return s.expectPrefix("POP3 greeting", "+OK")
	})
}

// IMAPCheck passes when an IMAP server greets with "* OK" (RFC 9051), or
// with "* PREAUTH", which says the server is up and has already
// authenticated the connection; "* BYE" fails.
type IMAPCheck struct {
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int
}

// Name returns "imap".
func (c *IMAPCheck) Name() string { return "imap" }

// Check reads the greeting of the IMAP server at target.
func (c *IMAPCheck) Check(ctx context.Context, target string) Result {
	return converse(ctx, target, c.Port, "a1 LOGOUT\r\n", func(s *bannerSession) error {
		return s.expectPrefix("IMAP greeting", "* OK", "* PREAUTH")
	})
}

// converse is one probe of a banner server: dial target (port, if set,
// replacing its own), talk, then say bye and hang up.
func converse(ctx context.Context, target string, port int, bye string, talk func(*bannerSession) error) Result {
	p, cancel := startProbe(ctx)
	defer cancel()
	s, err := dialBanner(p, target, port)
	if err != nil {
		return p.result(err)
	}
	defer s.close(bye)
	return p.result(talk(s))
}

// bannerSession is a line-oriented conversation with a banner server.
type bannerSession struct {
	p    *probe
	conn net.Conn
	r    *bufio.Reader
}

func dialBanner(p *probe, target string, port int) (*bannerSession, error) {
	addr, err := hostPort(target, port)
	if err != nil {
		return nil, err
	}
	conn, err := p.dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	// The buffer is the line limit: ReadSlice fails on a longer line.
	return &bannerSession{p: p, conn: conn, r: bufio.NewReaderSize(conn, maxLineLen)}, nil
}

// close says goodbye, without waiting for the answer, and hangs up.
func (s *bannerSession) close(bye string) {
	_, _ = io.WriteString(s.conn, bye)
	s.conn.Close()
}

func (s *bannerSession) send(cmd string) error {
	if _, err := io.WriteString(s.conn, cmd); err != nil {
		verb, _, _ := strings.Cut(cmd, " ")
		return s.p.fail("send "+strings.TrimSpace(verb), err)
	}
	return nil
}

// readLine returns the next line without its line ending.
func (s *bannerSession) readLine(what string) (string, error) {
	b, err := s.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", failf("read %s: line longer than %d bytes", what, maxLineLen)
	case err != nil:
		// A partial line before EOF is still a server hanging up mid-reply.
		return "", s.p.fail("read "+what, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// expectCode reads a reply in the numeric form SMTP and FTP share and
// fails unless its code is want. A multi-line reply opens with "220-" and
// ends with a line starting "220 " (or just "220"); the lines in between
// are skipped unread, since FTP lets them say anything.
func (s *bannerSession) expectCode(what string, want int) error {
	first, err := s.readLine(what)
	if err != nil {
		return err
	}
	code, more, ok := replyCode(first)
	if !ok || code != want {
		// Judge on the first line: no need to hear the rest of a refusal.
		return failf("%s was %s, want %d", what, quote(first), want)
	}
	prefix := strconv.Itoa(want)
	for n := 1; more; n++ {
		if n >= maxReplyLines {
			return failf("%s runs past %d lines", what, maxReplyLines)
		}
		line, err := s.readLine(what)
		if err != nil {
			return err
		}
		more = !(line == prefix || strings.HasPrefix(line, prefix+" "))
	}
	return nil
}

// replyCode splits "250-text" into 250 and whether more lines follow.
func replyCode(line string) (code int, more, ok bool) {
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
		return 0, false, false
	}
	if !isDigits(line[:3]) {
		return 0, false, false
	}
	code, _ = strconv.Atoi(line[:3])
	return code, len(line) > 3 && line[3] == '-', true
}

// expectPrefix reads a one-line greeting and fails unless it starts with
// one of want, as a whole word and in any case (IMAP's are
// case-insensitive, and being lenient with POP3 costs nothing).
func (s *bannerSession) expectPrefix(what string, want ...string) error {
	line, err := s.readLine(what)
	if err != nil {
		return err
	}
	for _, w := range want {
		if len(line) >= len(w) && strings.EqualFold(line[:len(w)], w) &&
			(len(line) == len(w) || line[len(w)] == ' ') {
			return nil
		}
	}
	return failf("%s was %s, want %s", what, quote(line), strings.Join(want, " or "))
}

// Interface guards
var (
	_ Checker = (*SMTPCheck)(nil)
	_ Checker = (*FTPCheck)(nil)
	_ Checker = (*POP3Check)(nil)
	_ Checker = (*IMAPCheck)(nil)
)
