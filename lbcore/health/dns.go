package health

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
)

// DNSCheck passes when a DNS server answers a query for QName with NOERROR
// (or, with AcceptNXDomain, NXDOMAIN). The query is built by hand, with a
// fresh random ID, and the reply must echo that ID and the question: a
// server that answers at all, correctly framed, is serving.
type DNSCheck struct {
	// QName is the name asked about. Default: "." (the root). (Not
	// "Name": that is the method every Checker has.)
	QName string
	// Type is the query type. Default: NS (2) for the root, else A (1).
	Type uint16
	// TCP asks over TCP instead of UDP.
	TCP bool
	// AcceptNXDomain passes an NXDOMAIN answer: useful when QName need not
	// exist and the question is only whether the server answers.
	AcceptNXDomain bool
	// Port, when non-zero, is probed on the target's host instead of the
	// target's own port.
	Port int
}

// DNS wire constants (RFC 1035 §4.1).
const (
	dnsTypeA     = 1
	dnsTypeNS    = 2
	dnsClassIN   = 1
	dnsHeaderLen = 12
	dnsFlagQR    = 1 << 15
	dnsFlagRD    = 1 << 8
	dnsNXDomain  = 3
	// A reply's header and question are all the check reads, but a UDP
	// read must offer room for the whole datagram or lose the end of it.
	dnsMaxUDP = 4096
)

var dnsRcodes = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"}

func rcodeName(rc int) string {
	if rc < len(dnsRcodes) {
		return dnsRcodes[rc]
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// Name returns "dns".
func (c *DNSCheck) Name() string { return "dns" }

// Check sends one query to target and validates the reply.
func (c *DNSCheck) Check(ctx context.Context, target string) Result {
	p, cancel := startProbe(ctx)
	defer cancel()
	return p.result(c.check(p, target))
}

func (c *DNSCheck) check(p *probe, target string) error {
	name, qtype := c.question()
	id := uint16(rand.Uint32())
	query, err := dnsQuery(id, name, qtype)
	if err != nil {
		return err
	}
	addr, err := hostPort(target, c.Port)
	if err != nil {
		return err
	}
	network := "udp"
	if c.TCP {
		network = "tcp"
	}
	conn, err := p.dial(network, addr)
	if err != nil {
		return err
	}
	defer conn.Close()

	var reply []byte
	if c.TCP {
		// RFC 1035 §4.2.2: over TCP each message is preceded by its length.
		msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(query)), uint16(len(query)))
		if _, err := conn.Write(append(msg, query...)); err != nil {
			return p.fail("send DNS query", err)
		}
		var n [2]byte
		if _, err := io.ReadFull(conn, n[:]); err != nil {
			return p.fail("read DNS reply", err)
		}
		reply = make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(conn, reply); err != nil {
			return p.fail("read DNS reply", err)
		}
	} else {
		if _, err := conn.Write(query); err != nil {
			return p.fail("send DNS query", err)
		}
		reply = make([]byte, dnsMaxUDP)
		n, err := conn.Read(reply)
		if err != nil {
			return p.fail("read DNS reply", err)
		}
		reply = reply[:n]
	}
	return c.validate(reply, query, name, qtype)
}

// question returns the name and type to ask, defaults applied.
func (c *DNSCheck) question() (string, uint16) {
	name := c.QName
	if name == "" {
		name = "."
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	qtype := c.Type
	if qtype == 0 {
		qtype = dnsTypeA
		if name == "." {
			qtype = dnsTypeNS // the root has no A record, but every server knows its NS
		}
	}
	return name, qtype
}

// dnsQuery builds a query with one question and recursion desired, which
// a recursive server needs and an authoritative one ignores.
func dnsQuery(id uint16, name string, qtype uint16) ([]byte, error) {
	q := make([]byte, dnsHeaderLen, dnsHeaderLen+len(name)+1+4)
	binary.BigEndian.PutUint16(q[0:], id)
	binary.BigEndian.PutUint16(q[2:], dnsFlagRD)
	binary.BigEndian.PutUint16(q[4:], 1) // QDCOUNT
	if name != "." {
		for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
			if len(label) == 0 || len(label) > 63 {
				return nil, failf("DNS name %s has a label that is empty or longer than 63 bytes", quote(name))
			}
			q = append(q, byte(len(label)))
			q = append(q, label...)
		}
	}
	q = append(q, 0)
	if len(q)-dnsHeaderLen > 255 {
		return nil, failf("DNS name %s is longer than 255 bytes", quote(name))
	}
	q = binary.BigEndian.AppendUint16(q, qtype)
	q = binary.BigEndian.AppendUint16(q, dnsClassIN)
	return q, nil
}

// validate checks that reply answers query: same ID, a response, an
// acceptable RCODE and the same question back.
func (c *DNSCheck) validate(reply, query []byte, name string, qtype uint16) error {
	if len(reply) < dnsHeaderLen {
		return failf("DNS reply is %d bytes, shorter than a header", len(reply))
	}
	id, wantID := binary.BigEndian.Uint16(reply[0:]), binary.BigEndian.Uint16(query[0:])
	if id != wantID {
		return failf("DNS reply has ID 0x%04x, want 0x%04x", id, wantID)
	}
	flags := binary.BigEndian.Uint16(reply[2:])
	if flags&dnsFlagQR == 0 {
		return failf("DNS reply has QR unset: a query, not a response")
	}
	rc := int(flags & 0xf)
	if rc != 0 && !(rc == dnsNXDomain && c.AcceptNXDomain) {
		want := "NOERROR"
		if c.AcceptNXDomain {
			want = "NOERROR or NXDOMAIN"
		}
		return failf("DNS reply for %s %s is %s, want %s", name, typeName(qtype), rcodeName(rc), want)
	}
	question := query[dnsHeaderLen:]
	if binary.BigEndian.Uint16(reply[4:]) != 1 || len(reply) < dnsHeaderLen+len(question) ||
		!equalFoldASCII(reply[dnsHeaderLen:dnsHeaderLen+len(question)], question) {
		return failf("DNS reply does not echo the question %s %s", name, typeName(qtype))
	}
	return nil
}

func typeName(t uint16) string {
	switch t {
	case dnsTypeA:
		return "A"
	case dnsTypeNS:
		return "NS"
	}
	return fmt.Sprintf("TYPE%d", t)
}

// equalFoldASCII compares wire bytes, ignoring the case of ASCII letters
// only: servers may echo a name's case differently (RFC 4343), but any
// other difference is a different question.
func equalFoldASCII(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Interface guards
var _ Checker = (*DNSCheck)(nil)
