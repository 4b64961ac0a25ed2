package stack

import (
	"time"

	"github.com/xdproxy/xdproxy/stack/wire"
)

// SYN cookies (RFC 4987 section 3.6), laid out as Linux lays them out:
//
//	cookie (our ISN) = epoch<<24 | (MAC(secret[epoch], 4-tuple, client ISN) + mssIndex) mod 2^24
//
// The epoch is the cookie secret's generation: the secret rotates every
// CookieSecretLifetime (drawn fresh from the injected Rand), and a cookie is
// accepted only under the current or the previous secret, so it lives at most
// two lifetimes. The MSS travels as an index into cookieMSS. When the SYN
// carried timestamps, window scale and SACK-permitted ride in the low six bits
// of our TSval, which the client echoes in TSecr (Linux's tcp_cookie_timestamp
// scheme): bits 0-3 the window scale (15: none), bit 4 SACK-permitted.

// cookieMSS are the MSS values a cookie can carry; a client's MSS is rounded
// down to the largest that does not exceed it.
var cookieMSS = [8]uint16{536, 1220, 1300, 1380, 1440, 1452, 1460, 8960}

const (
	cookieMACBits  = 24
	cookieMACMask  = 1<<cookieMACBits - 1
	cookieTSBits   = 6
	cookieTSMask   = 1<<cookieTSBits - 1
	cookieNoWScale = 0xf
	cookieSACKBit  = 1 << 4
)

type cookieSecret struct {
	epoch uint64
	hash  flowHasher
	valid bool
}

// cookieJar holds the current and the previous cookie secret.
type cookieJar struct {
	lifetime  time.Duration
	cur, prev cookieSecret
	master    [2]uint64 // with derived: each epoch's secret is a hash of it (Keys.Cookie)
	derived   bool
}

// rotate brings the secrets up to the epoch of now, drawing new ones lazily.
func (j *cookieJar) rotate(now Time, r Rand) {
	epoch := uint64(now) / uint64(j.lifetime)
	if j.cur.valid && j.cur.epoch == epoch {
		return
	}
	if j.cur.valid && j.cur.epoch+1 == epoch {
		j.prev = j.cur
	} else {
		j.prev = cookieSecret{} // nothing signed under it can still be valid
	}
	if j.derived {
		// Every epoch's secret is known: a cookie sent just before a
		// restart is still good after it.
		j.cur = cookieSecret{epoch: epoch, hash: deriveHasher(j.master, epoch), valid: true}
		if epoch > 0 {
			j.prev = cookieSecret{epoch: epoch - 1, hash: deriveHasher(j.master, epoch-1), valid: true}
		}
		return
	}
	j.cur = cookieSecret{epoch: epoch, hash: newFlowHasher(r), valid: true}
}

// make returns the cookie ISN for a SYN from k with sequence number clientISN
// and the MSS the client asked for.
func (j *cookieJar) make(k FlowKey, clientISN uint32, mss uint16) uint32 {
	idx := 0
	for i, m := range cookieMSS {
		if m <= mss {
			idx = i
		}
	}
	mac := uint32(j.cur.hash.sum(k, uint64(clientISN)))
	return uint32(j.cur.epoch&0xff)<<cookieMACBits | (mac+uint32(idx))&cookieMACMask
}

// check validates the cookie ISN (the ACK's ack-1) for a handshake whose
// client ISN is clientISN and returns the MSS it encodes.
func (j *cookieJar) check(k FlowKey, clientISN, cookie uint32) (mss uint16, ok bool) {
	for _, s := range [2]*cookieSecret{&j.cur, &j.prev} {
		if !s.valid || uint32(s.epoch&0xff) != cookie>>cookieMACBits {
			continue
		}
		mac := uint32(s.hash.sum(k, uint64(clientISN)))
		idx := (cookie - mac) & cookieMACMask
		if idx < uint32(len(cookieMSS)) {
			return cookieMSS[idx], true
		}
	}
	return 0, false
}

// cookieTSVal encodes the SYN's window scale and SACK-permitted in the low
// bits of our TSval, never ahead of the timestamp clock tsNow.
func cookieTSVal(tsNow uint32, o *wire.TCPOptions) uint32 {
	opts := uint32(cookieNoWScale)
	if o.HasWScale {
		opts = uint32(min(o.WScale, 14))
	}
	if o.SACKPermitted {
		opts |= cookieSACKBit
	}
	ts := tsNow&^cookieTSMask | opts
	if ts > tsNow { // Linux: never send a TSval from the future
		ts -= 1 << cookieTSBits
	}
	return ts
}

// cookieTSOptions decodes what cookieTSVal encoded from the echoed TSecr.
func cookieTSOptions(tsEcr uint32) (wscale uint8, hasWScale, sackOK bool) {
	w := tsEcr & 0xf
	return uint8(w), w != cookieNoWScale, tsEcr&cookieSACKBit != 0
}
