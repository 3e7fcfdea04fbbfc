package health

import (
	"strings"
	"testing"
	"time"
)

func TestBannerChecks(t *testing.T) {
	t.Parallel()
	// Long enough that the steps before a deliberate silence finish well
	// inside it on a loaded machine; only the silent cases wait it out.
	const timeout = time.Second
	smtpOK := map[string]string{
		"EHLO": "250-mail.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
		"QUIT": "221 bye\r\n",
	}
	tests := []struct {
		name     string
		check    Checker
		greeting string
		replies  map[string]string
		wantErr  string
		// wantSent are the lines the server must receive, in order.
		wantSent []string
	}{
		{
			name:     "smtp multi-line greeting and EHLO",
			check:    &SMTPCheck{},
			greeting: "220-mail.test ESMTP\r\n220-no UCE\r\n220 ready\r\n",
			replies:  smtpOK,
			wantSent: []string{"EHLO sluice.health", "QUIT"},
		},
		{
			name:     "smtp bare final line",
			check:    &SMTPCheck{Hello: "probe.example"},
			greeting: "220-mail.test\r\n220\r\n",
			replies:  map[string]string{"EHLO": "250\r\n"},
			wantSent: []string{"EHLO probe.example", "QUIT"},
		},
		{
			name:     "smtp busy",
			check:    &SMTPCheck{},
			greeting: "554 busy\r\n",
			wantErr:  `SMTP greeting was "554 busy", want 220`,
			wantSent: []string{"QUIT"},
		},
		{
			name:     "smtp EHLO refused",
			check:    &SMTPCheck{},
			greeting: "220 mail.test\r\n",
			replies:  map[string]string{"EHLO": "502 5.5.1 not implemented\r\n"},
			wantErr:  `SMTP EHLO reply was "502 5.5.1 not implemented", want 250`,
			wantSent: []string{"EHLO sluice.health", "QUIT"},
		},
		{
			name:     "smtp silent after EHLO",
			check:    &SMTPCheck{},
			greeting: "220 mail.test\r\n",
			wantErr:  "read SMTP EHLO reply: timed out after",
		},
		{
			name:     "smtp greeting not a reply",
			check:    &SMTPCheck{},
			greeting: "hello there\r\n",
			wantErr:  `SMTP greeting was "hello there", want 220`,
		},
		{
			name:     "smtp line too long",
			check:    &SMTPCheck{},
			greeting: "220 " + strings.Repeat("x", 5000) + "\r\n",
			wantErr:  "read SMTP greeting: line longer than 4096 bytes",
		},
		{
			name:     "smtp endless reply",
			check:    &SMTPCheck{},
			greeting: strings.Repeat("220-again\r\n", 200),
			wantErr:  "SMTP greeting runs past 100 lines",
		},
		{
			name:     "smtp hangs up mid-line",
			check:    &SMTPCheck{},
			greeting: "220 mail.te",
			replies:  smtpOK,
			wantErr:  "read SMTP greeting: connection closed by peer",
		},
		{
			name:    "smtp EHLO name with line break",
			check:   &SMTPCheck{Hello: "x\r\nRCPT TO:<a@b>"},
			wantErr: "contains a space or line break",
		},
		{
			name:     "pop3",
			check:    &POP3Check{},
			greeting: "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n",
			wantSent: []string{"QUIT"},
		},
		{
			name:     "pop3 refuses",
			check:    &POP3Check{},
			greeting: "-ERR too many connections\r\n",
			wantErr:  `POP3 greeting was "-ERR too many connections", want +OK`,
			wantSent: []string{"QUIT"},
		},
		{
			name:     "pop3 word must end",
			check:    &POP3Check{},
			greeting: "+OKAY\r\n",
			wantErr:  `POP3 greeting was "+OKAY", want +OK`,
		},
		{
			name:     "imap",
			check:    &IMAPCheck{},
			greeting: "* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n",
			wantSent: []string{"a1 LOGOUT"},
		},
		{
			name:     "imap lower case",
			check:    &IMAPCheck{},
			greeting: "* ok ready\r\n",
		},
		{
			name:     "imap preauth",
			check:    &IMAPCheck{},
			greeting: "* PREAUTH IMAP4rev1 server logged in as Smith\r\n",
		},
		{
			name:     "imap bye",
			check:    &IMAPCheck{},
			greeting: "* BYE Autologout; idle for too long\r\n",
			wantErr:  `IMAP greeting was "* BYE Autologout; idle for too long", want * OK or * PREAUTH`,
			wantSent: []string{"a1 LOGOUT"},
		},
		{
			name:     "ftp multi-line with free text",
			check:    &FTPCheck{},
			greeting: "220-Welcome\r\n   to the archive\r\n220-still going\r\n220 ready\r\n",
			wantSent: []string{"QUIT"},
		},
		{
			name:     "ftp too many connections",
			check:    &FTPCheck{},
			greeting: "421 Too many connections\r\n",
			wantErr:  `FTP greeting was "421 Too many connections", want 220`,
		},
		{
			name:     "ftp not ready yet",
			check:    &FTPCheck{},
			greeting: "120 ready in 5 minutes\r\n",
			wantErr:  `FTP greeting was "120 ready in 5 minutes", want 220`,
		},
		{
			name:     "ftp unfinished multi-line",
			check:    &FTPCheck{},
			greeting: "220-Welcome\r\n",
			wantErr:  "read FTP greeting: timed out after",
		},
		{
			name:     "greeting quoted short",
			check:    &FTPCheck{},
			greeting: "500 " + strings.Repeat("y", 200) + "\r\n",
			wantErr:  `FTP greeting was "500 yyyy`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, sent := lineServer(t, tt.greeting, tt.replies)
			r := runCheck(t, tt.check, addr, timeout)
			wantResult(t, r, tt.wantErr)
			for _, want := range tt.wantSent {
				if got := recv(t, sent, "line "+want); got != want {
					t.Errorf("server received %q, want %q", got, want)
				}
			}
		})
	}
}

func TestReplyCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line     string
		code     int
		more, ok bool
	}{
		{"220 ready", 220, false, true},
		{"220-ready", 220, true, true},
		{"220", 220, false, true},
		{"220ready", 0, false, false},
		{"22", 0, false, false},
		{"+OK", 0, false, false},
		{"2x0 ready", 0, false, false},
	}
	for _, tt := range tests {
		code, more, ok := replyCode(tt.line)
		if code != tt.code || more != tt.more || ok != tt.ok {
			t.Errorf("replyCode(%q) = %d, %v, %v; want %d, %v, %v", tt.line, code, more, ok, tt.code, tt.more, tt.ok)
		}
	}
}
