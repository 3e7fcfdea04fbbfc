package persist

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

func TestTokensRoundTrip(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tok := NewTokens([]byte("s3cret"), time.Minute)
	a, b := pool.NewBackend("10.0.0.1:80"), pool.NewBackend("10.0.0.2:80")
	dir := tok.Directory([]*pool.Backend{a, b})
	v := tok.Issue(tok.ID(b.Address), now)
	if strings.Contains(v, "10.0.0") {
		t.Fatalf("token %q reveals the address", v)
	}
	id, issued, err := tok.Parse(v, now.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if dir[id] != b || !issued.Equal(now) {
		t.Fatalf("token names %v issued %v; want b issued %v", dir[id], issued, now)
	}
	// Another load balancer with the same key reads it the same.
	if id2, _, err := NewTokens([]byte("s3cret"), time.Minute).Parse(v, now); err != nil || id2 != id {
		t.Fatalf("same key elsewhere: %v, %v", id2, err)
	}
	if _, _, err := NewTokens([]byte("other"), time.Minute).Parse(v, now); !errors.Is(err, ErrForged) {
		t.Fatalf("another key accepted the token: %v", err)
	}
	if _, _, err := tok.Parse(v, now.Add(time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("token past its timeout: %v", err)
	}
	if tok.Stale(now, now.Add(time.Second)) || !tok.Stale(now, now.Add(4*time.Second)) {
		t.Fatal("tokens should be renewed after a sixteenth of the timeout, not before")
	}
}

func TestTamperedTokensAreRefused(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tok := NewTokens(make([]byte, KeySize), 0)
	v := tok.Issue(42, now)
	for i := range len(v) {
		c := byte('A')
		if v[i] == 'A' {
			c = 'B'
		}
		bad := v[:i] + string(c) + v[i+1:]
		if _, _, err := tok.Parse(bad, now); err == nil {
			t.Fatalf("token altered at %d accepted", i)
		}
	}
	for _, bad := range []string{"", "x", v + "A", v[:len(v)-1], strings.Repeat("=", len(v))} {
		if _, _, err := tok.Parse(bad, now); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrForged) {
			t.Fatalf("Parse(%q) = %v, want malformed or forged", bad, err)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	now := time.Unix(1_000_000, 0)
	tok := NewTokens([]byte("k"), time.Hour)
	f.Add(tok.Issue(7, now))
	f.Add("AQAAAAAAAAAHAA9CQA")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, issued, err := tok.Parse(s, now)
		if err != nil {
			return
		}
		// Whatever parses must be what this key signed: re-issuing it
		// gives the same token.
		if again := tok.Issue(id, issued); again != s {
			t.Fatalf("accepted %q, which this key would sign as %q", s, again)
		}
	})
}
