package frontend

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeConn is a conn over one end of a net.Pipe, whose reads wait until
// something ends them.
func pipeConn(t *testing.T, d *deadlines) *conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return &conn{Conn: a, wheel: d}
}

// readEnded reports how a read of c ended within a second: its error, or
// nil if it still waits.
func readEnded(c *conn) error {
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Second):
		return nil
	}
}

// The wheel ends a read only once its deadline has passed, never before;
// a deadline moved later (every packet moves it) is kept to, one moved
// earlier too, and a connection without a deadline, or that ended, is no
// longer held.
func TestTheDeadlineWheelEndsAReadOnlyOnceItsDeadlinePassed(t *testing.T) {
	start := time.Unix(1_764_000_000, 0)
	now := start
	d := newDeadlines()
	d.now = func() time.Time { return now }

	soon, moved, earlier, dropped := pipeConn(t, d), pipeConn(t, d), pipeConn(t, d), pipeConn(t, d)
	d.set(soon, start.Add(time.Second))
	d.set(moved, start.Add(time.Second))
	d.set(earlier, start.Add(time.Minute))
	d.set(dropped, start.Add(time.Second))
	require.Equal(t, 4, d.filed())

	due := func() []*conn {
		reads, credentials := d.due()
		assert.Empty(t, credentials)
		return reads
	}
	now = start.Add(time.Second - time.Millisecond)
	assert.Empty(t, due(), "nothing is due a millisecond before its deadline")

	d.set(moved, start.Add(3*time.Second))           // a packet came
	d.set(earlier, start.Add(1500*time.Millisecond)) // a shorter keep-alive now
	d.set(dropped, time.Time{})                      // ended
	now = start.Add(time.Second)
	assert.ElementsMatch(t, []*conn{soon}, due(), "due at its deadline: only the one not moved")
	now = start.Add(1500 * time.Millisecond)
	assert.ElementsMatch(t, []*conn{earlier}, due(), "the deadline moved earlier is kept to")
	now = start.Add(2999 * time.Millisecond)
	assert.Empty(t, due(), "the deadline moved later is not due at its old tick, nor before its new one")
	assert.Equal(t, 1, d.filed(), "only the moved one is still held")
	now = start.Add(3 * time.Second)
	assert.ElementsMatch(t, []*conn{moved}, due())
	assert.Zero(t, d.filed(), "what expired or ended is not held")

	// What due returns is woken as a socket deadline would wake it.
	assert.Nil(t, readEnded(soon), "the read waits until the wheel ends it")
	soon.expire()
	err := readEnded(soon)
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrDeadlineExceeded), "a timeout, as a socket deadline gives: %v", err)
}

// A connection closing is never given a deadline: Close woke its read
// already, and the wheel must not hold it.
func TestAClosingConnectionIsNotArmed(t *testing.T) {
	d := newDeadlines()
	c := pipeConn(t, d)
	c.arm(time.Now().Add(time.Hour))
	assert.Equal(t, 1, d.filed())

	closing := pipeConn(t, d)
	_ = closing.Close()
	closing.arm(time.Now().Add(time.Hour))
	assert.Equal(t, 1, d.filed(), "a closing connection is not armed")
}

// A credential's expiry is kept by the wheel beside the read deadline: it
// is called once, when the credential expires, whatever the read deadline
// does meanwhile, and not at all for a connection that ended.
func TestTheDeadlineWheelCallsACredentialsExpiryOnce(t *testing.T) {
	start := time.Unix(1_764_000_000, 0)
	now := start
	d := newDeadlines()
	d.now = func() time.Time { return now }
	calls := map[string]int{}
	expiry := func(name string) func() { return func() { calls[name]++ } }
	run := func() []*conn {
		reads, credentials := d.due()
		for _, f := range credentials {
			f()
		}
		return reads
	}

	token, ended := pipeConn(t, d), pipeConn(t, d)
	d.set(token, start.Add(90*time.Second)) // its keep-alive
	d.setCredential(token, start.Add(10*time.Second), expiry("token"))
	d.set(ended, start.Add(90*time.Second))
	d.setCredential(ended, start.Add(10*time.Second), expiry("ended"))
	d.forget(ended)

	now = start.Add(5 * time.Second)
	d.set(token, now.Add(90*time.Second)) // a packet came
	assert.Empty(t, run())
	now = start.Add(10*time.Second - time.Millisecond)
	assert.Empty(t, run())
	assert.Empty(t, calls, "not before the credential expires")
	now = start.Add(10 * time.Second)
	assert.Empty(t, run(), "the read deadline is not due")
	assert.Equal(t, map[string]int{"token": 1}, calls, "called at its expiry; not for the connection that ended")
	assert.Equal(t, 1, d.filed(), "still held for its read deadline")
	now = start.Add(95 * time.Second)
	assert.ElementsMatch(t, []*conn{token}, run())
	assert.Equal(t, map[string]int{"token": 1}, calls, "called once")
	assert.Zero(t, d.filed())
}

// At the defaults mqtt.idle-timeout (1800 s) is exactly 1.5 ×
// mqtt.max-keepalive (1200 s), so a client held to the longest keep-alive
// has both bounds at once. Its keep-alive is what it is told about (MQTT 5's
// Server Keep Alive), so a silent one is closed for its keep-alive
// (keepalive_timeout); only a deadline further than mqtt.idle-timeout (an
// MQTT 3.1.1 client asking more than 1200 s, or none) is the idle bound's
// (idle_timeout). Both are DISCONNECT 0x8D on MQTT 5.
func TestAtTheDefaultsTheLongestKeepAliveIsNotTakenForTheIdleBound(t *testing.T) {
	require.Equal(t, DefaultIdleTimeout, DefaultMaxKeepAlive*3/2, "the defaults this test is about")
	for _, tc := range []struct {
		name      string
		keepAlive time.Duration // as mochi sets the read deadline: 1.5 × keep-alive ahead; 0 none
		idled     bool
	}{
		{"the longest keep-alive, 1200 s", DefaultMaxKeepAlive, false},
		{"an MQTT 3.1.1 keep-alive of 1201 s", DefaultMaxKeepAlive + time.Second, true},
		{"no keep-alive (0)", 0, true},
		{"a keep-alive of 60 s", time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := pipeConn(t, nil)
			c.idle = DefaultIdleTimeout
			var deadline time.Time
			if tc.keepAlive > 0 {
				deadline = time.Now().Add(tc.keepAlive * 3 / 2)
			}
			got := c.bound(deadline)
			assert.Equal(t, tc.idled, c.idled.Load(), "held by mqtt.idle-timeout")
			assert.False(t, got.After(time.Now().Add(DefaultIdleTimeout)), "no deadline past mqtt.idle-timeout")
			c.setClient(mqtt.New(nil).NewClient(c.Conn, "t", "silent", true))
			code, label, owed := c.disconnectReason(os.ErrDeadlineExceeded)
			assert.True(t, owed)
			assert.Equal(t, packets.ErrKeepAliveTimeout, code)
			assert.Equal(t, map[bool]string{false: "keepalive_timeout", true: "idle_timeout"}[tc.idled], label)
		})
	}
}
