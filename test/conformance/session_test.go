package conformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// TestPersistentSessionKeepsSubscriptionsAndQueue: a session with Clean
// Session 0 (3.1.1) / Clean Start 0 and an expiry (5.0) keeps its
// subscriptions and the QoS 1 messages published while it was offline
// [MQTT-3.1.2-4] [MQTT-3.1.2-5] (3.1.1) / [MQTT-3.1.2-5] [MQTT-3.1.2-23]
// (5.0), delivered in order [MQTT-4.6.0-6]; Session Present is 0 without
// a session and 1 when it resumes [MQTT-3.2.2-3] [MQTT-3.2.2-2] (3.1.1) /
// [MQTT-3.2.2-3] (5.0). mosquitto does not print Session Present: there
// the queued messages show that the session was resumed.
func TestPersistentSessionKeepsSubscriptionsAndQueue(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f, cid := id("persist"), id("durable")
		s := l.dial(t, c.Addr(), opts{ID: cid, Persistent: true, Subs: []sub{{f + "/+", 1}}})
		if present, ok := s.SessionPresent(); ok {
			require.False(t, present, "Session Present without a previous session")
		}
		s.Disconnect()
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		for i := range 3 {
			p.Publish(f+"/x", fmt.Sprint(i), 1, false)
		}
		s = l.dial(t, c.Addr(), opts{ID: cid, Persistent: true})
		if present, ok := s.SessionPresent(); ok {
			require.True(t, present, "Session Present when resuming")
		}
		for i := range 3 {
			m := next(t, s)
			require.Equal(t, fmt.Sprint(i), m.Payload, "queued messages in order")
			require.EqualValues(t, 1, m.QoS)
		}
		// The subscription itself survived too.
		p.Publish(f+"/y", "live", 1, false)
		require.Equal(t, "live", next(t, s).Payload)
	})
}

// TestCleanSessionDiscardsState: connecting with Clean Session 1 / Clean
// Start 1 discards the previous session [MQTT-3.1.2-6] (3.1.1) /
// [MQTT-3.1.2-4] (5.0) and Session Present is 0 [MQTT-3.2.2-1] (3.1.1) /
// [MQTT-3.2.2-2] (5.0).
func TestCleanSessionDiscardsState(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f, cid := id("clean"), id("durable")
		s := l.dial(t, c.Addr(), opts{ID: cid, Persistent: true, Subs: []sub{{f, 1}}})
		s.Disconnect()
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		p.Publish(f, "queued", 1, false)
		// Wait until the dispatcher gave it to the old session, so the
		// clean start has state to discard (the race of a message routed
		// during the clean start is TestCleanStartRace): in its queue, or
		// in its inflight hash when the dispatcher routed it while the
		// server had not yet seen the DISCONNECT (handed over to the
		// connection, which was gone; a resume would resend it).
		require.Eventually(t, func() bool {
			ctx := context.Background()
			q, err := c.Redis.LLen(ctx, "fg:{"+cid+"}:q").Result()
			if err != nil {
				return false
			}
			in, err := c.Redis.HLen(ctx, "fg:{"+cid+"}:inflight").Result()
			return err == nil && q+in > 0
		}, waitFor, 10*time.Millisecond, "message given to the offline session")
		s = l.dial(t, c.Addr(), opts{ID: cid})
		if present, ok := s.SessionPresent(); ok {
			require.False(t, present, "Session Present after a clean start")
		}
		p.Publish(f, "after", 1, false)
		none(t, s)
	})
}
