package notify

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// smtpServer is a tiny SMTP server speaking enough of RFC 5321 for
// net/smtp: greeting, EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, RSET,
// NOOP and QUIT. It records each message it accepts.
type smtpServer struct {
	addr  string
	msgs  chan smtpMessage
	conns atomic.Int32 // connections accepted

	// ext lists extra EHLO keywords, e.g. "AUTH PLAIN".
	ext []string
	// tls, when set, makes the server offer STARTTLS with this config,
	// or speak TLS from the start when implicitTLS is set.
	tls         *tls.Config
	implicitTLS bool
	// reply overrides the reply to a verb ("MAIL", "RCPT"…) or to
	// "greeting"; a greeting of "-" is silence.
	reply map[string]string
}

// smtpMessage is one accepted message.
type smtpMessage struct {
	from string
	to   []string
	data string // as sent, CRLF line ends kept, dot-stuffing undone
	auth string // decoded AUTH PLAIN response, if any
	tls  bool   // the message (and any AUTH) came over TLS
}

// startSMTP serves s on addr (default: a fresh port on 127.0.0.1) until
// the test ends.
func startSMTP(t *testing.T, s *smtpServer, addr string) *smtpServer {
	t.Helper()
	if err := trySMTP(t, s, addr); err != nil {
		t.Fatal(err)
	}
	return s
}

// trySMTP is startSMTP for addresses that may be unavailable: tests skip,
// rather than fail, when it returns an error.
func trySMTP(t *testing.T, s *smtpServer, addr string) error {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.addr = ln.Addr().String()
	s.msgs = make(chan smtpMessage, 64)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			s.conns.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				s.serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close() // ends a silent or stuck conversation
		}
		mu.Unlock()
		wg.Wait()
	})
	return nil
}

func (s *smtpServer) serve(c net.Conn) {
	isTLS := false
	if s.implicitTLS {
		c, isTLS = tls.Server(c, s.tls), true
	}
	r, w := bufio.NewReader(c), c
	say := func(line string) bool {
		_, err := w.Write([]byte(line + "\r\n"))
		return err == nil
	}
	greeting := s.replyTo("greeting", "220 test.local ESMTP sluice-test")
	if greeting == "-" {
		_, _ = r.ReadByte() // say nothing; wait for the client to go away
		return
	}
	if !say(greeting) || !strings.HasPrefix(greeting, "220") {
		return
	}
	var (
		msg  smtpMessage
		auth string
	)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		if rep, ok := s.reply[verb]; ok {
			say(rep)
			continue
		}
		switch verb {
		case "EHLO", "HELO":
			kw := append([]string{"test.local"}, s.ext...)
			if s.tls != nil && !isTLS {
				kw = append(kw, "STARTTLS")
			}
			kw = append(kw, "HELP")
			for i, k := range kw {
				sep := "-"
				if i == len(kw)-1 {
					sep = " "
				}
				say("250" + sep + k)
			}
		case "STARTTLS":
			if s.tls == nil || isTLS {
				say("502 5.5.1 not offered")
				continue
			}
			say("220 2.0.0 ready to start TLS")
			tc := tls.Server(c, s.tls)
			if err := tc.Handshake(); err != nil {
				return // the client refused our certificate
			}
			c, r, w, isTLS = tc, bufio.NewReader(tc), tc, true
			msg, auth = smtpMessage{}, "" // RFC 3207: forget everything said before
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			b, err := base64.StdEncoding.DecodeString(resp)
			if !strings.EqualFold(mech, "PLAIN") || err != nil {
				say("504 5.5.4 only PLAIN with an initial response")
				continue
			}
			auth = string(b)
			say("235 2.7.0 authenticated")
		case "MAIL":
			msg = smtpMessage{from: addrParam(arg, "FROM:"), auth: auth, tls: isTLS}
			say("250 2.1.0 ok")
		case "RCPT":
			msg.to = append(msg.to, addrParam(arg, "TO:"))
			say("250 2.1.5 ok")
		case "DATA":
			if len(msg.to) == 0 {
				say("503 5.5.1 no recipients")
				continue
			}
			say("354 end with <CRLF>.<CRLF>")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, ".")) // undo dot-stuffing
			}
			msg.data = data.String()
			s.msgs <- msg
			say("250 2.0.0 queued")
		case "RSET", "NOOP":
			say("250 2.0.0 ok")
		case "QUIT":
			say("221 2.0.0 bye")
			return
		default:
			say("502 5.5.2 command not recognized")
		}
	}
}

func (s *smtpServer) replyTo(verb, def string) string {
	if r, ok := s.reply[verb]; ok {
		return r
	}
	return def
}

// addrParam extracts the address from "FROM:<a@b> PARAMS".
func addrParam(arg, prefix string) string {
	arg = strings.TrimSpace(arg)
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return ""
	}
	a, _, _ := strings.Cut(arg[len(prefix):], " ")
	return strings.Trim(a, "<>")
}

// selfSigned returns a throwaway certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sluice-test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
