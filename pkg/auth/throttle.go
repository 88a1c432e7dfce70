package auth

import (
	"net/netip"
	"sync"
	"time"
)

// throttle counts failed password checks per username and per source
// address over a fixed window, in bounded maps: beyond max entries each the
// least recently failed key is forgotten, so an attacker cycling names or
// addresses costs bounded memory (and gains at most a fresh count for keys
// it pushed out).
type throttle struct {
	window               time.Duration
	userLimit, addrLimit int

	mu    sync.Mutex // guards users and addrs
	users *lru[[16]byte, failures]
	addrs *lru[netip.Addr, failures]
}

// failures counts the failures of one key in the window that began at start.
type failures struct {
	start time.Time
	n     int
}

func newThrottle(cfg ThrottleConfig) *throttle {
	return &throttle{
		window:    cfg.Window,
		userLimit: cfg.UserFailures,
		addrLimit: cfg.AddressFailures,
		users:     newLRU[[16]byte, failures](cfg.MaxEntries),
		addrs:     newLRU[netip.Addr, failures](cfg.MaxEntries),
	}
}

// addrKey returns the key of a source address: the address itself, or for
// IPv6 its /64, since one host commonly holds a whole /64. ok is false for
// an unknown address.
func addrKey(a netip.Addr) (netip.Addr, bool) {
	if !a.IsValid() {
		return netip.Addr{}, false
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr(), true
	}
	return a, true
}

// admit reports whether an attempt of user from addr may have its password
// checked, and if so counts it as a failure in advance, so that concurrent
// attempts cannot all pass before the first has failed. succeeded takes
// the count back.
func (t *throttle) admit(user [16]byte, addr netip.Addr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, hasAddr := addrKey(addr)
	hasAddr = hasAddr && t.addrLimit > 0
	if t.userLimit > 0 && reached(t.users, user, now, t.window, t.userLimit) {
		return false
	}
	if hasAddr && reached(t.addrs, a, now, t.window, t.addrLimit) {
		return false
	}
	if t.userLimit > 0 {
		count(t.users, user, now, t.window)
	}
	if hasAddr {
		count(t.addrs, a, now, t.window)
	}
	return true
}

// reached reports whether k has limit failures in the current window.
func reached[K comparable](m *lru[K, failures], k K, now time.Time, window time.Duration, limit int) bool {
	f, ok := m.get(k)
	return ok && now.Sub(f.start) < window && f.n >= limit
}

// count adds a failure of k, starting a new window when the last is over.
func count[K comparable](m *lru[K, failures], k K, now time.Time, window time.Duration) {
	f, ok := m.get(k)
	if !ok || now.Sub(f.start) >= window {
		f = failures{start: now}
	}
	f.n++
	m.put(k, f)
}

// succeeded is called after an admitted attempt succeeded: the failures of
// user are forgotten, and the address's count loses this attempt. The
// address keeps its other failures: one known password must not reset the
// count of an address that guesses others.
func (t *throttle) succeeded(user [16]byte, addr netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.users.remove(user)
	if a, ok := addrKey(addr); ok && t.addrLimit > 0 {
		if f, ok := t.addrs.get(a); ok && f.n > 0 {
			f.n--
			t.addrs.put(a, f)
		}
	}
}
