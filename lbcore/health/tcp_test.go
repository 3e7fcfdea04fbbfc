package health

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestTLSCheck(t *testing.T) {
	t.Parallel()
	now := time.Now()
	// Certificates are valid to the second; x509 drops the rest.
	fresh, freshRoots := newCert(t, now.Add(2*time.Hour).Truncate(time.Second))
	expired, expiredRoots := newCert(t, now.Add(-time.Hour).Truncate(time.Second))
	freshAddr, expiredAddr := serveTLS(t, fresh), serveTLS(t, expired)

	tests := []struct {
		name       string
		check      *TLSCheck
		addr       string
		wantErr    string
		wantExpiry time.Time
	}{
		{
			name:       "verified",
			check:      &TLSCheck{roots: freshRoots},
			addr:       freshAddr,
			wantExpiry: fresh.Leaf.NotAfter,
		},
		{
			name:       "server name verified",
			check:      &TLSCheck{ServerName: "backend.test", roots: freshRoots},
			addr:       freshAddr,
			wantExpiry: fresh.Leaf.NotAfter,
		},
		{
			name:       "enough validity left",
			check:      &TLSCheck{MinValidity: time.Hour, roots: freshRoots},
			addr:       freshAddr,
			wantExpiry: fresh.Leaf.NotAfter,
		},
		{
			name:       "too little validity left",
			check:      &TLSCheck{MinValidity: 30 * 24 * time.Hour, roots: freshRoots},
			addr:       freshAddr,
			wantErr:    `certificate for "backend.test" expires in 1h59m0s (` + fresh.Leaf.NotAfter.UTC().Format(time.RFC3339) + "), want at least 720h0m0s",
			wantExpiry: fresh.Leaf.NotAfter,
		},
		{
			name:       "unknown authority",
			check:      &TLSCheck{},
			addr:       freshAddr,
			wantErr:    "x509: certificate signed by unknown authority",
			wantExpiry: fresh.Leaf.NotAfter, // still reported
		},
		{
			name:       "skip verify",
			check:      &TLSCheck{InsecureSkipVerify: true},
			addr:       freshAddr,
			wantExpiry: fresh.Leaf.NotAfter,
		},
		{
			name:       "wrong server name",
			check:      &TLSCheck{ServerName: "other.test", roots: freshRoots},
			addr:       freshAddr,
			wantErr:    "certificate is valid for backend.test, not other.test",
			wantExpiry: fresh.Leaf.NotAfter,
		},
		{
			name:       "expired",
			check:      &TLSCheck{roots: expiredRoots},
			addr:       expiredAddr,
			wantErr:    "x509: certificate has expired",
			wantExpiry: expired.Leaf.NotAfter,
		},
		{
			name:       "expired, skip verify",
			check:      &TLSCheck{InsecureSkipVerify: true},
			addr:       expiredAddr,
			wantExpiry: expired.Leaf.NotAfter,
		},
		{
			name:       "expired, skip verify, min validity",
			check:      &TLSCheck{InsecureSkipVerify: true, MinValidity: time.Minute},
			addr:       expiredAddr,
			wantErr:    `certificate for "backend.test" expired 1h0m0s ago`,
			wantExpiry: expired.Leaf.NotAfter,
		},
		{
			name:    "not TLS",
			check:   &TLSCheck{InsecureSkipVerify: true},
			addr:    serveTCP(t, func(c net.Conn) { _, _ = io.WriteString(c, "220 smtp.test ESMTP\r\n"); silent(c) }),
			wantErr: "TLS handshake with 127.0.0.1:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCheck(t, tt.check, tt.addr, 2*time.Second)
			wantResult(t, r, tt.wantErr)
			if !r.CertExpiry.Equal(tt.wantExpiry) {
				t.Errorf("CertExpiry = %v, want %v", r.CertExpiry, tt.wantExpiry)
			}
			var cve *tls.CertificateVerificationError
			if tt.wantErr != "" && errors.As(r.Err, &cve) && len(cve.UnverifiedCertificates) == 0 {
				t.Errorf("verification error lost its certificates")
			}
		})
	}
}

func TestCheckValidity(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotAfter: t0.Add(10 * 24 * time.Hour), DNSNames: []string{"www.example"}}
	tests := []struct {
		name    string
		min     time.Duration
		now     time.Time
		wantErr string
	}{
		{name: "off", now: t0.Add(20 * 24 * time.Hour)},
		{name: "exactly enough", min: 10 * 24 * time.Hour, now: t0},
		{name: "a second short", min: 10 * 24 * time.Hour, now: t0.Add(time.Second),
			wantErr: `certificate for "www.example" expires in 239h59m0s (2030-06-11T12:00:00Z), want at least 240h0m0s`},
		{name: "expired", min: time.Hour, now: t0.Add(11 * 24 * time.Hour),
			wantErr: `certificate for "www.example" expired 24h0m0s ago (2030-06-11T12:00:00Z)`},
	}
	for _, tt := range tests {
		err := checkValidity(leaf, tt.min, tt.now)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: err = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}
