package conformance

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// TestSessionExpiry: a session ends when its Session Expiry Interval has
// passed after the connection closed [MQTT-3.1.2-23]: a later connection
// finds no session (Session Present 0 [MQTT-3.2.2-3]) and none of its
// subscriptions or queued messages.
func TestSessionExpiry(t *testing.T) {
	forLibs(t, []byte{v5}, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f, cid := id("expiry"), id("shortlived")
		s := l.dial(t, c.Addr(), opts{ID: cid, Persistent: true, Expiry: 1, Subs: []sub{{f, 1}}})
		s.Disconnect()
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		p.Publish(f, "queued", 1, false)
		time.Sleep(3 * time.Second) // past the 1 s expiry
		s = l.dial(t, c.Addr(), opts{ID: cid, Persistent: true, Expiry: 1})
		if present, ok := s.SessionPresent(); ok {
			require.False(t, present, "Session Present after the session expired")
		}
		p.Publish(f, "after", 1, false)
		none(t, s)
	})
}

// TestCleanStartRace: a message published for the old session just before
// a clean start must not reach the new session, which has no subscription
// [MQTT-3.1.2-6] (3.1.1) / [MQTT-3.1.2-4] (5.0). Repeated to catch the
// dispatcher routing it after the session was reset.
func TestCleanStartRace(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		for range 5 {
			f, cid := id("clean"), id("durable")
			s := l.dial(t, c.Addr(), opts{ID: cid, Persistent: true, Subs: []sub{{f, 1}}})
			s.Disconnect()
			p.Publish(f, "queued", 1, false)
			s = l.dial(t, c.Addr(), opts{ID: cid})
			select {
			case m := <-s.Messages():
				t.Fatalf("clean session got %+v", m)
			case <-time.After(300 * time.Millisecond):
			}
		}
	})
}
