package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// HTTPCheck passes when the backend answers an HTTP request with an
// expected status and, if ExpectBody is set, a body that matches it.
// Redirects are not followed: the check judges the backend's own answer,
// and a 3xx passes under the default status ranges.
//
// Configure an HTTPCheck before its first Check and leave it unchanged
// afterwards: its transport is built once, from the fields as they are
// then, and reused. It must not be copied after first use.
type HTTPCheck struct {
	// TLS sends the request over HTTPS.
	TLS bool
	// Path is the request's path and query. Default: "/".
	Path string
	// Host is the Host header, for backends that serve by virtual host.
	// Default: the target.
	Host string
	// Method is the request method. Default: GET.
	Method string
	// ExpectStatus lists the status codes that pass. Default: 200-399.
	ExpectStatus []StatusRange
	// ExpectBody, when set, must match the start of the response body.
	ExpectBody *regexp.Regexp
	// MaxBody is how many bytes of the body ExpectBody is matched against,
	// so a huge page costs a bounded read. Default: 64 KiB.
	MaxBody int
	// Headers are added to the request.
	Headers http.Header
	// InsecureSkipVerify accepts any certificate.
	InsecureSkipVerify bool
	// ServerName is sent as SNI and verified against the certificate.
	// Default: Host's name if Host is set, else the target's host.
	ServerName string
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int

	roots  *x509.CertPool // nil: the system's roots; tests set their own CA
	once   sync.Once
	client *http.Client
}

// StatusRange is an inclusive range of HTTP status codes: {200, 299} is
// any 2xx, {204, 204} only 204.
type StatusRange struct {
	Min, Max int
}

// ParseStatusRange reads a status code ("200"), a class ("2xx") or a
// range ("200-399").
func ParseStatusRange(s string) (StatusRange, error) {
	if len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '5' {
		c := int(s[0]-'0') * 100
		return StatusRange{Min: c, Max: c + 99}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
		return StatusRange{}, fmt.Errorf("status %q is not a code (200), a class (2xx) or a range (200-399)", s)
	}
	return StatusRange{Min: a, Max: b}, nil
}

// DefaultMaxBody is HTTPCheck's default MaxBody.
const DefaultMaxBody = 64 << 10

// defaultStatus passes success and redirects: a backend that redirects to
// its login page is up.
var defaultStatus = []StatusRange{{200, 399}}

// Name returns "https" for a TLS check, else "http".
func (c *HTTPCheck) Name() string {
	if c.TLS {
		return "https"
	}
	return "http"
}

// Check sends one request to target on a fresh connection.
func (c *HTTPCheck) Check(ctx context.Context, target string) Result {
	p, cancel := startProbe(ctx)
	defer cancel()
	var res Result
	err := c.check(p, target, &res)
	out := p.result(err)
	out.CertExpiry = res.CertExpiry
	return out
}

func (c *HTTPCheck) check(p *probe, target string, res *Result) error {
	addr, err := hostPort(target, c.Port)
	if err != nil {
		return err
	}
	c.once.Do(c.init)
	scheme := "http"
	if c.TLS {
		scheme = "https"
	}
	path := c.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	method := c.Method
	if method == "" {
		method = http.MethodGet
	}
	u := scheme + "://" + addr + path
	op := method + " " + u
	req, err := http.NewRequestWithContext(p.ctx, method, u, nil)
	if err != nil {
		return &checkError{msg: "bad request " + quote(op) + ": " + err.Error(), cause: err}
	}
	for k, vs := range c.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "sluice-health")
	}
	switch {
	case c.Host != "":
		req.Host = c.Host
	case req.Header.Get("Host") != "":
		req.Host = req.Header.Get("Host") // net/http ignores a Host in Header
	}

	resp, err := c.client.Do(req)
	if err != nil {
		res.CertExpiry = unverifiedExpiry(err)
		return p.fail(op, err)
	}
	defer resp.Body.Close()
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		res.CertExpiry = resp.TLS.PeerCertificates[0].NotAfter
	}
	want := c.ExpectStatus
	if len(want) == 0 {
		want = defaultStatus
	}
	if !inRanges(resp.StatusCode, want) {
		return failf("%s: status %d %s, want %s", op, resp.StatusCode, http.StatusText(resp.StatusCode), formatRanges(want))
	}
	if c.ExpectBody == nil {
		return nil
	}
	limit := c.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)))
	if err != nil {
		return p.fail(op+": read body", err)
	}
	if !c.ExpectBody.Match(body) {
		return failf("%s: body (%d bytes read) does not match %s", op, len(body), quote(c.ExpectBody.String()))
	}
	return nil
}

func (c *HTTPCheck) init() {
	sni := c.ServerName
	if sni == "" && c.Host != "" {
		sni = c.Host
		if h, _, err := net.SplitHostPort(c.Host); err == nil {
			sni = h
		}
	}
	c.client = newHTTPClient(&tls.Config{
		ServerName:         sni,
		InsecureSkipVerify: c.InsecureSkipVerify,
		RootCAs:            c.roots,
	})
}

// newHTTPClient returns a client for probes. Keep-alives are off because a
// health check must open a fresh connection: a pooled one would prove only
// that an old connection still works, not that the backend accepts new
// ones. Redirects are not followed, and proxies from the environment are
// ignored: the check is about this backend, not wherever it points.
func newHTTPClient(tc *tls.Config) *http.Client {
	var d net.Dialer
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            d.DialContext,
			TLSClientConfig:        tc,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 64 << 10, // a backend can't make the prober buffer megabytes
		},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func inRanges(code int, rs []StatusRange) bool {
	for _, r := range rs {
		if code >= r.Min && code <= r.Max {
			return true
		}
	}
	return false
}

// formatRanges writes status ranges as an operator would: "200-399, 404".
func formatRanges(rs []StatusRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(r.Min))
		if r.Max != r.Min {
			fmt.Fprintf(&b, "-%d", r.Max)
		}
	}
	return b.String()
}

// Interface guards
var _ Checker = (*HTTPCheck)(nil)
