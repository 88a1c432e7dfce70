package conformance

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// TestWillOnAbnormalClose: a connection closed without DISCONNECT gets its
// Will Message published [MQTT-3.1.2-8].
func TestWillOnAbnormalClose(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		wt := id("will")
		watch := l.dial(t, c.Addr(), opts{ID: id("watch"), Subs: []sub{{wt, 1}}})
		w := l.dial(t, c.Addr(), opts{ID: id("dying"), Will: &will{Topic: wt, Payload: "gone", QoS: 1}})
		w.Drop()
		m := next(t, watch)
		require.Equal(t, wt, m.Topic)
		require.Equal(t, "gone", m.Payload)
		require.EqualValues(t, 1, m.QoS)
	})
}

// TestNoWillAfterDisconnect: after a normal DISCONNECT the Will Message is
// discarded [MQTT-3.1.2-10] (3.1.1) / [MQTT-3.1.2-10] (5.0, reason 0x00).
// mosquitto_sub sends reason 0x04 (with will) on MQTT 5 when stopped, so
// the mosquitto case uses mosquitto_pub, which disconnects with 0x00 after
// its message.
func TestNoWillAfterDisconnect(t *testing.T) {
	forLibs(t, both, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		wt := id("will")
		watch := l.dial(t, c.Addr(), opts{ID: id("watch"), Subs: []sub{{wt, 1}}})
		if l.name == "mosquitto" {
			mosquittoPub(t, l.version, c.Addr(), id("polite"), id("elsewhere"), "x", 1, false,
				"--will-topic", wt, "--will-payload", "gone", "--will-qos", "1")
		} else {
			w := l.dial(t, c.Addr(), opts{ID: id("polite"), Will: &will{Topic: wt, Payload: "gone", QoS: 1}})
			w.Disconnect()
		}
		none(t, watch)
	})
}

// TestWillDelay: a Will Delay Interval postpones the will
// [MQTT-3.1.3-9]: it is not published before the delay, and not at all if
// the client reconnects within it.
func TestWillDelay(t *testing.T) {
	forLibs(t, []byte{v5}, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		wt := id("will")
		watch := l.dial(t, c.Addr(), opts{ID: id("watch"), Subs: []sub{{wt, 1}}})

		t.Run("published after the delay", func(t *testing.T) {
			w := l.dial(t, c.Addr(), opts{ID: id("late"), Persistent: true, Will: &will{Topic: wt, Payload: "late", QoS: 1, Delay: 3}})
			w.Drop()
			none(t, watch) // within 1.5 s of a 3 s delay
			require.Equal(t, "late", next(t, watch).Payload)
		})
		t.Run("not published after a reconnect within the delay", func(t *testing.T) {
			cid := id("back")
			w := l.dial(t, c.Addr(), opts{ID: cid, Persistent: true, Will: &will{Topic: wt, Payload: "back", QoS: 1, Delay: 2}})
			w.Drop()
			l.dial(t, c.Addr(), opts{ID: cid, Persistent: true})
			none(t, watch)
			none(t, watch) // 3 s in all, past the 2 s delay
		})
	})
}

// TestAWillIsDueWhenTheSessionEndsBeforeItsDelay: a will is published at
// the smaller of its Will Delay Interval and the session's expiry, measured
// from the end of the connection, also when the expiry is the smaller
// [MQTT-3.1.3-9]: not before the session ends, and the session is gone
// after it.
func TestAWillIsDueWhenTheSessionEndsBeforeItsDelay(t *testing.T) {
	c := start(t, clustertest.Options{})
	wt, cid := id("will"), id("short")
	watch := dialPaho5(t, c.Addr(), opts{ID: id("watch"), Subs: []sub{{wt, 1}}})
	r, ack := rawConnect(t, c.Addr(), v5, cid, func(pk *packets.Packet) {
		pk.Connect.Clean = false
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3, true
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillQos = true, wt, []byte("gone"), 1
		pk.Connect.WillProperties.WillDelayInterval = 3600
	})
	require.Equal(t, packets.CodeSuccess.Code, ack.ReasonCode)
	closed := time.Now()
	_ = r.Conn.Close() // no DISCONNECT: the will is due when the 3 s session ends
	m := next(t, watch)
	require.Equal(t, "gone", m.Payload)
	require.GreaterOrEqual(t, time.Since(closed), 3*time.Second, "not before the session ended")
	_, ack = rawConnect(t, c.Addr(), v5, cid, func(pk *packets.Packet) {
		pk.Connect.Clean = false
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
	})
	require.False(t, ack.SessionPresent, "the session ended with its will")
	none(t, watch) // published once
}
