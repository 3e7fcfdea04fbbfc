package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hookRequest is what a test receiver saw of one request.
type hookRequest struct {
	method, contentType, auth, signature, delivery string
	body                                           []byte
}

// hookReceiver is a real HTTP server that answers attempt n (from 0) with
// status(n); status 0 drops the connection instead of answering. It records
// every attempt and each delivery it accepted with a 2xx.
type hookReceiver struct {
	srv       *httptest.Server
	status    func(attempt int) int
	mu        sync.Mutex
	attempts  []hookRequest
	delivered chan hookRequest
}

// inTurn answers with statuses in turn, the last one repeating.
func inTurn(statuses ...int) func(int) int {
	return func(n int) int { return statuses[min(n, len(statuses)-1)] }
}

func newHookReceiver(t *testing.T, status func(attempt int) int) *hookReceiver {
	t.Helper()
	hr := &hookReceiver{status: status, delivered: make(chan hookRequest, 64)}
	hr.srv = httptest.NewServer(http.HandlerFunc(hr.serve))
	t.Cleanup(hr.srv.Close)
	return hr
}

func (hr *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := hookRequest{
		method: r.Method, contentType: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization"),
		signature: r.Header.Get(signatureHeader), delivery: r.Header.Get(deliveryHeader), body: body,
	}
	hr.mu.Lock()
	n := len(hr.attempts)
	hr.attempts = append(hr.attempts, req)
	hr.mu.Unlock()
	status := hr.status(n)
	switch {
	case status == 0: // a network error as the client sees it
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	case status >= 200 && status < 300:
		hr.delivered <- req
		w.WriteHeader(status)
	default:
		http.Error(w, "receiver says: "+http.StatusText(status), status)
	}
}

func (hr *hookReceiver) attemptCount() int {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	return len(hr.attempts)
}

func TestWebhookRequest(t *testing.T) {
	hr := newHookReceiver(t, inTurn(http.StatusNoContent))
	w := &Webhook{URL: hr.srv.URL + "/hook", Secret: "s3cret", Headers: map[string]string{"Authorization": "Bearer t0ken"}}
	if err := w.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := w.Notify(context.Background(), testEvent()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	req := recv(t, hr.delivered, "webhook delivery")
	if req.method != http.MethodPost {
		t.Errorf("method %s, want POST", req.method)
	}
	if req.contentType != "application/json" {
		t.Errorf("Content-Type %q, want application/json", req.contentType)
	}
	if req.auth != "Bearer t0ken" {
		t.Errorf("Authorization %q, want the configured header", req.auth)
	}
	if req.delivery == "" {
		t.Errorf("no %s header", deliveryHeader)
	}
	// Verify the signature the way a receiver would.
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(req.body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(req.signature), []byte(want)) {
		t.Errorf("%s = %q, want %q", signatureHeader, req.signature, want)
	}

	var got map[string]any
	if err := json.Unmarshal(req.body, &got); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, req.body)
	}
	for k, v := range map[string]any{
		"name": "backend_down", "time": "2025-03-04T05:06:07.123456789Z", "pool": "web", "backend": "10.0.0.5:80",
		"from": "up", "to": "down", "reason": `smtp: greeting was "554 busy", want 220`,
	} {
		if got[k] != v {
			t.Errorf("body[%q] = %v, want %v", k, got[k], v)
		}
	}
	if data, _ := got["data"].(map[string]any); data["check"] != "smtp" {
		t.Errorf("body data = %v, want the event's data", got["data"])
	}
	if len(got) != 8 {
		t.Errorf("body has %d fields, want 8: %s", len(got), req.body)
	}
}

func TestWebhookUnsignedWithoutSecret(t *testing.T) {
	hr := newHookReceiver(t, inTurn(http.StatusOK))
	if err := (&Webhook{URL: hr.srv.URL}).Notify(context.Background(), testEvent()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if req := recv(t, hr.delivered, "webhook delivery"); req.signature != "" {
		t.Errorf("signed without a secret: %q", req.signature)
	}
}

func TestWebhookRetries(t *testing.T) {
	tests := []struct {
		name          string
		retries       int
		statuses      []int
		wantAttempts  int
		wantDelivered int
		wantStatus    int // of the error; 0: no statusError
		wantErr       bool
	}{
		{name: "503 then success", statuses: []int{503, 200}, wantAttempts: 2, wantDelivered: 1},
		{name: "dropped connection then success", statuses: []int{0, 200}, wantAttempts: 2, wantDelivered: 1},
		{name: "400 is not retried", statuses: []int{400, 200}, wantAttempts: 1, wantStatus: 400, wantErr: true},
		{name: "redirect is not followed", statuses: []int{307, 200}, wantAttempts: 1, wantStatus: 307, wantErr: true},
		{name: "5xx until retries run out", retries: 1, statuses: []int{502}, wantAttempts: 2, wantStatus: 502, wantErr: true},
		{name: "negative retries mean none", retries: -1, statuses: []int{503, 200}, wantAttempts: 1, wantStatus: 503, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hr := newHookReceiver(t, inTurn(tt.statuses...))
			w := &Webhook{URL: hr.srv.URL, Retries: tt.retries}
			err := w.Notify(context.Background(), testEvent())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Notify error = %v, want error: %v", err, tt.wantErr)
			}
			var se *statusError
			if tt.wantStatus != 0 && (!errors.As(err, &se) || se.code != tt.wantStatus) {
				t.Errorf("Notify error = %v, want status %d", err, tt.wantStatus)
			}
			if se != nil && se.code >= 400 && !strings.Contains(err.Error(), "receiver says") {
				t.Errorf("error %q does not quote the receiver's answer", err)
			}
			if got := hr.attemptCount(); got != tt.wantAttempts {
				t.Errorf("receiver saw %d attempts, want %d", got, tt.wantAttempts)
			}
			if got := len(hr.delivered); got != tt.wantDelivered {
				t.Errorf("receiver accepted %d deliveries, want %d", got, tt.wantDelivered)
			}
			hr.mu.Lock()
			defer hr.mu.Unlock()
			for _, a := range hr.attempts[1:] {
				if a.delivery != hr.attempts[0].delivery {
					t.Errorf("retry has %s %q, first attempt had %q", deliveryHeader, a.delivery, hr.attempts[0].delivery)
				}
			}
		})
	}
}

// Through a Dispatcher, every Publish is one delivery on the receiver even
// when each first attempt fails.
func TestWebhookOneDeliveryPerPublish(t *testing.T) {
	hr := newHookReceiver(t, func(n int) int { // every event's first attempt fails
		if n%2 == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	d := NewDispatcher(nil, 0, &Webhook{URL: hr.srv.URL})
	const n = 3
	for i := range n {
		e := testEvent()
		e.Backend = fmt.Sprintf("10.0.0.%d:80", i+1)
		d.Publish(e)
	}
	closeDispatcher(t, d)
	for i := range n {
		req := recv(t, hr.delivered, "webhook delivery")
		var e Event
		if err := json.Unmarshal(req.body, &e); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("10.0.0.%d:80", i+1); e.Backend != want {
			t.Errorf("delivery %d is for %s, want %s", i, e.Backend, want)
		}
	}
	none(t, hr.delivered, "extra delivery")
	if got := hr.attemptCount(); got != 2*n {
		t.Errorf("receiver saw %d attempts, want %d", got, 2*n)
	}
	if s := d.Stats(); s != (Stats{Published: n, Delivered: n}) {
		t.Errorf("Stats() = %+v, want %d published and delivered", s, n)
	}
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // hang until the client gives up or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close

	start := time.Now()
	err := (&Webhook{URL: srv.URL, Timeout: 50 * time.Millisecond, Retries: -1}).Notify(context.Background(), testEvent())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Notify error = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > waitFor/2 {
		t.Errorf("Notify took %v with a 50ms timeout", d)
	}
}

// Webhook URLs often hold their token in the path; errors are logged, so
// they must not repeat it.
func TestWebhookErrorsHideURLPath(t *testing.T) {
	hr := newHookReceiver(t, inTurn(http.StatusBadRequest))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close() // nothing listens here any more: connection refused

	for name, u := range map[string]string{"rejected": hr.srv.URL, "unreachable": closed} {
		t.Run(name, func(t *testing.T) {
			err := (&Webhook{URL: u + "/services/T0KEN-s3cret?key=T0KEN-s3cret", Retries: -1}).Notify(context.Background(), testEvent())
			if err == nil {
				t.Fatal("Notify succeeded")
			}
			if strings.Contains(err.Error(), "T0KEN") {
				t.Errorf("error repeats the URL's secret: %v", err)
			}
			if !strings.Contains(err.Error(), u) {
				t.Errorf("error %q does not name %s", err, u)
			}
		})
	}
}

func TestWebhookValidate(t *testing.T) {
	tests := []struct {
		name    string
		w       Webhook
		wantErr string // substring; empty: valid
	}{
		{name: "https", w: Webhook{URL: "https://hooks.example.com/sluice"}},
		{name: "http with port and headers", w: Webhook{URL: "http://127.0.0.1:8080/x", Headers: map[string]string{"X-Token": "a b"}}},
		{name: "empty", w: Webhook{}, wantErr: "empty"},
		{name: "relative", w: Webhook{URL: "/hook"}, wantErr: "not absolute"},
		{name: "no host", w: Webhook{URL: "https:///hook"}, wantErr: "no host"},
		{name: "other scheme", w: Webhook{URL: "ftp://example.com/"}, wantErr: `"ftp"`},
		{name: "unparseable", w: Webhook{URL: "https://exa mple.com/%zz"}, wantErr: "does not parse"},
		{name: "negative timeout", w: Webhook{URL: "https://example.com", Timeout: -time.Second}, wantErr: "negative"},
		{name: "bad header name", w: Webhook{URL: "https://example.com", Headers: map[string]string{"X Token": "a"}}, wantErr: "header name"},
		{name: "header injection", w: Webhook{URL: "https://example.com", Headers: map[string]string{"X-Token": "a\r\nX-Evil: 1"}}, wantErr: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.w.Validate()
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
