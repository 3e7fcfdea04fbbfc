package caddymodules

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"

	"github.com/sluicelb/sluice/lbcore/notify"
)

func init() {
	caddy.RegisterModule(WebhookNotifier{})
	caddy.RegisterModule(MailNotifier{})
	caddy.RegisterModule(LogNotifier{})
}

// notifier is what the event handler modules share: they turn a Caddy
// event into a notification and queue it, so a slow receiver never holds
// up the health checker that emitted the event.
type notifier struct {
	dispatcher *notify.Dispatcher
}

func (n *notifier) start(ctx caddy.Context, to notify.Notifier) {
	n.dispatcher = notify.NewDispatcher(ctx.Logger(), 0, to)
}

// Handle queues the event for delivery.
func (n *notifier) Handle(_ context.Context, e caddy.Event) error {
	ev := notify.Event{Name: e.Name(), Time: e.Timestamp(), Data: map[string]any{}}
	for k, v := range e.Data {
		s := fmt.Sprint(v)
		switch k {
		case "backend":
			ev.Backend = s
		case "pool":
			ev.Pool = s
		case "reason":
			ev.Reason = s
		default:
			ev.Data[k] = v
		}
	}
	if origin := e.Origin(); origin != nil {
		ev.Data["origin"] = string(origin.CaddyModule().ID)
	}
	n.dispatcher.Publish(ev)
	return nil
}

// Cleanup delivers what is queued, for up to five seconds.
func (n *notifier) Cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.dispatcher.Close(ctx)
}

// WebhookNotifier POSTs events as JSON to a URL: Slack-style and
// home-grown receivers alike. With a secret, each body is signed
// (X-Sluice-Signature: sha256=<HMAC>).
type WebhookNotifier struct {
	notifier
	URL     string            `json:"url"`
	Secret  string            `json:"secret,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Time each attempt may take. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Retries on network errors and 5xx. Default: 2.
	Retries int `json:"retries,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (WebhookNotifier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.sluice_webhook", New: func() caddy.Module { return new(WebhookNotifier) }}
}

// Provision sets up the notifier.
func (w *WebhookNotifier) Provision(ctx caddy.Context) error {
	hook := &notify.Webhook{URL: w.URL, Secret: w.Secret, Headers: w.Headers, Timeout: time.Duration(w.Timeout), Retries: w.Retries}
	if err := hook.Validate(); err != nil {
		return err
	}
	w.start(ctx, hook)
	return nil
}

// UnmarshalCaddyfile sets up the notifier from Caddyfile tokens. Syntax:
//
//	sluice_webhook <url> {
//		secret <secret>
//		header <field> <value>
//		timeout <duration>
//		retries <n>
//	}
func (w *WebhookNotifier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume handler name
	if !d.NextArg() {
		return d.Errf("sluice_webhook takes the URL to POST events to")
	}
	w.URL = d.Val()
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		switch {
		case opt == "secret" && len(args) == 1:
			w.Secret = args[0]
		case opt == "header" && len(args) == 2:
			if w.Headers == nil {
				w.Headers = map[string]string{}
			}
			w.Headers[args[0]] = args[1]
		case opt == "timeout" && len(args) == 1:
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("timeout must be a positive duration, not %q", args[0])
			}
			w.Timeout = caddy.Duration(dur)
		case opt == "retries" && len(args) == 1:
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return d.Errf("retries must be a whole number, not %q", args[0])
			}
			w.Retries = n
		default:
			return d.Errf("sluice_webhook: unknown option or wrong arguments: %s %s", opt, strings.Join(args, " "))
		}
	}
	return nil
}

// MailNotifier e-mails events through an SMTP server, as appliances paged
// their administrators.
type MailNotifier struct {
	notifier
	// The SMTP server, host:port.
	Server   string   `json:"server"`
	From     string   `json:"from"`
	To       []string `json:"to"`
	Username string   `json:"username,omitempty"`
	Password string   `json:"password,omitempty"`
	// Time the whole SMTP conversation may take. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (MailNotifier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.sluice_email", New: func() caddy.Module { return new(MailNotifier) }}
}

// Provision sets up the notifier.
func (m *MailNotifier) Provision(ctx caddy.Context) error {
	mail := &notify.Mail{Server: m.Server, From: m.From, To: m.To, Username: m.Username, Password: m.Password, Timeout: time.Duration(m.Timeout)}
	if err := mail.Validate(); err != nil {
		return err
	}
	m.start(ctx, mail)
	return nil
}

// UnmarshalCaddyfile sets up the notifier from Caddyfile tokens. Syntax:
//
//	sluice_email <server:port> {
//		from <address>
//		to <address...>
//		login <username> <password>
//		timeout <duration>
//	}
func (m *MailNotifier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume handler name
	if !d.NextArg() {
		return d.Errf("sluice_email takes the SMTP server's host:port")
	}
	m.Server = d.Val()
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		switch {
		case opt == "from" && len(args) == 1:
			m.From = args[0]
		case opt == "to" && len(args) > 0:
			m.To = append(m.To, args...)
		case opt == "login" && len(args) == 2:
			m.Username, m.Password = args[0], args[1]
		case opt == "timeout" && len(args) == 1:
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("timeout must be a positive duration, not %q", args[0])
			}
			m.Timeout = caddy.Duration(dur)
		default:
			return d.Errf("sluice_email: unknown option or wrong arguments: %s %s", opt, strings.Join(args, " "))
		}
	}
	return nil
}

// LogNotifier writes events as structured log lines, warnings for the
// ones that need attention.
type LogNotifier struct{ notifier }

// CaddyModule returns the Caddy module information.
func (LogNotifier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.sluice_log", New: func() caddy.Module { return new(LogNotifier) }}
}

// Provision sets up the notifier.
func (l *LogNotifier) Provision(ctx caddy.Context) error {
	l.start(ctx, notify.Log{Logger: ctx.Logger()})
	return nil
}

// UnmarshalCaddyfile sets up the notifier from Caddyfile tokens. Syntax:
//
//	sluice_log
func (l *LogNotifier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume handler name
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// Interface guards
var (
	_ caddyevents.Handler   = (*WebhookNotifier)(nil)
	_ caddyevents.Handler   = (*MailNotifier)(nil)
	_ caddyevents.Handler   = (*LogNotifier)(nil)
	_ caddy.CleanerUpper    = (*WebhookNotifier)(nil)
	_ caddyfile.Unmarshaler = (*WebhookNotifier)(nil)
	_ caddyfile.Unmarshaler = (*MailNotifier)(nil)
	_ caddyfile.Unmarshaler = (*LogNotifier)(nil)
)
