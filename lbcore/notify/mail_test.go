package notify

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMailSendsOneMessage(t *testing.T) {
	srv := startSMTP(t, &smtpServer{}, "")
	m := &Mail{Server: srv.addr, From: "Sluice LB <lb@example.com>", To: []string{"ops@example.com", "Oncall <oncall@example.com>"}}
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	e := testEvent()
	if err := m.Notify(context.Background(), e); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	got := recv(t, srv.msgs, "message")
	none(t, srv.msgs, "second message")
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("server saw %d connections, want 1", n)
	}

	if got.from != "lb@example.com" {
		t.Errorf("MAIL FROM %q, want lb@example.com", got.from)
	}
	if want := []string{"ops@example.com", "oncall@example.com"}; !slices.Equal(got.to, want) {
		t.Errorf("RCPT TO %q, want %q", got.to, want)
	}
	if strings.Count(got.data, "\n") != strings.Count(got.data, "\r\n") {
		t.Errorf("message has bare LF line ends:\n%q", got.data)
	}

	msg, err := mail.ReadMessage(strings.NewReader(got.data))
	if err != nil {
		t.Fatalf("message does not parse: %v\n%s", err, got.data)
	}
	h := msg.Header
	for k, want := range map[string]string{
		"Subject":                   "[sluice] backend_down: 10.0.0.5:80 in pool web",
		"From":                      `"Sluice LB" <lb@example.com>`,
		"To":                        `<ops@example.com>, "Oncall" <oncall@example.com>`,
		"Content-Type":              "text/plain; charset=utf-8",
		"Content-Transfer-Encoding": "7bit",
		"MIME-Version":              "1.0",
		"Auto-Submitted":            "auto-generated",
	} {
		if h.Get(k) != want {
			t.Errorf("%s: %q, want %q", k, h.Get(k), want)
		}
	}
	if d, err := h.Date(); err != nil || time.Since(d) > time.Minute {
		t.Errorf("Date: %q (%v), want about now", h.Get("Date"), err)
	}
	if id := h.Get("Message-ID"); !regexp.MustCompile(`^<[A-Z2-7]+@example\.com>$`).MatchString(id) {
		t.Errorf("Message-ID: %q, want <random@example.com>", id)
	}

	body, _ := io.ReadAll(msg.Body)
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	for _, want := range []string{
		"backend_down: 10.0.0.5:80 in pool web\n",
		"Time:    2025-03-04T05:06:07.123456789Z\n",
		"Backend: 10.0.0.5:80\n",
		"From:    up\nTo:      down\n",
		`Reason:  smtp: greeting was "554 busy", want 220` + "\n",
		"  check: smtp\n  fails: 3\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("body lacks %q:\n%s", want, text)
		}
	}
	_, js, ok := strings.Cut(text, "\nAs JSON:\n")
	if !ok {
		t.Fatalf("body has no JSON part:\n%s", text)
	}
	var back Event
	if err := json.Unmarshal([]byte(js), &back); err != nil {
		t.Fatalf("JSON part does not decode: %v\n%s", err, js)
	}
	if back.Name != e.Name || !back.Time.Equal(e.Time) || back.Backend != e.Backend || back.Reason != e.Reason {
		t.Errorf("JSON part decodes to %+v, want %+v", back, e)
	}
}

// Text that is not ASCII is encoded so that it survives any relay.
func TestMailNonASCII(t *testing.T) {
	srv := startSMTP(t, &smtpServer{}, "")
	m := &Mail{Server: srv.addr, From: "lb@example.com", To: []string{"ops@example.com"}}
	e := Event{Name: "pool_failover", Time: time.Now(), Pool: "café", Reason: "Überlast\r\n. next line"}
	if err := m.Notify(context.Background(), e); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	got := recv(t, srv.msgs, "message")
	msg, err := mail.ReadMessage(strings.NewReader(got.data))
	if err != nil {
		t.Fatal(err)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subj != "[sluice] pool_failover: pool café" {
		t.Errorf("Subject decodes to %q (%v)", subj, err)
	}
	if cte := msg.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding %q, want quoted-printable", cte)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	if want := "Reason:  Überlast\r\n. next line\r\n"; !strings.Contains(string(body), want) {
		t.Errorf("body lacks %q:\n%s", want, body)
	}
}

func TestMailRejectsHeaderInjection(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Mail, *Event)
	}{
		{"CRLF in backend", func(_ *Mail, e *Event) { e.Backend = "10.0.0.5:80\r\nBcc: victim@example.com" }},
		{"LF in pool", func(_ *Mail, e *Event) { e.Pool = "web\nBcc: victim@example.com" }},
		{"CR in name", func(_ *Mail, e *Event) { e.Name = "backend_down\rBcc: victim@example.com" }},
		{"CRLF in From", func(m *Mail, _ *Event) { m.From = "lb@example.com\r\nBcc: victim@example.com" }},
		{"CRLF in To", func(m *Mail, _ *Event) { m.To = []string{"ops@example.com\r\nBcc: victim@example.com"} }},
	}
	srv := startSMTP(t, &smtpServer{}, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Mail{Server: srv.addr, From: "lb@example.com", To: []string{"ops@example.com"}}
			e := testEvent()
			tt.mod(m, &e)
			if err := m.Notify(context.Background(), e); !errors.Is(err, errHeaderNewline) {
				t.Errorf("Notify error = %v, want errHeaderNewline", err)
			}
		})
	}
	// Rejected before dialling: the server heard nothing at all.
	if n := srv.conns.Load(); n != 0 {
		t.Errorf("server saw %d connections, want 0", n)
	}
	none(t, srv.msgs, "message")
}

// FuzzCompose checks that no event text can add, remove or reorder the
// headers compose writes.
func FuzzCompose(f *testing.F) {
	f.Add("backend_down", "web", "10.0.0.5:80")
	f.Add("backend_down", "web\r\nBcc: x@example.com", "a")
	f.Add("x\rSubject: y", "", "\n\n")
	f.Add("pool_failover", "café =?utf-8?q?x?=", "[::1]:80")
	from := &mail.Address{Address: "lb@example.com"}
	to := []*mail.Address{{Address: "ops@example.com"}}
	want := []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Auto-Submitted"}
	f.Fuzz(func(t *testing.T, name, pool, backend string) {
		e := Event{Name: name, Pool: pool, Backend: backend, Reason: name + pool + backend}
		msg, err := compose(e, from, to, time.Unix(0, 0), "ID")
		if err != nil {
			if !errors.Is(err, errHeaderNewline) {
				t.Fatalf("compose: %v", err)
			}
			return
		}
		head, _, ok := strings.Cut(string(msg), "\r\n\r\n")
		if !ok {
			t.Fatalf("no end of headers in %q", msg)
		}
		lines := strings.Split(head, "\r\n")
		if len(lines) != len(want) {
			t.Fatalf("%d header lines, want %d: %q", len(lines), len(want), head)
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]+": ") || strings.ContainsAny(l, "\r\n") {
				t.Fatalf("header line %d is %q, want %s", i, l, want[i])
			}
		}
	})
}

func TestMailServerErrors(t *testing.T) {
	tests := []struct {
		name    string
		reply   map[string]string
		wantErr string
	}{
		{"busy greeting", map[string]string{"greeting": "554 busy"}, `greeting: 554 "busy"`},
		{"sender refused", map[string]string{"MAIL": "550 5.7.1 not you"}, `MAIL FROM:<lb@example.com>: 550 "5.7.1 not you"`},
		{"recipient refused", map[string]string{"RCPT": "550 5.1.1 no such user"}, `RCPT TO:<ops@example.com>: 550 "5.1.1 no such user"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startSMTP(t, &smtpServer{reply: tt.reply}, "")
			m := &Mail{Server: srv.addr, From: "lb@example.com", To: []string{"ops@example.com"}}
			err := m.Notify(context.Background(), testEvent())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Notify error = %v, want one containing %q", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), srv.addr) {
				t.Errorf("error %q does not name the server", err)
			}
			none(t, srv.msgs, "message")
		})
	}
}

func TestMailTimeout(t *testing.T) {
	srv := startSMTP(t, &smtpServer{reply: map[string]string{"greeting": "-"}}, "")
	m := &Mail{Server: srv.addr, From: "lb@example.com", To: []string{"ops@example.com"}, Timeout: 50 * time.Millisecond}
	start := time.Now()
	err := m.Notify(context.Background(), testEvent())
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Notify error = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > waitFor/2 {
		t.Errorf("Notify took %v with a 50ms timeout", d)
	}
}

func TestMailCancel(t *testing.T) {
	srv := startSMTP(t, &smtpServer{reply: map[string]string{"greeting": "-"}}, "")
	m := &Mail{Server: srv.addr, From: "lb@example.com", To: []string{"ops@example.com"}, Timeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Notify(ctx, testEvent()) }()
	cancel()
	if err := recv(t, errc, "Notify return after cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("Notify error = %v, want context.Canceled", err)
	}
}

func TestMailAuth(t *testing.T) {
	cert := selfSigned(t)
	starttls := &tls.Config{Certificates: []tls.Certificate{cert}}
	tests := []struct {
		name     string
		ext      []string // EHLO keywords
		starttls bool
		listen   string // listen address; default 127.0.0.1:0
		insecure bool
		wantErr  string // substring; empty: delivered
		wantTLS  bool
	}{
		{name: "plain text to localhost", ext: []string{"AUTH LOGIN PLAIN"}},
		{name: "STARTTLS, certificate accepted", ext: []string{"AUTH PLAIN"}, starttls: true, insecure: true, wantTLS: true},
		{name: "STARTTLS, certificate not trusted", ext: []string{"AUTH PLAIN"}, starttls: true, wantErr: "STARTTLS: tls: failed to verify certificate"},
		{name: "plain text to another host", ext: []string{"AUTH PLAIN"}, listen: "127.0.0.2:0", wantErr: "refusing to send the password to 127.0.0.2 in plain text"},
		{name: "no AUTH offered", wantErr: "does not offer AUTH"},
		{name: "no PLAIN offered", ext: []string{"AUTH CRAM-MD5"}, wantErr: "not PLAIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &smtpServer{ext: tt.ext}
			if tt.starttls {
				srv.tls = starttls
			}
			if err := trySMTP(t, srv, tt.listen); err != nil {
				t.Skipf("Test needs %s on the loopback interface, as Linux has by default: %v", tt.listen, err)
			}
			m := &Mail{Server: srv.addr, From: "lb@example.com", To: []string{"ops@example.com"},
				Username: "sluice", Password: "pa55", InsecureSkipVerify: tt.insecure}
			err := m.Notify(context.Background(), testEvent())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Notify error = %v, want one containing %q", err, tt.wantErr)
				}
				none(t, srv.msgs, "message")
				return
			}
			if err != nil {
				t.Fatalf("Notify: %v", err)
			}
			got := recv(t, srv.msgs, "message")
			if got.auth != "\x00sluice\x00pa55" {
				t.Errorf("AUTH PLAIN carried %q", got.auth)
			}
			if got.tls != tt.wantTLS {
				t.Errorf("message over TLS: %v, want %v", got.tls, tt.wantTLS)
			}
		})
	}
}

// Port 465 means TLS from the first byte (RFC 8314): a client waiting for
// a plain-text greeting there would hang until its timeout.
func TestMailImplicitTLS(t *testing.T) {
	const addr = "127.0.0.1:465"
	srv := &smtpServer{ext: []string{"AUTH PLAIN"}, implicitTLS: true,
		tls: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}}
	if err := trySMTP(t, srv, addr); err != nil {
		t.Skipf("Test needs to listen on %s (root privileges, no mail server there): %v", addr, err)
	}
	m := &Mail{Server: addr, From: "lb@example.com", To: []string{"ops@example.com"},
		Username: "sluice", Password: "pa55", InsecureSkipVerify: true, Timeout: waitFor}
	if err := m.Notify(context.Background(), testEvent()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if got := recv(t, srv.msgs, "message"); !got.tls || got.auth != "\x00sluice\x00pa55" {
		t.Errorf("message over TLS: %v, AUTH %q; want TLS and the login", got.tls, got.auth)
	}
}

func TestMailValidate(t *testing.T) {
	ok := Mail{Server: "smtp.example.com:587", From: "Sluice <lb@example.com>", To: []string{"ops@example.com"}}
	tests := []struct {
		name    string
		mod     func(*Mail)
		wantErr string // substring; empty: valid
	}{
		{"valid", func(*Mail) {}, ""},
		{"IPv6 server with login", func(m *Mail) { m.Server, m.Username, m.Password = "[::1]:25", "u", "p" }, ""},
		{"server without port", func(m *Mail) { m.Server = "smtp.example.com" }, "not host:port"},
		{"server without host", func(m *Mail) { m.Server = ":25" }, "no host"},
		{"server with bad port", func(m *Mail) { m.Server = "smtp.example.com:smtp" }, "no valid port"},
		{"bad sender", func(m *Mail) { m.From = "lb at example.com" }, "mail sender \"lb at example.com\" is not an e-mail address"},
		{"no recipients", func(m *Mail) { m.To = nil }, "no recipients"},
		{"bad recipient", func(m *Mail) { m.To = []string{"ops@example.com", "nobody"} }, "mail recipient \"nobody\" is not"},
		{"password without username", func(m *Mail) { m.Password = "p" }, "both a username and a password"},
		{"negative timeout", func(m *Mail) { m.Timeout = -time.Second }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ok
			m.To = slices.Clone(ok.To)
			tt.mod(&m)
			err := m.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
