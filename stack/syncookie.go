package stack

import (
	"net/netip"
	"sync/atomic"
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
	external  atomic.Bool // cookies sent outside the engine may be outstanding (SetExternalCookies)
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
	return makeCookie(j.cur.hash, j.cur.epoch, k, clientISN, mss)
}

// check validates the cookie ISN (the ACK's ack-1) for a handshake whose
// client ISN is clientISN and returns the MSS it encodes.
func (j *cookieJar) check(k FlowKey, clientISN, cookie uint32) (mss uint16, ok bool) {
	for _, s := range [2]*cookieSecret{&j.cur, &j.prev} {
		if !s.valid {
			continue
		}
		if mss, ok := checkCookie(s.hash, s.epoch, k, clientISN, cookie); ok {
			return mss, true
		}
	}
	return 0, false
}

// makeCookie is the one definition of the cookie: the XDP program (bpf/xdp.c)
// computes the same function, and its fixture tests hold it to this one.
func makeCookie(h flowHasher, epoch uint64, k FlowKey, clientISN uint32, mss uint16) uint32 {
	idx := 0
	for i, m := range cookieMSS {
		if m <= mss {
			idx = i
		}
	}
	mac := uint32(h.sum(k, uint64(clientISN)))
	return uint32(epoch&0xff)<<cookieMACBits | (mac+uint32(idx))&cookieMACMask
}

// checkCookie validates cookie against the secret of one epoch.
func checkCookie(h flowHasher, epoch uint64, k FlowKey, clientISN, cookie uint32) (mss uint16, ok bool) {
	if uint32(epoch&0xff) != cookie>>cookieMACBits {
		return 0, false
	}
	mac := uint32(h.sum(k, uint64(clientISN)))
	idx := (cookie - mac) & cookieMACMask
	if idx >= uint32(len(cookieMSS)) {
		return 0, false
	}
	return cookieMSS[idx], true
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

// A stateless SYN-ACK sent outside the engine (the XDP program answers SYNs
// itself under a flood, bpf/xdp.c) must be the one sendCookie would send, and
// its returning ACK must pass cookieACK. What follows hands that responder
// the engine's keys, tables and parameters; the algorithm stays here.

// CookieMSS returns the MSS values a cookie can carry, by index.
func CookieMSS() [8]uint16 { return cookieMSS }

// CookieEpoch is the epoch of the cookie secret in force at now: cookies
// made at now carry its low 8 bits in their top byte.
func CookieEpoch(now Time, lifetime time.Duration) uint64 { return uint64(now) / uint64(lifetime) }

// CookieSecret is the SipHash-2-4 key (k0, k1) under which the engine makes
// and checks cookies in epoch, when it runs with keys k (Config.Keys).
func (k *Keys) CookieSecret(epoch uint64) [2]uint64 {
	h := deriveHasher(k.Cookie, epoch)
	return [2]uint64{h.k0, h.k1}
}

// SYNCookie is the cookie ISN the engine sends, in epoch under secret, to a
// SYN from k (LocalAddr ours) with sequence number clientISN and MSS mss
// (0: the SYN had none).
func SYNCookie(secret [2]uint64, epoch uint64, k FlowKey, clientISN uint32, mss uint16) uint32 {
	if mss == 0 {
		mss = defaultMSS(k)
	}
	return makeCookie(flowHasher{secret[0], secret[1]}, epoch, k, clientISN, mss)
}

// CheckSYNCookie validates cookie (an ACK's ack-1) for the handshake whose
// client ISN is clientISN (the ACK's seq-1), in epoch under secret, and
// returns the MSS it carries.
func CheckSYNCookie(secret [2]uint64, epoch uint64, k FlowKey, clientISN, cookie uint32) (mss uint16, ok bool) {
	return checkCookie(flowHasher{secret[0], secret[1]}, epoch, k, clientISN, cookie)
}

// CookieTSVal is the TSval of a cookie SYN-ACK at the timestamp clock tsNow
// (TSClock plus TSOffset) to a SYN with options o.
func CookieTSVal(tsNow uint32, o *wire.TCPOptions) uint32 { return cookieTSVal(tsNow, o) }

// TSClock is the engine's 1 ms timestamp clock at now.
func TSClock(now Time) uint32 { return tsClock(now) }

// TSOffset is the offset the engine adds to TSClock for the address pair
// (local, remote) under keys k.
func (k *Keys) TSOffset(local, remote netip.Addr) uint32 {
	return uint32(flowHasher{k.Timestamp[0], k.Timestamp[1]}.sumAddrs(local, remote))
}

// CookieResponder is what a stateless responder needs to answer a SYN on an
// interface as sendCookie does.
type CookieResponder struct {
	MSS4, MSS6 uint16 // our MSS option, by the family of the listener address
	Window     uint16 // the SYN-ACK's window field
	WScale     uint8  // our window scale, offered when the SYN offered one (and timestamps)
}

// CookieResponder returns the engine's cookie SYN-ACK parameters on its
// interface ifx.
func (e *Engine) CookieResponder(ifx int) CookieResponder {
	return CookieResponder{
		MSS4:   e.ifs[ifx].mss4,
		MSS6:   e.ifs[ifx].mss6,
		Window: uint16(min(e.cfg.RcvBuffer, 0xffff)),
		WScale: e.rcvWScale,
	}
}

// SetExternalCookies tells the engine whether SYN cookies it did not send
// (the XDP program's) may be outstanding: while set, an ACK to a listener
// that matches no connection is checked as a cookie, as after the engine's
// own cookies, instead of answered with a RST. Whoever sends them keeps it
// set for two CookieSecretLifetimes after the last one. Safe from any
// goroutine.
func (e *Engine) SetExternalCookies(on bool) { e.cookies.external.Store(on) }
