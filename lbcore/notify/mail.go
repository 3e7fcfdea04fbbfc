package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Mail sends each event as a plain-text e-mail through an SMTP server, the
// way load-balancing appliances page their administrators. The subject
// reads like "[sluice] backend_down: 10.0.0.5:80 in pool web"; the body has
// the event in plain lines and then as JSON, for filters and scripts.
//
// The connection is upgraded with STARTTLS whenever the server offers it;
// a certificate that does not verify fails the delivery rather than
// falling back to plain text. The password is sent (AUTH PLAIN) only over
// TLS or to localhost.
type Mail struct {
	// Server is the SMTP server as host:port. Port 465 speaks TLS from the
	// first byte (RFC 8314); other ports start in plain text.
	Server string
	// From is the sender, e.g. "Sluice <lb@example.com>".
	From string
	// To are the recipients; at least one.
	To []string
	// Username and Password, when set, log in with AUTH PLAIN.
	Username, Password string
	// Timeout bounds the whole SMTP conversation. Default: 10s.
	Timeout time.Duration
	// InsecureSkipVerify accepts any server certificate, e.g. a relay's
	// self-signed one. The connection is still encrypted.
	InsecureSkipVerify bool
}

const defaultMailTimeout = 10 * time.Second

// errHeaderNewline rejects header values that would let event text (a pool
// or backend name) add headers of its own, such as Bcc.
var errHeaderNewline = errors.New("mail header contains a line break")

// Validate reports configuration mistakes in plain sentences.
func (m *Mail) Validate() error {
	if _, _, err := m.parse(); err != nil {
		return err
	}
	if (m.Username == "") != (m.Password == "") {
		return errors.New("mail needs both a username and a password to log in, or neither")
	}
	if m.Timeout < 0 {
		return fmt.Errorf("mail timeout %v is negative", m.Timeout)
	}
	return nil
}

// parse checks Server, From and To and returns the parsed addresses.
func (m *Mail) parse() (from *mail.Address, to []*mail.Address, err error) {
	host, port, err := net.SplitHostPort(m.Server)
	if err != nil {
		return nil, nil, fmt.Errorf("mail server %q is not host:port, as in smtp.example.com:587", m.Server)
	}
	if host == "" {
		return nil, nil, fmt.Errorf("mail server %q has no host", m.Server)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, nil, fmt.Errorf("mail server %q has no valid port number", m.Server)
	}
	from, err = parseAddress("sender", m.From)
	if err != nil {
		return nil, nil, err
	}
	if len(m.To) == 0 {
		return nil, nil, errors.New("mail has no recipients")
	}
	for _, s := range m.To {
		a, err := parseAddress("recipient", s)
		if err != nil {
			return nil, nil, err
		}
		to = append(to, a)
	}
	return from, to, nil
}

func parseAddress(role, s string) (*mail.Address, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("mail %s %q: %w", role, s, errHeaderNewline)
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("mail %s %q is not an e-mail address: %w", role, s, err)
	}
	return a, nil
}

// Notify sends e as one message to all recipients.
func (m *Mail) Notify(ctx context.Context, e Event) error {
	from, to, err := m.parse()
	if err != nil {
		return err
	}
	// Compose before dialling: a rejected event costs the server nothing.
	msg, err := compose(e, from, to, time.Now(), rand.Text())
	if err != nil {
		return err
	}
	if err := m.send(ctx, from.Address, to, msg); err != nil {
		return fmt.Errorf("mail %s event via %s: %w", e.Name, m.Server, err)
	}
	return nil
}

// send holds one SMTP conversation: greeting, EHLO, STARTTLS, AUTH, MAIL,
// RCPT, DATA, QUIT.
func (m *Mail) send(ctx context.Context, from string, to []*mail.Address, msg []byte) (err error) {
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = defaultMailTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if cerr := ctx.Err(); err != nil && cerr != nil {
			err = fmt.Errorf("%w: %w", cerr, err) // say why the socket gave up
		}
	}()
	host, port, _ := net.SplitHostPort(m.Server) // checked by parse
	tlsConfig := &tls.Config{ServerName: host, InsecureSkipVerify: m.InsecureSkipVerify}

	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", m.Server)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	// net/smtp knows no contexts: the deadline bounds every read and
	// write, and cancelling ctx moves it to the past.
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn := raw
	if port == "465" {
		conn = tls.Client(raw, tlsConfig)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		raw.Close()
		return fmt.Errorf("greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(helloName()); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if _, isTLS := c.TLSConnectionState(); !isTLS {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(tlsConfig); err != nil {
				return fmt.Errorf("STARTTLS: %w", err)
			}
		}
	}
	if m.Username != "" {
		if err := m.auth(c, host); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("MAIL FROM:<%s>: %w", from, err)
	}
	for _, a := range to {
		if err := c.Rcpt(a.Address); err != nil {
			return fmt.Errorf("RCPT TO:<%s>: %w", a.Address, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	// The server has taken the message: a failed QUIT must not make the
	// caller think it was lost.
	_ = c.Quit()
	return nil
}

// auth logs in with PLAIN, but only where the password cannot be read on
// the way: over TLS, or to this host.
func (m *Mail) auth(c *smtp.Client, host string) error {
	if _, isTLS := c.TLSConnectionState(); !isTLS && !isLocalhost(host) {
		return fmt.Errorf("refusing to send the password to %s in plain text: the server did not offer STARTTLS", host)
	}
	ok, mechs := c.Extension("AUTH")
	if !ok {
		return errors.New("a username is configured but the server does not offer AUTH")
	}
	if !slices.Contains(strings.Fields(strings.ToUpper(mechs)), "PLAIN") {
		return fmt.Errorf("the server offers AUTH %s but not PLAIN", mechs)
	}
	if err := c.Auth(smtp.PlainAuth("", m.Username, m.Password, host)); err != nil {
		return fmt.Errorf("AUTH PLAIN: %w", err)
	}
	return nil
}

// isLocalhost matches net/smtp's PlainAuth, which refuses any other
// plain-text server on its own.
func isLocalhost(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// helloName is our name in EHLO. Servers log it and some check it, but a
// wrong one is not fatal, so fall back rather than fail.
func helloName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || strings.ContainsAny(h, " \r\n") {
		return "localhost"
	}
	return h
}

// compose renders e as an RFC 5322 message with CRLF line ends.
func compose(e Event, from *mail.Address, to []*mail.Address, now time.Time, id string) ([]byte, error) {
	subject := "[sluice] " + e.summary()
	if strings.ContainsAny(subject, "\r\n") {
		return nil, fmt.Errorf("subject for %s event: %w", e.Name, errHeaderNewline)
	}
	rcpts := make([]string, len(to))
	for i, a := range to {
		rcpts[i] = a.String()
	}
	domain := "sluice.invalid"
	if i := strings.LastIndexByte(from.Address, '@'); i >= 0 && i+1 < len(from.Address) {
		domain = from.Address[i+1:]
	}
	body, err := mailBody(e)
	if err != nil {
		return nil, err
	}
	// 7bit keeps the message readable in any client's "show source", but
	// SMTP allows it only for ASCII lines of at most 998 bytes.
	encoding := "7bit"
	if !sevenBitSafe(body) {
		encoding = "quoted-printable"
	}

	var b bytes.Buffer
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	header("From", from.String())
	header("To", strings.Join(rcpts, ", "))
	header("Subject", mime.QEncoding.Encode("utf-8", subject)) // unchanged when ASCII
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", "<"+id+"@"+domain+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", encoding)
	// RFC 3834: keeps vacation auto-replies from answering an alert.
	header("Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")
	if encoding == "7bit" {
		b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	} else {
		qp := quotedprintable.NewWriter(&b) // writes line breaks as CRLF
		if _, err := qp.Write([]byte(body)); err != nil {
			return nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// mailBody is the text of the message with "\n" line ends: the event for
// a person, then for a program.
func mailBody(e Event) (string, error) {
	js, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode %s event for mail: %w", e.Name, err)
	}
	// Checker text may hold stray CRs, which SMTP does not allow bare.
	clean := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace
	var b strings.Builder
	b.WriteString(clean(e.summary()) + "\n\n")
	line := func(k, v string) {
		if v != "" {
			b.WriteString(k + clean(v) + "\n")
		}
	}
	line("Event:   ", e.Name)
	line("Time:    ", e.Time.Format(time.RFC3339Nano))
	line("Pool:    ", e.Pool)
	line("Backend: ", e.Backend)
	line("From:    ", e.From)
	line("To:      ", e.To)
	line("Reason:  ", e.Reason)
	if len(e.Data) > 0 {
		b.WriteString("Data:\n")
		for _, k := range slices.Sorted(maps.Keys(e.Data)) {
			line("  "+clean(k)+": ", fmt.Sprint(e.Data[k]))
		}
	}
	b.WriteString("\nAs JSON:\n")
	b.Write(js)
	b.WriteString("\n")
	return b.String(), nil
}

// sevenBitSafe reports whether body can be sent as Content-Transfer-Encoding
// 7bit (RFC 5322 section 2.1.1, RFC 2045 section 2.7).
func sevenBitSafe(body string) bool {
	for l := range strings.SplitSeq(body, "\n") {
		if len(l) > 998 {
			return false
		}
	}
	for i := 0; i < len(body); i++ {
		if body[i] >= utf8.RuneSelf || body[i] == 0 {
			return false
		}
	}
	return true
}

// Interface guards
var _ Notifier = (*Mail)(nil)
