package conformance

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// awaitRetained subscribes fresh clients to filter until one receives a
// message for which ok is true: the dispatcher stores retained messages
// asynchronously, after the publisher's PUBACK. It fails after waitFor.
func awaitRetained(t *testing.T, l lib, addr, filter string, qos byte, ok func(msg) bool) msg {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		s := l.dial(t, addr, opts{ID: id("fresh"), Subs: []sub{{filter, qos}}})
		select {
		case m := <-s.Messages():
			s.Disconnect()
			if ok(m) {
				return m
			}
		case <-time.After(500 * time.Millisecond):
			s.Disconnect()
		}
	}
	t.Fatalf("no matching retained message for %q within %s", filter, waitFor)
	return msg{}
}

// TestRetainedMessages: a retained message is stored [MQTT-3.3.1-5] and
// sent to new subscriptions, exact and wildcard, with RETAIN 1
// [MQTT-3.3.1-6] [MQTT-3.3.1-8] (3.1.1) / [MQTT-3.3.1-9] (5.0); a newer
// one replaces it; messages matching an established subscription carry
// RETAIN 0 [MQTT-3.3.1-9] (3.1.1) / [MQTT-3.3.1-12] (5.0); a zero-byte
// retained message removes it and is not stored [MQTT-3.3.1-10]
// [MQTT-3.3.1-11] (3.1.1) / [MQTT-3.3.1-6] [MQTT-3.3.1-7] (5.0).
func TestRetainedMessages(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		r := id("ret")
		live := l.dial(t, c.Addr(), opts{ID: id("live"), Subs: []sub{{r + "/#", 1}}})
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		p.Publish(r+"/a", "first", 1, true)
		p.Publish(r+"/a", "second", 1, true)

		// The established subscription gets both with RETAIN 0. Its own
		// retained lookup, which runs after its SUBACK, may also find one
		// that the dispatcher stored meanwhile and send it with RETAIN 1
		// (docs/pubsub-design.md, "Retained messages"): a copy, never
		// instead of the live one.
		var forwarded []string
		for len(forwarded) < 2 {
			m := next(t, live)
			if m.Retain {
				require.Contains(t, []string{"first", "second"}, m.Payload, "a retained copy of a message published after the SUBACK")
				continue
			}
			forwarded = append(forwarded, m.Payload)
		}
		require.Equal(t, []string{"first", "second"}, forwarded, "RETAIN 0 on the messages for an established subscription, in order")
		for _, filter := range []string{r + "/a", r + "/+", r + "/#"} {
			m := awaitRetained(t, l, c.Addr(), filter, 1, func(m msg) bool { return m.Payload == "second" })
			require.True(t, m.Retain, "RETAIN 1 on a retained message sent at subscribe (%s)", filter)
			require.Equal(t, r+"/a", m.Topic)
			require.EqualValues(t, 1, m.QoS)
		}

		// Delete it, then retain a marker from the same publisher: the
		// cluster routes one publisher's messages in order, so once the
		// marker is visible the deletion has been applied.
		p.Publish(r+"/a", "", 1, true)
		p.Publish(r+"/marker", "m", 1, true)
		awaitRetained(t, l, c.Addr(), r+"/marker", 1, func(m msg) bool { return true })
		s := l.dial(t, c.Addr(), opts{ID: id("fresh"), Subs: []sub{{r + "/#", 1}}})
		m := next(t, s)
		require.Equal(t, r+"/marker", m.Topic, "the deleted retained message is gone")
		none(t, s)
	})
}
