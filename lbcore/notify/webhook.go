package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Webhook POSTs each event as JSON to URL.
//
// A delivery is retried on network errors and 5xx answers, which are
// usually passing; a 4xx answer means the receiver rejected the event and
// will do so again, so it is not retried. Retries make delivery
// at-least-once: every attempt for one event carries the same
// X-Sluice-Delivery header, which receivers can use to drop duplicates.
type Webhook struct {
	// URL is the absolute http or https address to POST to.
	URL string
	// Headers are added to every request, e.g. an Authorization token.
	// They cannot replace Content-Type or the signature.
	Headers map[string]string
	// Timeout bounds each attempt. Default: 5s.
	Timeout time.Duration
	// Retries is how many times a failed attempt is repeated, with a short
	// growing pause between attempts. Default (0): 2; negative: none.
	Retries int
	// Secret, when set, signs each request: the header
	// "X-Sluice-Signature: sha256=<hex HMAC-SHA256 of the body>" lets the
	// receiver check that the event came from us. The body carries the
	// event's time, so receivers can also reject stale replays.
	Secret string
	// Client sends the requests. Default: a client that does not follow
	// redirects, since following one would turn the POST into a GET or
	// carry the signature elsewhere; configure the final URL instead.
	Client *http.Client
}

const (
	defaultWebhookTimeout = 5 * time.Second
	defaultWebhookRetries = 2
	// webhookBackoff is the pause before the first retry; it doubles for
	// each further one, up to webhookMaxBackoff. Short, because a webhook worth retrying is usually
	// restarting, and events queue behind this one meanwhile.
	webhookBackoff    = 250 * time.Millisecond
	webhookMaxBackoff = 2 * time.Second
	// signatureHeader carries the body's HMAC when Webhook.Secret is set;
	// deliveryHeader is the same for every attempt at one event.
	signatureHeader = "X-Sluice-Signature"
	deliveryHeader  = "X-Sluice-Delivery"
)

var defaultWebhookClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Validate reports configuration mistakes in plain sentences.
func (w *Webhook) Validate() error {
	if _, err := parseWebhookURL(w.URL); err != nil {
		return err
	}
	if w.Timeout < 0 {
		return fmt.Errorf("webhook timeout %v is negative", w.Timeout)
	}
	return checkHeaders(w.Headers)
}

// Notify POSTs e to the webhook, retrying as described on Webhook.
func (w *Webhook) Notify(ctx context.Context, e Event) error {
	u, err := parseWebhookURL(w.URL)
	if err != nil {
		return err
	}
	if err := checkHeaders(w.Headers); err != nil {
		return err
	}
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode %s event for webhook: %w", e.Name, err)
	}
	// Errors end up in logs, and webhook URLs often carry their token in
	// the path (Slack, Teams…), so errors name only scheme and host.
	where := u.Scheme + "://" + u.Host
	id := rand.Text()
	retries := w.Retries
	if retries == 0 {
		retries = defaultWebhookRetries
	}
	pause := webhookBackoff
	for attempt := 0; ; attempt++ {
		retry, err := w.post(ctx, body, id, where)
		if err == nil {
			return nil
		}
		if attempt > 0 {
			err = fmt.Errorf("%w (attempt %d of %d)", err, attempt+1, retries+1)
		}
		if !retry || attempt >= retries || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w; gave up retrying: %w", err, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, webhookMaxBackoff)
	}
}

// post makes one attempt and says whether a failure is worth retrying.
func (w *Webhook) post(ctx context.Context, body []byte, id, where string) (retry bool, err error) {
	timeout := w.Timeout
	if timeout <= 0 {
		timeout = defaultWebhookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("webhook %s: %w", where, err)
	}
	req.Header.Set("User-Agent", "sluice-notify")
	for k, v := range w.Headers {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = v // net/http ignores a Host entry in req.Header
			continue
		}
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(deliveryHeader, id)
	if w.Secret != "" {
		req.Header.Set(signatureHeader, sign(w.Secret, body))
	}
	client := w.Client
	if client == nil {
		client = defaultWebhookClient
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = where // keep the chain, drop the secret path
			return true, fmt.Errorf("webhook: %w", err)
		}
		return true, fmt.Errorf("webhook %s: %w", where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// Read the rest so the connection can be reused for the next event.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return false, nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	err = &statusError{where: where, status: resp.Status, code: resp.StatusCode, body: printable(snippet)}
	return resp.StatusCode >= 500, err
}

// statusError is a webhook's non-2xx answer.
type statusError struct {
	where, status string
	code          int
	body          string // the start of the answer: receivers often say why
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("webhook %s answered %s", e.where, e.status)
	if e.body != "" {
		s += ": " + e.body
	}
	return s
}

// sign returns the X-Sluice-Signature value for body.
func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func parseWebhookURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("webhook URL is empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the whole URL, token included: say less.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("webhook URL does not parse: %w", err)
	}
	if u.Scheme == "" {
		return nil, errors.New("webhook URL is not absolute: it needs a scheme and host, as in https://hooks.example.com/sluice")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("webhook URL scheme is %q; it must be http or https, as in https://hooks.example.com/sluice", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("webhook URL has no host; it must be absolute, as in https://hooks.example.com/sluice")
	}
	return u, nil
}

// checkHeaders rejects what net/http would refuse at send time, so that a
// typo fails at configuration time instead of on the first outage.
func checkHeaders(h map[string]string) error {
	for k, v := range h {
		if k == "" || strings.IndexFunc(k, func(r rune) bool { return !isTokenChar(r) }) >= 0 {
			return fmt.Errorf("webhook header name %q is not a valid HTTP header name", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("webhook header %s contains a line break or NUL", k)
		}
	}
	return nil
}

// isTokenChar reports whether r may appear in an HTTP header name
// (RFC 9110, section 5.6.2).
func isTokenChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

// printable makes a receiver's answer safe for one log line.
func printable(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// Interface guards
var _ Notifier = (*Webhook)(nil)
