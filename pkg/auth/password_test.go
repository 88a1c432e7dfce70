package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// passwordChain returns a loaded password Chain over a file of the given
// lines, and the file's path.
func passwordChain(t *testing.T, lines string, change func(*Config)) (*Chain, string, *clock) {
	t.Helper()
	path := writeFile(t, t.TempDir(), "passwd", lines)
	cfg := defaults()
	cfg.PasswordFile = path
	if change != nil {
		change(&cfg)
	}
	clk := newClock()
	return newChain(t, cfg, clk), path, clk
}

func login(user, password string) Request {
	return Request{ClientID: user, Username: user, UsernameSet: true, Password: []byte(password)}
}

func TestPasswordFileAcceptsTheRightPasswordOnly(t *testing.T) {
	c, _, _ := passwordChain(t, "# devices\n\nalice:"+hash(t, "wonderland", bcrypt.MinCost)+"\n", nil)

	id, err := c.Authenticate(login("alice", "wonderland"))
	require.NoError(t, err)
	assert.True(t, id.Credential.Revocable(), "it rests on alice's entry")
	id.Credential = Credential{}
	assert.Equal(t, Identity{Name: "alice", Source: SourcePassword}, id)

	f := requireFailure(t, ignoreID(c.Authenticate(login("alice", "looking-glass"))), ReasonWrongPassword)
	assert.Equal(t, BadCredentials, f.Code())
	assert.Equal(t, SourcePassword, f.Method)
	f = requireFailure(t, ignoreID(c.Authenticate(login("bob", "wonderland"))), ReasonUnknownUser)
	assert.Equal(t, BadCredentials, f.Code(), "an unknown user gets the same answer as a wrong password")
}

func ignoreID(_ Identity, err error) error { return err }

func TestUnknownUsersCostABcryptOfTheFilesCost(t *testing.T) {
	// Two hashes of cost 5, one of cost 4: the dummy takes the common one.
	lines := fmt.Sprintf("a:%s\nb:%s\nc:%s\n", hash(t, "x", 5), hash(t, "y", 5), hash(t, "z", 4))
	c, _, _ := passwordChain(t, lines, nil)
	calls, costs := countCompares(c)

	requireFailure(t, ignoreID(c.Authenticate(login("mallory", "guess"))), ReasonUnknownUser)
	assert.Equal(t, int64(1), calls.Load(), "an unknown user is compared like a known one")
	assert.Equal(t, []int{5}, *costs, "against a hash of the cost most users have")

	requireFailure(t, ignoreID(c.Authenticate(login("a", "guess"))), ReasonWrongPassword)
	assert.Equal(t, int64(2), calls.Load())
	assert.Equal(t, []int{5, 5}, *costs)
}

func TestAVerifiedPasswordIsRememberedUntilItOrItsHashChanges(t *testing.T) {
	c, path, _ := passwordChain(t, "dev-1:"+hash(t, "first", bcrypt.MinCost)+"\n", nil)
	calls, _ := countCompares(c)

	for range 3 {
		_, err := c.Authenticate(login("dev-1", "first"))
		require.NoError(t, err)
	}
	assert.Equal(t, int64(1), calls.Load(), "a reconnect storm costs one bcrypt per device")

	// The password changes in the file: the remembered one misses.
	writeFile(t, "", path, "dev-1:"+hash(t, "second", bcrypt.MinCost)+"\n")
	require.NoError(t, c.Load())
	requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "first"))), ReasonWrongPassword)
	assert.Equal(t, int64(2), calls.Load(), "the old password is checked again, and fails")
	_, err := c.Authenticate(login("dev-1", "second"))
	require.NoError(t, err)
	_, err = c.Authenticate(login("dev-1", "second"))
	require.NoError(t, err)
	assert.Equal(t, int64(3), calls.Load())

	// The same password, hashed anew (new salt): the stored hash is part of
	// the key, so it misses once.
	writeFile(t, "", path, "dev-1:"+hash(t, "second", bcrypt.MinCost)+"\n")
	require.NoError(t, c.Load())
	_, err = c.Authenticate(login("dev-1", "second"))
	require.NoError(t, err)
	assert.Equal(t, int64(4), calls.Load())

	// The user leaves the file: nothing remembered lets it in.
	writeFile(t, "", path, "other:"+hash(t, "x", bcrypt.MinCost)+"\n")
	require.NoError(t, c.Load())
	requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "second"))), ReasonUnknownUser)
}

func TestTheVerifiedPasswordCacheIsBounded(t *testing.T) {
	var lines strings.Builder
	h := hash(t, "pw", bcrypt.MinCost)
	for i := range 20 {
		fmt.Fprintf(&lines, "dev-%d:%s\n", i, h)
	}
	c, _, _ := passwordChain(t, lines.String(), func(c *Config) { c.PasswordCacheSize = 5 })
	calls, _ := countCompares(c)
	for i := range 20 {
		_, err := c.Authenticate(login(fmt.Sprintf("dev-%d", i), "pw"))
		require.NoError(t, err)
	}
	assert.Equal(t, 5, c.passwords.verified.len())
	_, err := c.Authenticate(login("dev-19", "pw"))
	require.NoError(t, err)
	assert.Equal(t, int64(20), calls.Load(), "the most recent device is remembered")
	_, err = c.Authenticate(login("dev-0", "pw"))
	require.NoError(t, err)
	assert.Equal(t, int64(21), calls.Load(), "the oldest was forgotten")

	c, _, _ = passwordChain(t, lines.String(), func(c *Config) { c.PasswordCacheSize = 0 })
	calls, _ = countCompares(c)
	for range 2 {
		_, err := c.Authenticate(login("dev-1", "pw"))
		require.NoError(t, err)
	}
	assert.Equal(t, int64(2), calls.Load(), "size 0 remembers nothing")
}

func TestFailuresAreThrottledPerUsername(t *testing.T) {
	c, _, clk := passwordChain(t, "dev-1:"+hash(t, "right", bcrypt.MinCost)+"\n", func(c *Config) {
		c.Throttle.UserFailures = 3
		c.Throttle.Window = time.Minute
	})
	calls, _ := countCompares(c)
	for range 3 {
		requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "wrong"))), ReasonWrongPassword)
	}
	f := requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "right"))), ReasonThrottled)
	assert.Equal(t, RateExceeded, f.Code())
	assert.Equal(t, int64(3), calls.Load(), "a throttled attempt costs no bcrypt, right password or not")

	for range 3 {
		requireFailure(t, ignoreID(c.Authenticate(login("ghost", "x"))), ReasonUnknownUser)
	}
	requireFailure(t, ignoreID(c.Authenticate(login("ghost", "x"))), ReasonThrottled)
	assert.Equal(t, int64(6), calls.Load(), "unknown names are throttled alike, so throttling tells nothing")

	clk.Advance(time.Minute)
	_, err := c.Authenticate(login("dev-1", "right"))
	require.NoError(t, err, "the window ends")
	assert.Equal(t, int64(7), calls.Load())
}

func TestARememberedPasswordGetsInWhileItsUsernameIsThrottled(t *testing.T) {
	c, _, _ := passwordChain(t, "dev-1:"+hash(t, "right", bcrypt.MinCost)+"\n", func(c *Config) { c.Throttle.UserFailures = 2 })
	_, err := c.Authenticate(login("dev-1", "right"))
	require.NoError(t, err)
	for range 2 {
		requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "guess"))), ReasonWrongPassword)
	}
	requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "guess"))), ReasonThrottled)
	_, err = c.Authenticate(login("dev-1", "right"))
	require.NoError(t, err, "an attacker guessing at a device's name does not lock out the device")
}

func TestASuccessResetsTheUsernameButNotTheAddress(t *testing.T) {
	c, _, _ := passwordChain(t, "dev-1:"+hash(t, "right", bcrypt.MinCost)+"\n", func(c *Config) {
		c.Throttle.UserFailures = 2
		c.Throttle.AddressFailures = 3
		c.PasswordCacheSize = 0
	})
	from := func(r Request) Request { r.Remote = netip.MustParseAddrPort("192.0.2.1:5000"); return r }
	requireFailure(t, ignoreID(c.Authenticate(from(login("dev-1", "a")))), ReasonWrongPassword)
	_, err := c.Authenticate(from(login("dev-1", "right")))
	require.NoError(t, err)
	requireFailure(t, ignoreID(c.Authenticate(from(login("dev-1", "b")))), ReasonWrongPassword)
	requireFailure(t, ignoreID(c.Authenticate(from(login("dev-1", "c")))), ReasonWrongPassword)
	requireFailure(t, ignoreID(c.Authenticate(from(login("dev-1", "right")))), ReasonThrottled,
		"three failures from the address, though the username's count was reset after two")
}

func TestFailuresAreThrottledPerSourceAddress(t *testing.T) {
	c, _, _ := passwordChain(t, "dev-1:"+hash(t, "right", bcrypt.MinCost)+"\n", func(c *Config) {
		c.Throttle.UserFailures = 100
		c.Throttle.AddressFailures = 3
	})
	calls, _ := countCompares(c)
	at := func(addr, user string) Request {
		r := login(user, "guess")
		r.Remote = netip.MustParseAddrPort(addr)
		return r
	}
	// A password spray: one address, a new name each time.
	for i := range 3 {
		requireFailure(t, ignoreID(c.Authenticate(at("192.0.2.7:4000", fmt.Sprintf("user-%d", i)))), ReasonUnknownUser)
	}
	requireFailure(t, ignoreID(c.Authenticate(at("192.0.2.7:4001", "user-9"))), ReasonThrottled)
	requireFailure(t, ignoreID(c.Authenticate(at("[::ffff:192.0.2.7]:4002", "user-10"))), ReasonThrottled, "an IPv4-mapped address is the same address")
	assert.Equal(t, int64(3), calls.Load())
	requireFailure(t, ignoreID(c.Authenticate(at("192.0.2.8:4000", "user-9"))), ReasonUnknownUser, "another address is not throttled")

	// IPv6: a host holds a /64, so the /64 is the address.
	for i := range 3 {
		requireFailure(t, ignoreID(c.Authenticate(at(fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), "x"))), ReasonUnknownUser)
	}
	requireFailure(t, ignoreID(c.Authenticate(at("[2001:db8:1:2:ffff::1]:1", "y"))), ReasonThrottled)
	requireFailure(t, ignoreID(c.Authenticate(at("[2001:db8:1:3::1]:1", "y"))), ReasonUnknownUser, "another /64 is not throttled")
}

func TestThrottleMemoryIsBoundedWhileNamesAndAddressesCycle(t *testing.T) {
	c, _, _ := passwordChain(t, "dev-1:"+hash(t, "right", bcrypt.MinCost)+"\n", func(c *Config) {
		c.Throttle.AddressFailures = 5
		c.Throttle.MaxEntries = 50
	})
	c.passwords.compare = func([]byte, []byte) error { return bcrypt.ErrMismatchedHashAndPassword } // no bcrypt: only the maps matter
	for i := range 5000 {
		r := login(fmt.Sprintf("name-%d-%s", i, strings.Repeat("x", 1000)), "guess")
		r.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1)
		requireFailure(t, ignoreID(c.Authenticate(r)), ReasonUnknownUser)
	}
	th := c.passwords.throttle
	assert.Equal(t, 50, th.users.len())
	assert.Equal(t, 50, th.addrs.len())
	assert.Len(t, th.users.items, 50)
	assert.Len(t, th.addrs.items, 50)
}

func TestAReloadThatFailsKeepsThePreviousUsers(t *testing.T) {
	c, path, _ := passwordChain(t, "dev-1:"+hash(t, "right", bcrypt.MinCost)+"\n", nil)
	writeFile(t, "", path, "dev-1:"+hash(t, "new", bcrypt.MinCost)+"\nbroken line\n")
	err := c.Load()
	require.ErrorContains(t, err, "line 2: want username:bcrypt-hash")
	_, err = c.Authenticate(login("dev-1", "right"))
	require.NoError(t, err, "the previous users stay")
	requireFailure(t, ignoreID(c.Authenticate(login("dev-1", "new"))), ReasonWrongPassword)
}

func TestPasswordFileErrorsKeepTheirFormat(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"a line without a colon", "alice\n", "auth.password-file: %s line 1: want username:bcrypt-hash"},
		{"a line without a user", ":$2a$04$x\n", "auth.password-file: %s line 1: want username:bcrypt-hash"},
		{"a hash that is no bcrypt hash", "# c\nalice:plain-text-secret-" + strings.Repeat("s", 60) + "\n", `auth.password-file: %s line 2: user "alice": not a bcrypt hash: bcrypt hashes must start with '$'`},
		{"a hash that is too short", "alice:$2a$\n", `auth.password-file: %s line 1: user "alice": not a bcrypt hash: crypto/bcrypt: hashedSecret too short`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "passwd", tc.content)
			_, err := loadPasswordFile(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf(tc.want, path))
			assert.NotContains(t, err.Error(), "plain-text-secret")
		})
	}
	_, err := loadPasswordFile(dir + "/missing")
	require.ErrorContains(t, err, "auth.password-file: open "+dir+"/missing")
}

func TestAnEmptyPasswordFileRefusesEveryoneAtTheDefaultCost(t *testing.T) {
	c, _, _ := passwordChain(t, "# nobody yet\n", nil)
	calls, costs := countCompares(c)
	requireFailure(t, ignoreID(c.Authenticate(login("anyone", "x"))), ReasonUnknownUser)
	assert.Equal(t, int64(1), calls.Load())
	assert.Equal(t, []int{bcrypt.DefaultCost}, *costs)
}

func TestAChainNeverLoadedRefusesEveryPassword(t *testing.T) {
	cfg := defaults()
	cfg.PasswordFile = "/unused"
	c, err := New(cfg)
	require.NoError(t, err)
	c.passwords.compare = func([]byte, []byte) error { return nil } // even a comparison that accepts all
	requireFailure(t, ignoreID(c.Authenticate(login("anyone", "x"))), ReasonUnknownUser)
}

func TestConcurrentGuessesCannotOutrunTheThrottle(t *testing.T) {
	c, _, _ := passwordChain(t, "dev-1:"+hash(t, "right", bcrypt.MinCost)+"\n", func(c *Config) { c.Throttle.UserFailures = 3 })
	var calls atomic.Int64
	release := make(chan struct{})
	c.passwords.compare = func([]byte, []byte) error {
		calls.Add(1)
		<-release // every admitted check is still running when the next arrives
		return bcrypt.ErrMismatchedHashAndPassword
	}
	var throttled atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.Authenticate(login("dev-1", "guess")); err.(*Failure).Reason == ReasonThrottled {
				throttled.Add(1)
			}
		})
	}
	require.Eventually(t, func() bool { return throttled.Load() == 17 }, 10*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	assert.Equal(t, int64(3), calls.Load(), "only the limit's worth of guesses is checked")
}

func TestBcryptChecksRunAtMostPasswordChecksAtOnceAndCachedPasswordsNeverWait(t *testing.T) {
	for _, tc := range []struct {
		name   string
		checks int // 0: the default
		want   int
	}{
		{"the default, half the cores", 0, max(1, runtime.GOMAXPROCS(0)/2)},
		{"configured", 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lines strings.Builder
			const devices = 8
			h := hash(t, "pw", bcrypt.MinCost)
			for i := range devices + 1 {
				fmt.Fprintf(&lines, "dev-%d:%s\n", i, h)
			}
			c, _, _ := passwordChain(t, lines.String(), func(c *Config) { c.PasswordChecks = tc.checks })
			// dev-8 connected before: its password is cached.
			_, err := c.Authenticate(login(fmt.Sprintf("dev-%d", devices), "pw"))
			require.NoError(t, err)

			var running, most atomic.Int64
			release := make(chan struct{})
			inner := c.passwords.compare
			c.passwords.compare = func(h, p []byte) error {
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				<-release
				running.Add(-1)
				return inner(h, p)
			}
			var wg sync.WaitGroup
			errs := make([]error, devices)
			for i := range devices {
				wg.Go(func() { _, errs[i] = c.Authenticate(login(fmt.Sprintf("dev-%d", i), "pw")) })
			}
			require.Eventually(t, func() bool { return running.Load() == int64(tc.want) }, 10*time.Second, time.Millisecond)

			// While every slot is taken, a cached password gets in.
			_, err = c.Authenticate(login(fmt.Sprintf("dev-%d", devices), "pw"))
			require.NoError(t, err)

			close(release)
			wg.Wait()
			require.NoError(t, errors.Join(errs...))
			assert.Equal(t, int64(tc.want), most.Load(), "bcrypt comparisons at once")
		})
	}
}
