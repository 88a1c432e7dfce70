package conformance

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// The session and subscription bounds of issue 15 (docs/limits.md), through
// a whole cluster with its default settings unless a test says otherwise:
// the exact answer on MQTT 5 and 3.1.1, the metric that counts it, and
// clients beside the refused one undisturbed.

// counter is the sum of the series of a counter on the frontends' /metrics
// whose labels include label (e.g. `reason="topic_limit"`).
func counter(t *testing.T, c *clustertest.Cluster, name, label string) float64 {
	t.Helper()
	sum := 0.0
	for _, f := range c.Frontends {
		resp, err := http.Get("http://" + f.Server.OpsAddr() + "/metrics")
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n") {
			series, v, ok := strings.Cut(line, " ")
			if !ok || (series != name && !strings.HasPrefix(series, name+"{")) || !strings.Contains(series, label) {
				continue
			}
			n, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, line)
			sum += n
		}
	}
	return sum
}

// rawPersistent connects a persistent session (MQTT 5: expiry 3600 s).
func rawPersistent(t *testing.T, addr string, version byte, clientID string) (*testkit.Raw, packets.Packet) {
	t.Helper()
	return rawConnect(t, addr, version, clientID, func(pk *packets.Packet) {
		pk.Connect.Clean = false
		if version == v5 {
			pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
		}
	})
}

// refusedCode is what a refused filter gets: code on MQTT 5, 0x80 Failure on
// 3.1.1 [MQTT-3.9.3-2] (v3.1.1), which has no other.
func refusedCode(version byte, code packets.Code) byte {
	if version == v5 {
		return code.Code
	}
	return packets.ErrUnspecifiedError.Code
}

// TestSubscriptionsBeyondTheSessionsBoundAreRefused: with the default bound
// (session.max-subscriptions 100), a SUBSCRIBE filter that would be a
// session's 101st gets SUBACK 0x97 Quota exceeded (MQTT 5) / 0x80 Failure
// (3.1.1), for that filter only: one Reason Code per filter, in order
// [MQTT-3.8.4-6] [MQTT-3.9.3-1] (v5) / [MQTT-3.8.4-5] [MQTT-3.9.3-1]
// (v3.1.1). A filter the session already has is replaced, never counted
// [MQTT-3.8.4-3]. The bound holds for the session on another node, its
// subscriptions keep delivering, and another client is undisturbed.
func TestSubscriptionsBeyondTheSessionsBoundAreRefused(t *testing.T) {
	c := start(t, clustertest.Options{Frontends: 2})
	const bound = 100 // the default
	for _, version := range both {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			before := counter(t, c, "fleetgate_delivery_subscribe_failures_total", `reason="quota_exceeded"`)
			prefix, cid := id("quota"), id("many")
			r, _ := rawPersistent(t, c.Frontends[0].Addr, version, cid)
			var filters []packets.Subscription
			for i := range bound + 1 {
				filters = append(filters, packets.Subscription{Filter: fmt.Sprintf("%s/%d", prefix, i), Qos: 1})
			}
			ack := rawSubscribe(t, r, 1, 0, filters...)
			require.Len(t, ack.ReasonCodes, bound+1)
			for i := range bound {
				require.Equal(t, byte(1), ack.ReasonCodes[i], "filter %d is granted", i)
			}
			quota := refusedCode(version, packets.ErrQuotaExceeded)
			require.Equal(t, quota, ack.ReasonCodes[bound], "the 101st filter is refused")

			ack = rawSubscribe(t, r, 2, 0, packets.Subscription{Filter: prefix + "/0", Qos: 0},
				packets.Subscription{Filter: prefix + "/new", Qos: 1})
			require.Equal(t, []byte{0, quota}, ack.ReasonCodes, "a replacement at the bound is granted, a new filter is not")

			// The same session on the other node: the bound is the
			// session's, held in Redis.
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
			r, ack = rawPersistent(t, c.Frontends[1].Addr, version, cid)
			require.True(t, ack.SessionPresent)
			ack = rawSubscribe(t, r, 3, 0, packets.Subscription{Filter: prefix + "/other-node", Qos: 1})
			require.Equal(t, []byte{quota}, ack.ReasonCodes, "the bound holds on every node")
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 4,
				Filters: packets.Subscriptions{{Filter: prefix + "/1"}}})
			require.Equal(t, packets.Unsuback, rawRecv(t, r).FixedHeader.Type)
			ack = rawSubscribe(t, r, 5, 0, packets.Subscription{Filter: prefix + "/other-node", Qos: 1})
			require.Equal(t, []byte{1}, ack.ReasonCodes, "an unsubscribe frees a place")

			// Its subscriptions keep delivering; a client beside it is
			// undisturbed.
			other, _ := rawConnect(t, c.Frontends[0].Addr, version, id("beside"), nil)
			require.Equal(t, []byte{1}, rawSubscribe(t, other, 1, 0, packets.Subscription{Filter: prefix + "/2", Qos: 1}).ReasonCodes)
			pub := dialPaho5(t, c.Frontends[0].Addr, opts{ID: id("pub")})
			pub.Publish(prefix+"/2", "after", 1, false)
			require.Equal(t, "after", string(rawMessage(t, r).Payload))
			require.Equal(t, "after", string(rawMessage(t, other).Payload))

			require.Eventually(t, func() bool {
				return counter(t, c, "fleetgate_delivery_subscribe_failures_total", `reason="quota_exceeded"`)-before == 3
			}, waitFor, 50*time.Millisecond, "each refused filter is counted once")
		})
	}
}

// TestTopicsOverTheLimitsAreRefused: with the default limits
// (mqtt.max-topic-length 1024 bytes, mqtt.max-topic-levels 32), a
// SUBSCRIBE filter over them gets 0x8F Topic Filter invalid (MQTT 5) / 0x80
// (3.1.1) for that filter only [MQTT-3.8.4-6] [MQTT-3.9.3-1]; an UNSUBSCRIBE
// filter 0x8F (MQTT 5, [MQTT-3.11.3-1]); a PUBLISH to such a topic name
// PUBACK 0x90 Topic Name invalid (MQTT 5, section 3.4.2.1) with the
// connection kept, or a closed connection on 3.1.1, which has no negative
// acknowledgement [MQTT-3.3.5-2]. Nothing reaches Kafka or a subscriber;
// the connection's and other clients' next messages flow.
func TestTopicsOverTheLimitsAreRefused(t *testing.T) {
	c := start(t, clustertest.Options{})
	deep := strings.Repeat("l/", 32) + "x" // 33 levels
	for _, version := range both {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			prefix := id("limits")
			long := prefix + "/" + strings.Repeat("x", 1024-len(prefix)) // 1025 bytes
			subBefore := counter(t, c, "fleetgate_delivery_subscribe_failures_total", `reason="topic_limit"`)
			pubBefore := counter(t, c, "fleetgate_ingest_records_failed_total", `reason="topic_limit"`)
			willBefore := counter(t, c, "fleetgate_frontend_auth_failures_total", `reason="will_topic_limit"`)

			watcher := dialPaho5(t, c.Addr(), opts{ID: id("watcher"), Subs: []sub{{prefix + "/#", 1}}})
			r, _ := rawConnect(t, c.Addr(), version, id("limited"), nil)
			invalid := refusedCode(version, packets.ErrTopicFilterInvalid)
			ack := rawSubscribe(t, r, 1, 0,
				packets.Subscription{Filter: prefix + "/" + strings.Repeat("+/", 30) + "#", Qos: 1}, // 32 levels
				packets.Subscription{Filter: prefix + "/" + deep, Qos: 1},
				packets.Subscription{Filter: long, Qos: 1},
				packets.Subscription{Filter: "$share/g/" + long[:1024], Qos: 1})
			require.Equal(t, []byte{1, invalid, invalid, 1}, ack.ReasonCodes,
				"at the limits granted, over them refused; a shared filter is measured without $share/<group>/")
			if version == v5 {
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 2,
					Filters: packets.Subscriptions{{Filter: long}}})
				unsuback := rawRecv(t, r)
				require.Equal(t, packets.Unsuback, unsuback.FixedHeader.Type)
				require.Equal(t, []byte{packets.ErrTopicFilterInvalid.Code}, unsuback.ReasonCodes)
			}

			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 3,
				TopicName: long, Payload: []byte("too long")})
			if version == v5 {
				puback := rawRecv(t, r)
				require.Equal(t, packets.Puback, puback.FixedHeader.Type)
				require.Equal(t, uint16(3), puback.PacketID)
				require.Equal(t, packets.ErrTopicNameInvalid.Code, puback.ReasonCode)
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 4,
					TopicName: prefix + "/" + deep, Payload: []byte("too deep")})
				puback = rawRecv(t, r)
				require.Equal(t, packets.ErrTopicNameInvalid.Code, puback.ReasonCode)
				rawPublish(t, r, 5, prefix+"/fine", "fine", nil) // the connection goes on
			} else {
				_, err := r.Recv(waitFor)
				require.ErrorIs(t, err, io.EOF, "MQTT 3.1.1: the connection is closed, no PUBACK")
				r, _ = rawConnect(t, c.Addr(), version, id("limited-again"), nil)
				rawPublish(t, r, 5, prefix+"/fine", "fine", nil)
			}
			// A will topic over the limits refuses the CONNECT: MQTT 5
			// CONNACK 0x90 (Topic Name invalid, section 3.2.2.2); MQTT
			// 3.1.1 has no return code for it, so the connection is closed
			// without a CONNACK [MQTT-3.2.2-6].
			wr := testkit.DialRaw(t, c.Addr(), version)
			wr.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
				Connect: authed(packets.ConnectParams{ClientIdentifier: id("long-will"), Clean: true, Keepalive: 30,
					WillFlag: true, WillTopic: prefix + "/" + deep, WillPayload: []byte("gone"), WillQos: 1})})
			if version == v5 {
				connack := rawRecv(t, wr)
				require.Equal(t, packets.Connack, connack.FixedHeader.Type)
				require.Equal(t, packets.ErrTopicNameInvalid.Code, connack.ReasonCode)
			}
			_, err := wr.Recv(waitFor)
			require.ErrorIs(t, err, io.EOF, "the refused connection is closed")

			m := next(t, watcher)
			require.Equal(t, prefix+"/fine", m.Topic, "the refused publishes reached no subscriber (nor Kafka)")
			none(t, watcher)

			refusedPublishes := 1.0
			if version == v5 {
				refusedPublishes = 2 // the deep one too, on the same connection
			}
			require.Eventually(t, func() bool {
				return counter(t, c, "fleetgate_delivery_subscribe_failures_total", `reason="topic_limit"`)-subBefore == 2 &&
					counter(t, c, "fleetgate_ingest_records_failed_total", `reason="topic_limit"`)-pubBefore == refusedPublishes &&
					counter(t, c, "fleetgate_frontend_auth_failures_total", `reason="will_topic_limit"`)-willBefore == 1
			}, waitFor, 50*time.Millisecond, "each refused filter, publish and will is counted")
		})
	}
}

// sessionTTL is how long Redis keeps clientID's session.
func sessionTTL(t *testing.T, c *clustertest.Cluster, clientID string) time.Duration {
	t.Helper()
	ttl, err := c.Redis.PTTL(context.Background(), "fg:{"+clientID+"}:s").Result()
	require.NoError(t, err)
	return ttl
}

// TestSessionExpiryIsCappedByDefault: with the default session.max-expiry
// (7 days), an MQTT 5 client asking more, or never (0xFFFFFFFF), gets a
// CONNACK whose Session Expiry Interval says the 604,800 s the server uses
// (MQTT 5 section 3.2.2.3.2, which has no normative statement number), and
// its session expires then; a client asking less gets no such property and
// keeps its own. An MQTT 3.1.1 persistent session, kept after the
// connection [MQTT-3.1.2-4] (v3.1.1), expires after the default
// session.mqtt3-expiry (7 days) instead of never.
func TestSessionExpiryIsCappedByDefault(t *testing.T) {
	c := start(t, clustertest.Options{})
	week := uint32(7 * 24 * 3600)
	for _, tc := range []struct {
		name   string
		asked  uint32
		capped bool
	}{
		{"never is capped", math.MaxUint32, true},
		{"more than a week is capped", week + 1, true},
		{"less is kept", 3600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cid := id("expiry")
			before := counter(t, c, "fleetgate_delivery_session_expiry_capped_total", "")
			r, ack := rawConnect(t, c.Addr(), v5, cid, func(pk *packets.Packet) {
				pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = tc.asked, true
			})
			want := tc.asked
			if tc.capped {
				want = week
				require.True(t, ack.Properties.SessionExpiryIntervalFlag, "the CONNACK says the interval the server uses")
				require.Equal(t, week, ack.Properties.SessionExpiryInterval)
			} else {
				require.False(t, ack.Properties.SessionExpiryIntervalFlag, "the client's own interval needs no answer")
			}
			capped := 0.0
			if tc.capped {
				capped = 1
			}
			require.Equal(t, capped, counter(t, c, "fleetgate_delivery_session_expiry_capped_total", "")-before, "counted when capped")
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
			require.Eventually(t, func() bool {
				ttl := sessionTTL(t, c, cid)
				return ttl > time.Duration(want)*time.Second-time.Minute && ttl <= time.Duration(want)*time.Second
			}, waitFor, 20*time.Millisecond, "the session expires after %d s", want)
		})
	}
	t.Run("MQTT 3.1.1 persistent sessions expire", func(t *testing.T) {
		cid := id("expiry311")
		r, _ := rawPersistent(t, c.Addr(), v311, cid)
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		require.Eventually(t, func() bool {
			ttl := sessionTTL(t, c, cid)
			return ttl > time.Duration(week)*time.Second-time.Minute && ttl <= time.Duration(week)*time.Second
		}, waitFor, 20*time.Millisecond, "a persistent 3.1.1 session is kept a week, then ends")
	})
}

// TestTheCappedExpiryIsTheOneUsed: with session.max-expiry 2s and
// session.mqtt3-expiry 1s, the session ends after the capped interval, also
// when a DISCONNECT asks for a longer one ([MQTT-3.14.2-2] allows a change
// of a non-zero interval; the cap applies to it too), and a will with a
// longer delay is published when the capped session ends
// ([MQTT-3.1.3-9]: the delay ends with the session). A session present
// after the expiry would break [MQTT-3.2.2-3].
func TestTheCappedExpiryIsTheOneUsed(t *testing.T) {
	c := start(t, clustertest.Options{Frontend: func(_ int, cfg *frontend.Config) {
		cfg.Session.MaxExpiry, cfg.Session.MQTT3Expiry = 2*time.Second, time.Second
	}})
	t.Run("a DISCONNECT asking more is capped", func(t *testing.T) {
		cid := id("capped")
		r, ack := rawConnect(t, c.Addr(), v5, cid, func(pk *packets.Packet) {
			pk.Connect.Clean = false
			pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
		})
		require.Equal(t, uint32(2), ack.Properties.SessionExpiryInterval)
		d := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}
		d.Properties.SessionExpiryInterval, d.Properties.SessionExpiryIntervalFlag = 7200, true
		r.Send(d)
		require.Eventually(t, func() bool { return sessionTTL(t, c, cid) > 0 }, waitFor, 20*time.Millisecond)
		assert.LessOrEqual(t, sessionTTL(t, c, cid), 2*time.Second)
		time.Sleep(2500 * time.Millisecond) // past the capped expiry
		_, ack = rawConnect(t, c.Addr(), v5, cid, func(pk *packets.Packet) {
			pk.Connect.Clean = false
			pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
		})
		require.False(t, ack.SessionPresent, "the session ended after 2 s")
	})
	t.Run("MQTT 3.1.1 persistent sessions end after session.mqtt3-expiry", func(t *testing.T) {
		cid := id("capped311")
		r, _ := rawPersistent(t, c.Addr(), v311, cid)
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
		require.Eventually(t, func() bool { return sessionTTL(t, c, cid) > 0 }, waitFor, 20*time.Millisecond)
		assert.LessOrEqual(t, sessionTTL(t, c, cid), time.Second)
		time.Sleep(1500 * time.Millisecond)
		_, ack := rawPersistent(t, c.Addr(), v311, cid)
		require.False(t, ack.SessionPresent)
	})
	t.Run("a will delay longer than the capped expiry ends with the session", func(t *testing.T) {
		topic := id("will")
		watcher := dialPaho5(t, c.Addr(), opts{ID: id("watcher"), Subs: []sub{{topic, 1}}})
		r, _ := rawConnect(t, c.Addr(), v5, id("dying"), func(pk *packets.Packet) {
			pk.Connect.Clean = false
			pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
			pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillQos = true, topic, []byte("gone"), 1
			pk.Connect.WillProperties.WillDelayInterval = 3600
		})
		closed := time.Now()
		_ = r.Conn.Close() // no DISCONNECT: the will is due
		m := next(t, watcher)
		require.Equal(t, "gone", m.Payload)
		require.Less(t, time.Since(closed), 10*time.Second, "published when the 2 s session ended, not after the hour's delay")
	})
}
