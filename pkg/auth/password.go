package auth

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fleetgate/fleetgate/pkg/procs"
)

// dummyHash is a bcrypt hash of a random string nobody knows. Unknown users
// are compared against it, with its cost set to the file's, so that they
// cost the time a known user costs and timing does not tell which users
// exist. Patching the cost digits needs no bcrypt run.
const dummyHash = "$2a$04$FvbAkQF.G..FDLOoIdcsr.R9afiyZK4zS4W5RXAMpZQEEP5IEV4Rm"

func dummyHashOfCost(cost int) []byte {
	return fmt.Appendf(nil, "$2a$%02d%s", cost, dummyHash[6:])
}

// passwordUsers is one loading of the password file.
type passwordUsers struct {
	hashes map[string][]byte // username → bcrypt hash
	dummy  []byte            // dummyHash at the cost most of the hashes have
}

// passwords checks usernames and passwords against the password file.
//
// A verified (username, password, stored hash) is remembered as an HMAC
// under a key of this process, never the password, so that a reconnect
// costs one HMAC instead of one bcrypt, and a changed password or a changed
// hash in the file misses. Failures are throttled per username and per
// source address; a throttled attempt costs no bcrypt.
type passwords struct {
	path    string
	users   atomic.Pointer[passwordUsers]
	macKey  []byte
	compare func(hash, password []byte) error
	now     func() time.Time

	mu       sync.Mutex // guards verified; throttle locks itself
	verified *lru[[16]byte, struct{}]
	throttle *throttle
	// checks holds a slot per bcrypt comparison running (see
	// Config.PasswordChecks).
	checks chan struct{}
}

func newPasswords(cfg *Config, macKey []byte, now func() time.Time) *passwords {
	return &passwords{
		path:     cfg.PasswordFile,
		macKey:   macKey,
		compare:  bcrypt.CompareHashAndPassword,
		now:      now,
		verified: newLRU[[16]byte, struct{}](cfg.PasswordCacheSize),
		throttle: newThrottle(cfg.Throttle),
		checks:   make(chan struct{}, passwordChecks(cfg.PasswordChecks)),
	}
}

// passwordChecks is the bound on concurrent bcrypt comparisons: n, or for
// 0 half of the GOMAXPROCS the process started with (procs.adaptive may
// lower it while the node is calm), at least 1.
func passwordChecks(n int) int {
	if n > 0 {
		return n
	}
	return max(1, procs.Started()/2)
}

// applies reports whether the request names a user.
func (p *passwords) applies(r *Request) bool { return r.UsernameSet || r.Username != "" }

func (p *passwords) authenticate(r *Request) (Identity, error) {
	users := p.users.Load()
	if users == nil { // never loaded: every user is unknown
		users = &passwordUsers{dummy: dummyHashOfCost(bcrypt.DefaultCost)}
	}
	hash, known := users.hashes[r.Username]
	if !known {
		hash = users.dummy
	}
	key := p.cacheKey(r.Username, r.Password, hash)
	if p.cached(key) && known {
		// A cache hit proves the password right without bcrypt, so it is
		// let through even while the username is throttled: an attacker
		// guessing at a device's name does not lock out the device on
		// this node.
		return Identity{Name: r.Username, Source: SourcePassword, Credential: passwordCredential(hash)}, nil
	}
	user, addr := p.userKey(r.Username), r.Remote.Addr()
	if !p.throttle.admit(user, addr, p.now()) {
		return Identity{}, fail(SourcePassword, ReasonThrottled, "")
	}
	p.checks <- struct{}{}
	err := p.compare(hash, r.Password)
	<-p.checks
	if !known {
		return Identity{}, fail(SourcePassword, ReasonUnknownUser, "")
	}
	if err != nil {
		return Identity{}, fail(SourcePassword, ReasonWrongPassword, "")
	}
	p.throttle.succeeded(user, addr)
	p.mu.Lock()
	p.verified.put(key, struct{}{})
	p.mu.Unlock()
	return Identity{Name: r.Username, Source: SourcePassword, Credential: passwordCredential(hash)}, nil
}

// passwordCredential is the Credential of a password verified against the
// file's entry hash.
func passwordCredential(hash []byte) Credential {
	return Credential{kind: credPassword, fp: fingerprint(hash)}
}

// holds reports whether the password file loaded now has the entry of user
// whose fingerprint is fp.
func (p *passwords) holds(user string, fp uint64) bool {
	users := p.users.Load()
	if users == nil {
		return false
	}
	hash, ok := users.hashes[user]
	return ok && fingerprint(hash) == fp
}

func (p *passwords) cached(key [16]byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.verified.get(key)
	return ok
}

// cacheKey is the HMAC of the length-prefixed username, password and stored
// hash, truncated to 128 bits.
func (p *passwords) cacheKey(user string, password, hash []byte) [16]byte {
	m := hmac.New(sha256.New, p.macKey)
	for _, b := range [][]byte{[]byte("verified"), []byte(user), password, hash} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		m.Write(n[:])
		m.Write(b)
	}
	var k [16]byte
	copy(k[:], m.Sum(nil))
	return k
}

// userKey names a username in the throttle with a fixed-size key, so that
// long usernames cost no more memory than short ones.
func (p *passwords) userKey(user string) [16]byte {
	m := hmac.New(sha256.New, p.macKey)
	m.Write([]byte("throttle\x00"))
	m.Write([]byte(user))
	var k [16]byte
	copy(k[:], m.Sum(nil))
	return k
}

// load reads the password file and replaces the users; on error the
// previous users stay.
func (p *passwords) load() error {
	hashes, err := loadPasswordFile(p.path)
	if err != nil {
		return err
	}
	p.users.Store(&passwordUsers{hashes: hashes, dummy: dummyHashOfCost(commonCost(hashes))})
	return nil
}

// commonCost returns the bcrypt cost most hashes have (the higher on a
// tie), or bcrypt.DefaultCost for no hashes.
func commonCost(hashes map[string][]byte) int {
	count := map[int]int{}
	best := bcrypt.DefaultCost
	for _, h := range hashes {
		c, _ := bcrypt.Cost(h) // checked by loadPasswordFile
		count[c]++
		if count[c] > count[best] || (count[c] == count[best] && c > best) {
			best = c
		}
	}
	return best
}

// errHashPrefix replaces bcrypt's InvalidHashPrefixError, whose text quotes
// the first character of the field, which might be a plain password
// written where its hash belongs.
var errHashPrefix = errors.New("bcrypt hashes must start with '$'")

// loadPasswordFile reads username:bcrypt-hash lines; # starts a comment.
// Errors name the file, the line and the user, never the hash.
func loadPasswordFile(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth.password-file: %w", err)
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("auth.password-file: %s line %d: want username:bcrypt-hash", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			if _, prefix := errors.AsType[bcrypt.InvalidHashPrefixError](err); prefix {
				err = errHashPrefix
			}
			return nil, fmt.Errorf("auth.password-file: %s line %d: user %q: not a bcrypt hash: %w", path, n, user, err)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth.password-file: %w", err)
	}
	return users, nil
}
