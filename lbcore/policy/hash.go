package policy

import "net/netip"

// Hashes here are stable across processes and hosts (FNV-1a followed by a
// 64-bit finalizer), so that every load balancer in front of the same pool
// maps a key to the same backend without talking to the others.

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// HashString returns the affinity hash of a request key.
func HashString(s string) uint64 { return hashBytes(0, s) }

func hashBytes[T string | []byte](seed uint64, b T) uint64 {
	h := uint64(fnvOffset) ^ seed
	for i := 0; i < len(b); i++ {
		h ^= uint64(b[i])
		h *= fnvPrime
	}
	return mix(h)
}

// mix is the splitmix64 finalizer: it spreads FNV's weak low bits.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// HashAddr returns the affinity hash of a client address reduced to its
// network: the first bits4 bits of an IPv4 address or bits6 of an IPv6 one,
// so that clients behind one NAT range or one /64 stay together. An
// IPv4-mapped IPv6 address counts as IPv4.
func HashAddr(a netip.Addr, bits4, bits6 int) uint64 {
	a = a.Unmap()
	bits := bits6
	if a.Is4() {
		bits = bits4
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return 0
	}
	b := p.Addr().As16()
	return hashBytes(uint64(bits), b[:])
}
