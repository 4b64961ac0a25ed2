package stack

import (
	"encoding/binary"
	"net/netip"

	"github.com/dchest/siphash"
)

// flowHasher computes keyed hashes of a 4-tuple with SipHash-2-4: the
// RFC 6528 ISN function F, the timestamp offset and the SYN cookie MAC all
// use it, each under its own key.
type flowHasher struct{ k0, k1 uint64 }

func newFlowHasher(r Rand) flowHasher { return flowHasher{r.Uint64(), r.Uint64()} }

// Keys are the engine's secrets: the keys of the ISN function F, of the
// timestamp offsets and of the SYN cookie MACs (each rotation's secret is
// derived from Cookie and the rotation's epoch). With keys that outlive the
// process and a clock that does not restart with it (the daemon keeps both:
// state_dir, CLOCK_BOOTTIME), a restarted engine's ISNs and timestamps for
// a 4-tuple carry on growing from where its predecessor's were, so a peer
// still holding the old connection in TIME_WAIT takes the new SYN (RFC
// 6191) instead of answering it with the old ACK; and cookies sent before
// a restart are still valid after it.
type Keys struct {
	ISN, Timestamp, Cookie [2]uint64
}

// deriveHasher is the keyed hash for one purpose (salt) under key.
func deriveHasher(key [2]uint64, salt uint64) flowHasher {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], salt)
	k0 := siphash.Hash(key[0], key[1], b[:])
	b[0] ^= 0x80
	return flowHasher{k0, siphash.Hash(key[0], key[1], b[:])}
}

// sum hashes the 4-tuple plus extra. The tuple is laid out in a fixed
// 40-byte array so the hash never allocates.
func (h flowHasher) sum(k FlowKey, extra uint64) uint64 {
	var b [16 + 16 + 2 + 2 + 8]byte
	putAddr(b[0:16], k.LocalAddr)
	putAddr(b[16:32], k.RemoteAddr)
	binary.BigEndian.PutUint16(b[32:], k.LocalPort)
	binary.BigEndian.PutUint16(b[34:], k.RemotePort)
	binary.BigEndian.PutUint64(b[36:], extra)
	return siphash.Hash(h.k0, h.k1, b[:])
}

// sumAddrs hashes only the address pair (for the timestamp offset, which
// Linux also derives from the addresses alone).
func (h flowHasher) sumAddrs(local, remote netip.Addr) uint64 {
	var b [32]byte
	putAddr(b[0:16], local)
	putAddr(b[16:32], remote)
	return siphash.Hash(h.k0, h.k1, b[:])
}

func putAddr(b []byte, a netip.Addr) {
	s := a.As16()
	copy(b, s[:])
}

// isn is the initial sequence number of RFC 6528 section 3:
// ISN = M + F(localip, localport, remoteip, remoteport, secretkey), where M
// is a timer that ticks every 4 microseconds and F a keyed hash.
func (e *Engine) isn(k FlowKey, now Time) uint32 {
	m := uint32(now / 4000)
	return m + uint32(e.isnHash.sum(k, 0))
}

// tsOffset is the per-address-pair offset added to our timestamp clock
// (RFC 7323 section 5.4 recommends a random offset per connection; Linux uses
// one per address pair, which SYN cookies need: the offset must be
// recomputable without state).
func (e *Engine) tsOffset(local, remote netip.Addr) uint32 {
	return uint32(e.tsHash.sumAddrs(local, remote))
}

// tsClock is the 1 ms timestamp clock (Linux's TCP timestamp granularity).
func tsClock(now Time) uint32 { return uint32(now / 1e6) }
