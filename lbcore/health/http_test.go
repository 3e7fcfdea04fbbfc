package health

import (
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// httpBackend is a backend with a page for each behaviour under test.
func httpBackend() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "all good")
	})
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/down", http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 100<<10) + "NEEDLE"))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "method=%s host=%s probe=%s ua=%s query=%s\n",
			r.Method, r.Host, r.Header.Get("X-Probe"), r.UserAgent(), r.URL.RawQuery)
	})
	mux.HandleFunc("/head-only", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	})
	return mux
}

func TestHTTPCheck(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(httpBackend())
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	tests := []struct {
		name    string
		check   *HTTPCheck
		wantErr string
	}{
		{name: "defaults", check: &HTTPCheck{}},
		{name: "body matches", check: &HTTPCheck{ExpectBody: regexp.MustCompile(`all\s+good`)}},
		{
			name:    "body does not match",
			check:   &HTTPCheck{ExpectBody: regexp.MustCompile(`^ready$`)},
			wantErr: "GET http://" + addr + `/: body (9 bytes read) does not match "^ready$"`,
		},
		{
			name:    "status not wanted",
			check:   &HTTPCheck{Path: "/down"},
			wantErr: "GET http://" + addr + "/down: status 503 Service Unavailable, want 200-399",
		},
		{
			name:  "status wanted",
			check: &HTTPCheck{Path: "/down", ExpectStatus: []StatusRange{{200, 299}, {503, 503}}},
		},
		{name: "redirect passes, not followed", check: &HTTPCheck{Path: "/moved"}},
		{
			name:    "redirect not followed",
			check:   &HTTPCheck{Path: "/moved", ExpectStatus: []StatusRange{{200, 299}, {503, 503}}},
			wantErr: "status 302 Found, want 200-299, 503",
		},
		{
			name:    "needle past MaxBody",
			check:   &HTTPCheck{Path: "/big", ExpectBody: regexp.MustCompile(`NEEDLE`)},
			wantErr: "body (65536 bytes read) does not match",
		},
		{
			name:  "needle within MaxBody",
			check: &HTTPCheck{Path: "/big", ExpectBody: regexp.MustCompile(`NEEDLE`), MaxBody: 200 << 10},
		},
		{
			name: "host, headers, query",
			check: &HTTPCheck{
				Path:       "echo?deep=1",
				Host:       "app.example",
				Headers:    http.Header{"x-probe": {"yes"}},
				ExpectBody: regexp.MustCompile(`^method=GET host=app.example probe=yes ua=sluice-health query=deep=1\n$`),
			},
		},
		{
			name: "own user agent",
			check: &HTTPCheck{
				Path:       "/echo",
				Headers:    http.Header{"User-Agent": {"probe/2"}},
				ExpectBody: regexp.MustCompile(`ua=probe/2 `),
			},
		},
		{name: "method", check: &HTTPCheck{Path: "/head-only", Method: http.MethodHead}},
		{
			name:    "method not allowed",
			check:   &HTTPCheck{Path: "/head-only"},
			wantErr: "status 405 Method Not Allowed, want 200-399",
		},
		{
			name:    "bad method",
			check:   &HTTPCheck{Method: "GET /x"},
			wantErr: "bad request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCheck(t, tt.check, addr, 2*time.Second)
			wantResult(t, r, tt.wantErr)
			if !r.CertExpiry.IsZero() {
				t.Errorf("CertExpiry = %v over plain HTTP, want zero", r.CertExpiry)
			}
		})
	}
}

// Every probe opens its own connection, even though the checker and its
// transport are reused.
func TestHTTPCheckFreshConnections(t *testing.T) {
	t.Parallel()
	var opened atomic.Int32
	srv := httptest.NewUnstartedServer(httpBackend())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := &HTTPCheck{}
	for range 3 {
		wantResult(t, runCheck(t, c, srv.Listener.Addr().String(), 2*time.Second), "")
	}
	if n := opened.Load(); n != 3 {
		t.Errorf("3 checks opened %d connections, want 3", n)
	}
}

// A backend that sends headers, then stalls mid-body: the deadline covers
// the body too.
func TestHTTPCheckStalledBody(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	c := &HTTPCheck{ExpectBody: regexp.MustCompile(`complete`)}
	// A second: ample for the headers to arrive first even on a loaded
	// machine, so the deadline strikes in the body.
	r := runCheck(t, c, srv.Listener.Addr().String(), time.Second)
	wantResult(t, r, "read body: timed out after")
}

func TestHTTPSCheck(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(httpBackend())
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	// httptest's certificate names 127.0.0.1 and example.com.
	tests := []struct {
		name    string
		check   *HTTPCheck
		wantErr string
	}{
		{name: "verified", check: &HTTPCheck{TLS: true, roots: roots}},
		{name: "verified by Host", check: &HTTPCheck{TLS: true, Host: "example.com:443", roots: roots}},
		{name: "verified by server name", check: &HTTPCheck{TLS: true, ServerName: "example.com", roots: roots}},
		{
			name:    "wrong server name",
			check:   &HTTPCheck{TLS: true, ServerName: "other.test", roots: roots},
			wantErr: "not other.test",
		},
		{
			name:    "unknown authority",
			check:   &HTTPCheck{TLS: true},
			wantErr: "GET https://" + addr + "/: x509: certificate signed by unknown authority",
		},
		{name: "skip verify", check: &HTTPCheck{TLS: true, InsecureSkipVerify: true}},
		{
			name:    "status over https",
			check:   &HTTPCheck{TLS: true, Path: "/down", roots: roots},
			wantErr: "status 503",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCheck(t, tt.check, addr, 2*time.Second)
			wantResult(t, r, tt.wantErr)
			if want := srv.Certificate().NotAfter; !r.CertExpiry.Equal(want) {
				t.Errorf("CertExpiry = %v, want %v", r.CertExpiry, want)
			}
		})
	}
}

func TestFormatRanges(t *testing.T) {
	t.Parallel()
	got := formatRanges([]StatusRange{{200, 299}, {304, 304}, {500, 599}})
	if want := "200-299, 304, 500-599"; got != want {
		t.Errorf("formatRanges = %q, want %q", got, want)
	}
}

func TestParseStatusRange(t *testing.T) {
	for in, want := range map[string]StatusRange{"200": {200, 200}, "2xx": {200, 299}, "200-399": {200, 399}, "5xx": {500, 599}} {
		if got, err := ParseStatusRange(in); err != nil || got != want {
			t.Errorf("ParseStatusRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "6xx", "99", "600", "300-200", "2x", "ok", "200-"} {
		if _, err := ParseStatusRange(bad); err == nil || !strings.Contains(err.Error(), "a class (2xx)") {
			t.Errorf("ParseStatusRange(%q) = %v, want an error saying what a status may be", bad, err)
		}
	}
}
