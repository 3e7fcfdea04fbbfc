package health

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fake servers for the checkers' tests. Every one listens on 127.0.0.1:0,
// speaks just enough of its protocol, and is torn down by t.Cleanup, which
// also waits for its goroutines: no test leaves a listener or a goroutine
// behind.

// slack is how long past its timeout a check may take to return.
const slack = 500 * time.Millisecond

// serveTCP runs handle on every connection accepted by a fresh loopback
// listener and returns the listener's address.
func serveTCP(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveListener(t, ln, handle)
}

func serveListener(t *testing.T, ln net.Listener, handle func(net.Conn)) string {
	t.Helper()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close() // unblocks handlers still reading
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// silent accepts and says nothing until the client hangs up.
func silent(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// resetNow aborts the connection at once: SO_LINGER 0 makes Close send RST.
func resetNow(c net.Conn) {
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// resetAfterRead waits for the client's first bytes, then aborts: for
// protocols where the client speaks first, so the reset meets a client
// waiting for its answer.
func resetAfterRead(c net.Conn) {
	var b [1]byte
	_, _ = c.Read(b[:])
	// Unread bytes in the receive buffer would make Close send RST anyway;
	// SetLinger(0) makes it certain.
	resetNow(c)
}

// refusedAddr returns a loopback TCP address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// refusedUDPAddr returns a loopback UDP address where nothing listens: a
// datagram sent there draws an ICMP port unreachable, which a connected
// UDP socket reports as connection refused.
func refusedUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// runCheck runs c against target with timeout and fails the test if the
// check overstays it.
func runCheck(t *testing.T, c Checker, target string, timeout time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	r := c.Check(ctx, target)
	if took := time.Since(start); took > timeout+slack {
		t.Errorf("%s check took %v, want at most %v (timeout %v)", c.Name(), took, timeout+slack, timeout)
	}
	if r.Latency <= 0 {
		t.Errorf("%s check Latency = %v, want > 0", c.Name(), r.Latency)
	}
	return r
}

// wantResult fails the test unless r passed (wantErr == "") or failed with
// an error containing wantErr.
func wantResult(t *testing.T, r Result, wantErr string) {
	t.Helper()
	t.Logf("Err = %v, Latency = %v", r.Err, r.Latency) // shows the messages operators will read, with -v
	switch {
	case wantErr == "" && r.Err != nil:
		t.Errorf("Err = %q, want pass", r.Err)
	case wantErr != "" && r.Err == nil:
		t.Errorf("Err = nil, want failure containing %q", wantErr)
	case wantErr != "" && !strings.Contains(r.Err.Error(), wantErr):
		t.Errorf("Err = %q, want it to contain %q", r.Err, wantErr)
	}
}

// recv waits for a value from ch, failing the test after a deadline.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// lineServer is a banner server: it writes greeting, then answers each
// line it reads with replies[verb] (verb upper-cased, the line's first
// word). A verb with no reply gets silence. After QUIT or LOGOUT it hangs
// up, and a greeting that does not end in a newline is cut off: the server
// hangs up right after it. Every line read is sent on the returned channel.
func lineServer(t *testing.T, greeting string, replies map[string]string) (string, <-chan string) {
	t.Helper()
	lines := make(chan string, 16)
	addr := serveTCP(t, func(c net.Conn) {
		if _, err := io.WriteString(c, greeting); err != nil || !strings.HasSuffix(greeting, "\n") {
			return
		}
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			select {
			case lines <- line:
			default:
			}
			verb, _, _ := strings.Cut(line, " ")
			if verb == "a1" { // IMAP's tagged commands
				verb, _, _ = strings.Cut(strings.TrimPrefix(line, "a1 "), " ")
			}
			verb = strings.ToUpper(verb)
			if reply, ok := replies[verb]; ok {
				if _, err := io.WriteString(c, reply); err != nil {
					return
				}
			}
			if verb == "QUIT" || verb == "LOGOUT" {
				return
			}
		}
	})
	return addr, lines
}

// dnsResponder answers a DNS query; nil means stay silent.
type dnsResponder func(query []byte) []byte

// serveDNS runs respond over UDP and TCP on one loopback port and returns
// the address. Queries received are sent on the returned channel.
func serveDNS(t *testing.T, respond dnsResponder) (string, <-chan []byte) {
	t.Helper()
	queries := make(chan []byte, 16)
	note := func(q []byte) {
		select {
		case queries <- append([]byte(nil), q...):
		default:
		}
	}
	var (
		ln  net.Listener
		pc  net.PacketConn
		err error
	)
	// Ask for any TCP port, then the same UDP port; another process may
	// hold that one, so try a few times.
	for range 20 {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err = net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			break
		}
		ln.Close()
	}
	if err != nil {
		t.Fatalf("no loopback port free for both TCP and UDP: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			note(buf[:n])
			if reply := respond(buf[:n]); reply != nil {
				_, _ = pc.WriteTo(reply, from)
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	addr := serveListener(t, ln, func(c net.Conn) {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		note(q)
		reply := respond(q)
		if reply == nil {
			silent(c)
			return
		}
		msg := binary.BigEndian.AppendUint16(nil, uint16(len(reply)))
		_, _ = c.Write(append(msg, reply...))
	})
	return addr, queries
}

// silentUDP returns the address of a UDP socket that reads and never
// answers. Datagrams received are sent on the returned channel.
func silentUDP(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	got := make(chan struct{}, 16)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case got <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String(), got
}

// newCert makes a self-signed certificate for "backend.test" and 127.0.0.1
// that expires at notAfter. It is its own CA, so a pool holding it
// verifies it.
func newCert(t *testing.T, notAfter time.Time) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	notBefore := time.Now().Add(-time.Hour)
	if notAfter.Before(notBefore) { // an expired certificate was valid once
		notBefore = notAfter.Add(-time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "backend.test"},
		DNSNames:              []string{"backend.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// serveTLS runs a TLS server with cert that completes the handshake and
// then waits for the client to hang up.
func serveTLS(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	return serveTCP(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		silent(tc)
	})
}

// isTimeoutErr reports whether a failed check blames its deadline.
func isTimeoutErr(err error) bool {
	return err != nil && errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "timed out after")
}
