package health

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// answer returns a responder that echoes the query as a response with
// rcode, after edit (if any) has had its way with the reply.
func answer(rcode uint16, edit func(reply []byte) []byte) dnsResponder {
	return func(q []byte) []byte {
		if len(q) < dnsHeaderLen {
			return nil
		}
		r := append([]byte(nil), q...)
		flags := binary.BigEndian.Uint16(r[2:])
		binary.BigEndian.PutUint16(r[2:], flags|dnsFlagQR|1<<7 /* RA */ |rcode)
		if edit != nil {
			r = edit(r)
		}
		return r
	}
}

func TestDNSCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		check   DNSCheck
		respond dnsResponder
		wantErr string
		// wantQuestion is the question section the server must receive.
		wantQuestion []byte
	}{
		{
			name:         "root NS by default",
			respond:      answer(0, nil),
			wantQuestion: []byte{0, 0, 2, 0, 1},
		},
		{
			name:         "name defaults to type A",
			check:        DNSCheck{QName: "www.Example.com"},
			respond:      answer(0, nil),
			wantQuestion: append([]byte("\x03www\x07Example\x03com\x00"), 0, 1, 0, 1),
		},
		{
			name:         "explicit type, trailing dot",
			check:        DNSCheck{QName: "example.com.", Type: 28},
			respond:      answer(0, nil),
			wantQuestion: append([]byte("\x07example\x03com\x00"), 0, 28, 0, 1),
		},
		{
			name:    "NXDOMAIN fails",
			check:   DNSCheck{QName: "nope.example"},
			respond: answer(dnsNXDomain, nil),
			wantErr: "DNS reply for nope.example. A is NXDOMAIN, want NOERROR",
		},
		{
			name:    "NXDOMAIN accepted",
			check:   DNSCheck{QName: "nope.example", AcceptNXDomain: true},
			respond: answer(dnsNXDomain, nil),
		},
		{
			name:    "SERVFAIL",
			check:   DNSCheck{AcceptNXDomain: true},
			respond: answer(2, nil),
			wantErr: "DNS reply for . NS is SERVFAIL, want NOERROR or NXDOMAIN",
		},
		{
			name:    "REFUSED",
			respond: answer(5, nil),
			wantErr: "is REFUSED",
		},
		{
			name: "wrong ID",
			respond: answer(0, func(r []byte) []byte {
				binary.BigEndian.PutUint16(r, binary.BigEndian.Uint16(r)+1)
				return r
			}),
			wantErr: "DNS reply has ID 0x",
		},
		{
			name:    "query echoed back",
			respond: func(q []byte) []byte { return q },
			wantErr: "DNS reply has QR unset",
		},
		{
			name:    "short reply",
			respond: func([]byte) []byte { return []byte{1, 2, 3, 4, 5} },
			wantErr: "DNS reply is 5 bytes, shorter than a header",
		},
		{
			name:  "different question",
			check: DNSCheck{QName: "a.example"},
			respond: answer(0, func(r []byte) []byte {
				r[dnsHeaderLen+1] = 'b'
				return r
			}),
			wantErr: "DNS reply does not echo the question a.example. A",
		},
		{
			name:  "question case changed",
			check: DNSCheck{QName: "a.example"},
			respond: answer(0, func(r []byte) []byte {
				r[dnsHeaderLen+1] = 'A' // RFC 4343: case may change
				return r
			}),
		},
		{
			name: "no question",
			respond: answer(0, func(r []byte) []byte {
				binary.BigEndian.PutUint16(r[4:], 0)
				return r[:dnsHeaderLen]
			}),
			wantErr: "does not echo the question",
		},
		{
			name:    "empty label",
			check:   DNSCheck{QName: "a..example"},
			respond: answer(0, nil),
			wantErr: `DNS name "a..example." has a label that is empty or longer than 63 bytes`,
		},
	}
	for _, tt := range tests {
		for _, tcp := range []bool{false, true} {
			name := tt.name + "/udp"
			if tcp {
				name = tt.name + "/tcp"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				addr, queries := serveDNS(t, tt.respond)
				c := tt.check
				c.TCP = tcp
				r := runCheck(t, &c, addr, time.Second) // silence: TestSilentServerTimesOut
				wantResult(t, r, tt.wantErr)
				if tt.wantQuestion != nil {
					q := recv(t, queries, "the query")
					if got := q[dnsHeaderLen:]; !bytes.Equal(got, tt.wantQuestion) {
						t.Errorf("question = %q, want %q", got, tt.wantQuestion)
					}
					if flags := binary.BigEndian.Uint16(q[2:]); flags != dnsFlagRD {
						t.Errorf("query flags = %#04x, want RD only", flags)
					}
				}
			})
		}
	}
}

// Each query carries a fresh ID, so a late reply to one probe cannot pass
// the next.
func TestDNSQueryIDsDiffer(t *testing.T) {
	t.Parallel()
	addr, queries := serveDNS(t, answer(0, nil))
	ids := map[uint16]bool{}
	for range 8 {
		wantResult(t, runCheck(t, &DNSCheck{}, addr, 2*time.Second), "")
		ids[binary.BigEndian.Uint16(recv(t, queries, "a query"))] = true
	}
	if len(ids) < 2 {
		t.Errorf("8 queries used %d distinct IDs, want fresh random ones", len(ids))
	}
}

// A TCP DNS server that resets after reading the query.
func TestDNSOverTCPReset(t *testing.T) {
	t.Parallel()
	addr := serveTCP(t, resetAfterRead)
	r := runCheck(t, &DNSCheck{TCP: true}, addr, 2*time.Second)
	wantResult(t, r, "read DNS reply: connection reset by peer")
}

func TestDNSNameTooLong(t *testing.T) {
	t.Parallel()
	long := ""
	for range 5 {
		long += string(bytes.Repeat([]byte("a"), 60)) + "."
	}
	r := runCheck(t, &DNSCheck{QName: long}, refusedAddr(t), time.Second)
	wantResult(t, r, "is longer than 255 bytes")
}
