package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"time"
)

// TCPCheck passes when a TCP connection to the backend opens. It proves
// only that something listens: a process that accepts and then hangs
// passes, so prefer a protocol check where the backend speaks one.
type TCPCheck struct {
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int
}

// Name returns "tcp".
func (c *TCPCheck) Name() string { return "tcp" }

// Check connects to target and hangs up.
func (c *TCPCheck) Check(ctx context.Context, target string) Result {
	p, cancel := startProbe(ctx)
	defer cancel()
	addr, err := hostPort(target, c.Port)
	if err != nil {
		return p.result(err)
	}
	conn, err := p.dial("tcp", addr)
	if err != nil {
		return p.result(err)
	}
	conn.Close()
	return p.result(nil)
}

// TLSCheck passes when a TLS handshake with the backend completes and, if
// MinValidity is set, its certificate stays valid at least that long. It
// records the leaf certificate's expiry even when verification fails, so
// an expired certificate shows up in metrics as well as in the error.
type TLSCheck struct {
	// ServerName is sent as SNI and verified against the certificate.
	// Default: the target's host (an IP address is verified against the
	// certificate's IP SANs, and no SNI is sent).
	ServerName string
	// InsecureSkipVerify accepts any certificate: the check then proves
	// only that the backend completes a handshake.
	InsecureSkipVerify bool
	// MinValidity fails the check when the certificate expires sooner than
	// this from now, so a forgotten renewal takes the backend out (or
	// raises the alarm) before clients see an expired certificate. Zero
	// disables it.
	MinValidity time.Duration
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int

	roots *x509.CertPool // nil: the system's roots; tests set their own CA
}

// Name returns "tls".
func (c *TLSCheck) Name() string { return "tls" }

// Check connects to target, completes a TLS handshake and hangs up.
func (c *TLSCheck) Check(ctx context.Context, target string) Result {
	p, cancel := startProbe(ctx)
	defer cancel()
	var res Result
	err := c.check(p, target, &res)
	out := p.result(err)
	out.CertExpiry = res.CertExpiry
	return out
}

func (c *TLSCheck) check(p *probe, target string, res *Result) error {
	addr, err := hostPort(target, c.Port)
	if err != nil {
		return err
	}
	name := c.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(addr)
	}
	conn, err := p.dial("tcp", addr)
	if err != nil {
		return err
	}
	tc := tls.Client(conn, &tls.Config{
		ServerName:         name,
		InsecureSkipVerify: c.InsecureSkipVerify,
		RootCAs:            c.roots,
	})
	defer tc.Close() // sends close_notify; the connection's deadline bounds it
	if err := tc.HandshakeContext(p.ctx); err != nil {
		res.CertExpiry = unverifiedExpiry(err)
		return p.fail("TLS handshake with "+addr, err)
	}
	leaf := tc.ConnectionState().PeerCertificates[0]
	res.CertExpiry = leaf.NotAfter
	return checkValidity(leaf, c.MinValidity, time.Now())
}

// checkValidity fails when leaf expires less than want after now.
func checkValidity(leaf *x509.Certificate, want time.Duration, now time.Time) error {
	if want <= 0 {
		return nil
	}
	left := leaf.NotAfter.Sub(now)
	if left >= want {
		return nil
	}
	when := leaf.NotAfter.UTC().Format(time.RFC3339)
	if left < 0 {
		return failf("certificate for %s expired %s ago (%s)", certName(leaf), roundLeft(-left), when)
	}
	return failf("certificate for %s expires in %s (%s), want at least %s",
		certName(leaf), roundLeft(left), when, want)
}

// certName names a certificate the way an operator looks it up: by its
// first DNS name, else its first IP address, else its common name.
func certName(c *x509.Certificate) string {
	switch {
	case len(c.DNSNames) > 0:
		return quote(c.DNSNames[0])
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	case c.Subject.CommonName != "":
		return quote(c.Subject.CommonName)
	}
	return "(unnamed)"
}

// roundLeft cuts a certificate's remaining life to whole minutes once it
// is past an hour, since nobody renews to the second. It truncates rather
// than rounds, so that a certificate a second short of MinValidity never
// reads as having exactly enough.
func roundLeft(d time.Duration) time.Duration {
	if d >= time.Hour {
		return d.Truncate(time.Minute)
	}
	return d.Truncate(time.Second)
}

// unverifiedExpiry digs the leaf's expiry out of a failed verification, so
// an expired or untrusted certificate still reports when it expires.
func unverifiedExpiry(err error) time.Time {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
		return cve.UnverifiedCertificates[0].NotAfter
	}
	return time.Time{}
}

// Interface guards
var (
	_ Checker = (*TCPCheck)(nil)
	_ Checker = (*TLSCheck)(nil)
)
