package persist

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// Tokens bind sessions in the client: a cookie value that names a backend
// by an opaque identifier, says when it was issued and carries an HMAC, so
// the client can neither read the backend's address nor forge or alter the
// binding, and every load balancer holding the key honours it.
type Tokens struct {
	key     []byte
	timeout time.Duration
}

// KeySize is the size of a Tokens key.
const KeySize = 32

// tokenVersion leads every token, so the format can change without
// misreading old cookies.
const tokenVersion = 1

// A token is version | backend ID | issued (unix seconds) | MAC.
const (
	idSize     = 8
	issuedSize = 4
	macSize    = 16
	bodySize   = 1 + idSize + issuedSize
	tokenSize  = bodySize + macSize
)

// Errors that Parse returns.
var (
	ErrMalformed = errors.New("not a Sluice persistence token")
	ErrForged    = errors.New("persistence token has a bad signature")
	ErrExpired   = errors.New("persistence token has expired")
)

// NewTokens returns tokens signed with key (KeySize random bytes, or any
// secret, which is hashed to a key) that expire timeout after issue
// (zero: DefaultTimeout).
func NewTokens(key []byte, timeout time.Duration) *Tokens {
	if len(key) != KeySize {
		sum := sha256.Sum256(key)
		key = sum[:]
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Tokens{key: key, timeout: timeout}
}

// ID returns the opaque identifier of the backend at address: the same
// for every load balancer with the same key, and useless without it.
func (t *Tokens) ID(address string) uint64 {
	mac := hmac.New(sha256.New, t.key)
	mac.Write([]byte("backend\x00"))
	mac.Write([]byte(address))
	return binary.BigEndian.Uint64(mac.Sum(nil))
}

// Issue returns a token binding a session to the backend with id.
func (t *Tokens) Issue(id uint64, now time.Time) string {
	var buf [tokenSize]byte
	buf[0] = tokenVersion
	binary.BigEndian.PutUint64(buf[1:], id)
	binary.BigEndian.PutUint32(buf[1+idSize:], uint32(now.Unix()))
	copy(buf[bodySize:], t.sign(buf[:bodySize]))
	return base64.RawURLEncoding.EncodeToString(buf[:])
}

func (t *Tokens) sign(body []byte) []byte {
	mac := hmac.New(sha256.New, t.key)
	mac.Write(body)
	return mac.Sum(nil)[:macSize]
}

// Parse checks a token and returns the backend ID it binds and when it
// was issued.
func (t *Tokens) Parse(token string, now time.Time) (id uint64, issued time.Time, err error) {
	var buf [tokenSize]byte
	if base64.RawURLEncoding.DecodedLen(len(token)) != tokenSize {
		return 0, time.Time{}, ErrMalformed
	}
	if n, err := base64.RawURLEncoding.Decode(buf[:], []byte(token)); err != nil || n != tokenSize || buf[0] != tokenVersion {
		return 0, time.Time{}, ErrMalformed
	}
	if !hmac.Equal(buf[bodySize:], t.sign(buf[:bodySize])) {
		return 0, time.Time{}, ErrForged
	}
	issued = time.Unix(int64(binary.BigEndian.Uint32(buf[1+idSize:])), 0)
	if now.Sub(issued) >= t.timeout || issued.After(now.Add(time.Minute)) {
		return 0, time.Time{}, ErrExpired
	}
	return binary.BigEndian.Uint64(buf[1:]), issued, nil
}

// Stale reports whether a token issued at issued should be reissued to
// keep its session alive: each request refreshes the binding, but a fresh
// cookie on every response would cost a header and a MAC each time, so
// tokens are renewed once a sixteenth of the timeout has passed.
func (t *Tokens) Stale(issued, now time.Time) bool {
	return now.Sub(issued) >= t.timeout/16
}

// Directory finds backends by the IDs tokens carry.
type Directory map[uint64]*pool.Backend

// Directory returns the directory of backends.
func (t *Tokens) Directory(backends []*pool.Backend) Directory {
	d := make(Directory, len(backends))
	for _, b := range backends {
		d[t.ID(b.Address)] = b
	}
	return d
}
