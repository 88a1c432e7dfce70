package conformance

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

// MQTT 5 features. The options mosquitto_sub cannot send (No Local, Retain
// Handling, Subscription Identifier) and what it cannot show (UNSUBACK
// reason codes) are checked with paho.golang and, as the second
// implementation, raw packets (testkit.Raw).

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return c
}

func paho5Sub(t *testing.T, addr, clientID string, so paho.SubscribeOptions, subID int) *paho5 {
	t.Helper()
	p, err := dialPaho5Conn(t, addr, opts{ID: clientID}, nil)
	require.NoError(t, err)
	s := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{so}}
	if subID > 0 {
		s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &subID}
	}
	sa, err := p.c.Subscribe(ctx(t), s)
	require.NoError(t, err)
	require.Equal(t, []byte{so.QoS}, sa.Reasons)
	return p
}

// TestUnsubackNoSubscriptionExisted: UNSUBACK has a reason code per
// filter [MQTT-3.11.3-1], 0x11 where no subscription existed, 0x00 where
// one was removed.
func TestUnsubackNoSubscriptionExisted(t *testing.T) {
	c := start(t, clustertest.Options{})
	f := id("unsuback")
	t.Run("paho.golang", func(t *testing.T) {
		p := paho5Sub(t, c.Addr(), id("p"), paho.SubscribeOptions{Topic: f, QoS: 1}, 0)
		ua, err := p.c.Unsubscribe(ctx(t), &paho.Unsubscribe{Topics: []string{f, f + "/never"}})
		require.NoError(t, err)
		require.Equal(t, []byte{0x00, 0x11}, ua.Reasons)
		ua, err = p.c.Unsubscribe(ctx(t), &paho.Unsubscribe{Topics: []string{f}})
		require.NoError(t, err)
		require.Equal(t, []byte{0x11}, ua.Reasons, "a second UNSUBSCRIBE finds nothing")
	})
	t.Run("raw", func(t *testing.T) {
		r, _ := rawConnect(t, c.Addr(), v5, id("raw"), nil)
		rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: f, Qos: 1})
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 2,
			Filters: packets.Subscriptions{{Filter: f + "/never"}, {Filter: f}}})
		ua := rawRecv(t, r)
		require.Equal(t, packets.Unsuback, ua.FixedHeader.Type)
		require.EqualValues(t, 2, ua.PacketID)
		require.Equal(t, []byte{0x11, 0x00}, ua.ReasonCodes)
	})
}

// TestNoLocal: with No Local the server does not forward a client's own
// messages to it [MQTT-3.8.3-3]; other clients' messages still arrive.
func TestNoLocal(t *testing.T) {
	c := start(t, clustertest.Options{})
	t.Run("paho.golang", func(t *testing.T) {
		f := id("nolocal")
		p := paho5Sub(t, c.Addr(), id("p"), paho.SubscribeOptions{Topic: f, QoS: 1, NoLocal: true}, 0)
		p.Publish(f, "own", 1, false)
		other := dialPaho5(t, c.Addr(), opts{ID: id("other")})
		other.Publish(f, "other", 1, false)
		require.Equal(t, "other", next(t, p).Payload, "only the other client's message")
		none(t, p)
	})
	t.Run("paho.python", func(t *testing.T) {
		f := id("nolocal")
		p := dialPyPaho(t, c.Addr(), id("py"), f, 1, true, 0)
		p.publish(f, "own")
		other := dialPaho5(t, c.Addr(), opts{ID: id("other")})
		other.Publish(f, "other", 1, false)
		require.Equal(t, "other", p.next().Payload, "only the other client's message")
		p.none()
	})
	t.Run("raw", func(t *testing.T) {
		f := id("nolocal")
		r, _ := rawConnect(t, c.Addr(), v5, id("raw"), nil)
		rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: f, Qos: 0, NoLocal: true})
		rawPublish(t, r, 2, f, "own", nil)
		other := dialPaho5(t, c.Addr(), opts{ID: id("other")})
		other.Publish(f, "other", 1, false)
		m := rawMessage(t, r)
		require.Equal(t, "other", string(m.Payload))
		rawNone(t, r)
	})
}

// retainOne stores a retained message and waits until new subscribers get
// it.
func retainOne(t *testing.T, addr, topic string) {
	t.Helper()
	p := dialPaho5(t, addr, opts{ID: id("retainer")})
	p.Publish(topic, "kept", 1, true)
	awaitRetained(t, libs(v5)[0], addr, topic, 1, func(m msg) bool { return m.Payload == "kept" })
}

// TestRetainHandling: Retain Handling 0 sends the retained messages at
// every SUBSCRIBE [MQTT-3.3.1-9], 1 only when the subscription did not
// exist [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11].
func TestRetainHandling(t *testing.T) {
	c := start(t, clustertest.Options{})
	f := id("rh")
	retainOne(t, c.Addr(), f)
	t.Run("paho.golang", func(t *testing.T) {
		cases := []struct {
			rh           byte
			first, resub bool
		}{{0, true, true}, {1, true, false}, {2, false, false}}
		for _, cs := range cases {
			t.Run(fmt.Sprintf("retain handling %d", cs.rh), func(t *testing.T) {
				so := paho.SubscribeOptions{Topic: f, QoS: 1, RetainHandling: cs.rh}
				p := paho5Sub(t, c.Addr(), id("p"), so, 0)
				for i, want := range []bool{cs.first, cs.resub} {
					if i == 1 {
						_, err := p.c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{so}})
						require.NoError(t, err)
					}
					if want {
						m := next(t, p)
						require.True(t, m.Retain)
						require.Equal(t, "kept", m.Payload)
					} else {
						none(t, p)
					}
				}
			})
		}
	})
	t.Run("paho.python", func(t *testing.T) {
		cases := []struct {
			rh           byte
			first, resub bool
		}{{0, true, true}, {1, true, false}, {2, false, false}}
		for _, cs := range cases {
			t.Run(fmt.Sprintf("retain handling %d", cs.rh), func(t *testing.T) {
				p := dialPyPaho(t, c.Addr(), id("py"), f, 1, false, cs.rh)
				for i, want := range []bool{cs.first, cs.resub} {
					if i == 1 {
						p.resubscribe()
					}
					if want {
						m := p.next()
						require.True(t, m.Retain)
						require.Equal(t, "kept", m.Payload)
					} else {
						p.none()
					}
				}
			})
		}
	})
	t.Run("raw", func(t *testing.T) {
		r, _ := rawConnect(t, c.Addr(), v5, id("raw"), nil)
		rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: f, Qos: 1, RetainHandling: 1})
		m := rawMessage(t, r)
		require.True(t, m.FixedHeader.Retain, "RETAIN 1 [MQTT-3.3.1-9]")
		rawSubscribe(t, r, 2, 0, packets.Subscription{Filter: f, Qos: 1, RetainHandling: 1})
		rawNone(t, r)
		rawSubscribe(t, r, 3, 0, packets.Subscription{Filter: f + "/+", Qos: 1, RetainHandling: 2})
		rawSubscribe(t, r, 4, 0, packets.Subscription{Filter: "+", Qos: 1, RetainHandling: 2})
		rawNone(t, r)
	})
}

// TestRetainAsPublished: with Retain As Published the RETAIN flag of a
// forwarded message is the publisher's [MQTT-3.3.1-13]; without it, 0
// [MQTT-3.3.1-12]. mosquitto_sub has --retain-as-published.
func TestRetainAsPublished(t *testing.T) {
	forLibs(t, []byte{v5}, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f := id("rap")
		rap := l.dial(t, c.Addr(), opts{ID: id("rap"), RetainAsPublished: true, Subs: []sub{{f, 1}}})
		plain := l.dial(t, c.Addr(), opts{ID: id("plain"), Subs: []sub{{f, 1}}})
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		p.Publish(f, "r", 1, true)
		p.Publish(f, "n", 1, false)
		m := next(t, rap)
		require.True(t, m.Retain, "retained as published")
		require.Equal(t, "r", m.Payload)
		m = next(t, rap)
		require.False(t, m.Retain)
		require.Equal(t, "n", m.Payload)
		for range 2 {
			require.False(t, next(t, plain).Retain, "RETAIN 0 without Retain As Published")
		}
	})
}

// TestSubscriptionIdentifiers: a PUBLISH carries the Subscription
// Identifier of the matching subscription [MQTT-3.3.4-3], of every
// matching subscription when one copy is sent [MQTT-3.3.4-4].
func TestSubscriptionIdentifiers(t *testing.T) {
	c := start(t, clustertest.Options{})
	t.Run("paho.golang", func(t *testing.T) {
		f := id("subid")
		p := paho5Sub(t, c.Addr(), id("p"), paho.SubscribeOptions{Topic: f + "/+", QoS: 1}, 42)
		pub := dialPaho5(t, c.Addr(), opts{ID: id("pub")})
		pub.Publish(f+"/x", "x", 1, false)
		require.Equal(t, 42, next(t, p).SubID)
	})
	t.Run("mosquitto", func(t *testing.T) {
		f := id("subid")
		m := dialMosquitto(v5)(t, c.Addr(), opts{ID: id("m"), Subs: []sub{{f + "/+", 1}}, SubID: 42})
		pub := dialPaho5(t, c.Addr(), opts{ID: id("pub")})
		pub.Publish(f+"/x", "x", 1, false)
		require.Equal(t, 42, next(t, m).SubID)
	})
	t.Run("raw", func(t *testing.T) {
		f := id("subid")
		r, _ := rawConnect(t, c.Addr(), v5, id("raw"), nil)
		rawSubscribe(t, r, 1, 1, packets.Subscription{Filter: f + "/+", Qos: 1})
		rawSubscribe(t, r, 2, 2, packets.Subscription{Filter: f + "/#", Qos: 1})
		rawSubscribe(t, r, 3, 0, packets.Subscription{Filter: f + "/x/none", Qos: 1})
		pub := dialPaho5(t, c.Addr(), opts{ID: id("pub")})
		pub.Publish(f+"/x", "both", 1, false)
		pub.Publish(f+"/x/none", "two", 1, false)
		var ids [][]int
		for range 2 {
			m := rawMessage(t, r)
			got := append([]int(nil), m.Properties.SubscriptionIdentifier...)
			sort.Ints(got)
			ids = append(ids, got)
		}
		require.Equal(t, [][]int{{1, 2}, {2}}, ids, "identifiers of every matching subscription, none for one without")
	})
}

// TestTopicAlias: the server resolves a Topic Alias a client sets on
// PUBLISH: the first PUBLISH maps it, later ones with an empty topic use
// it, and a new topic remaps it [MQTT-3.3.2-12] (the server accepts every
// alias up to its Topic Alias Maximum).
//
// fleetgate's CONNACK carries no Topic Alias Maximum (mochi does not write
// its capability into the CONNACK), which tells clients to send no aliases
// [MQTT-3.2.2-17]; mochi accepts aliases up to 65535 all the same. The
// test sends alias 1 regardless and logs the missing property.
func TestTopicAlias(t *testing.T) {
	c := start(t, clustertest.Options{})
	check := func(t *testing.T, f string, s client) {
		t.Helper()
		got := []string{}
		for range 4 {
			m := next(t, s)
			got = append(got, m.Topic+"="+m.Payload)
		}
		require.Equal(t, []string{f + "/a=1", f + "/a=2", f + "/b=3", f + "/b=4"}, got)
	}
	t.Run("paho.golang", func(t *testing.T) {
		f := id("alias")
		s := dialPaho5(t, c.Addr(), opts{ID: id("sub"), Subs: []sub{{f + "/+", 1}}})
		p, err := dialPaho5Conn(t, c.Addr(), opts{ID: id("pub")}, nil)
		require.NoError(t, err)
		if p.ack.Properties == nil || p.ack.Properties.TopicAliasMaximum == nil {
			t.Log("CONNACK announces no Topic Alias Maximum")
		}
		alias := uint16(1)
		for i, tp := range []string{f + "/a", "", f + "/b", ""} {
			_, err := p.publish(&paho.Publish{Topic: tp, QoS: 1, Payload: []byte(fmt.Sprint(i + 1)),
				Properties: &paho.PublishProperties{TopicAlias: &alias}})
			require.NoError(t, err)
		}
		check(t, f, s)
	})
	t.Run("raw", func(t *testing.T) {
		f := id("alias")
		s := dialPaho5(t, c.Addr(), opts{ID: id("sub"), Subs: []sub{{f + "/+", 1}}})
		r, ack := rawConnect(t, c.Addr(), v5, id("raw"), nil)
		alias := uint16(3)
		if m := ack.Properties.TopicAliasMaximum; m > 0 {
			alias = min(m, alias)
		}
		for i, tp := range []string{f + "/a", "", f + "/b", ""} {
			rawPublish(t, r, uint16(i+1), tp, fmt.Sprint(i+1), func(pk *packets.Packet) {
				pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
			})
		}
		check(t, f, s)
	})
	t.Run("mosquitto", func(t *testing.T) {
		// mosquitto_pub sends each message with the topic and the alias:
		// it exercises mapping (and re-mapping) an alias, not reusing it.
		f := id("alias")
		s := dialPaho5(t, c.Addr(), opts{ID: id("sub"), Subs: []sub{{f + "/+", 1}}})
		mosquittoPub(t, v5, c.Addr(), id("mpub"), f+"/a", "1", 1, false, "-D", "publish", "topic-alias", "1")
		mosquittoPub(t, v5, c.Addr(), id("mpub"), f+"/b", "2", 1, false, "-D", "publish", "topic-alias", "1")
		got := []string{}
		for range 2 {
			m := next(t, s)
			got = append(got, m.Topic+"="+m.Payload)
		}
		require.Equal(t, []string{f + "/a=1", f + "/b=2"}, got)
	})
}

// publishExpiring publishes a QoS 1 message with a Message Expiry Interval.
func publishExpiring(t *testing.T, l lib, addr, topic, payload string, expiry uint32) {
	t.Helper()
	if l.name == "mosquitto" {
		mosquittoPub(t, v5, addr, id("pub"), topic, payload, 1, false, "-D", "publish", "message-expiry-interval", fmt.Sprint(expiry))
		return
	}
	p, err := dialPaho5Conn(t, addr, opts{ID: id("pub")}, nil)
	require.NoError(t, err)
	_, err = p.publish(&paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
		Properties: &paho.PublishProperties{MessageExpiry: &expiry}})
	require.NoError(t, err)
	p.Disconnect()
}

// TestMessageExpiry: a message queued for an offline session is not
// delivered once its Message Expiry Interval has passed [MQTT-3.3.2-5];
// one delivered later carries the interval that is left [MQTT-3.3.2-6].
func TestMessageExpiry(t *testing.T) {
	forLibs(t, []byte{v5}, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f, cid := id("mexp"), id("offline")
		s := l.dial(t, c.Addr(), opts{ID: cid, Persistent: true, Subs: []sub{{f, 1}}})
		s.Disconnect()
		publishExpiring(t, l, c.Addr(), f, "short", 1)
		publishExpiring(t, l, c.Addr(), f, "long", 300)
		time.Sleep(2500 * time.Millisecond) // past the 1 s interval
		s = l.dial(t, c.Addr(), opts{ID: cid, Persistent: true})
		m := next(t, s)
		require.Equal(t, "long", m.Payload, "the expired message is not delivered")
		require.True(t, m.HasExpiry, "Message Expiry Interval forwarded")
		require.Less(t, m.Expiry, uint32(300), "the interval left, not the one published")
		require.Greater(t, m.Expiry, uint32(0))
		none(t, s)
	})
}

// TestSharedSubscriptions: a message published to a shared subscription's
// topic goes to exactly one member of the group (MQTT 5 4.8.2), and
// members of another group and plain subscribers each get their copy.
func TestSharedSubscriptions(t *testing.T) {
	forLibs(t, []byte{v5}, func(t *testing.T, l lib) {
		c := start(t, clustertest.Options{})
		f := id("shared")
		g1 := []client{
			l.dial(t, c.Addr(), opts{ID: id("g1a"), Subs: []sub{{"$share/g1/" + f + "/+", 1}}}),
			l.dial(t, c.Addr(), opts{ID: id("g1b"), Subs: []sub{{"$share/g1/" + f + "/+", 1}}}),
		}
		g2 := l.dial(t, c.Addr(), opts{ID: id("g2"), Subs: []sub{{"$share/g2/" + f + "/#", 1}}})
		plain := l.dial(t, c.Addr(), opts{ID: id("plain"), Subs: []sub{{f + "/+", 1}}})
		p := l.dial(t, c.Addr(), opts{ID: id("pub")})
		const n = 10
		for i := range n {
			p.Publish(f+"/x", fmt.Sprint(i), 1, false)
		}
		for _, s := range []client{g2, plain} {
			for range n {
				next(t, s)
			}
		}
		seen := map[string]int{}
		deadline := time.After(waitFor)
		for len(seen) < n {
			select {
			case m := <-g1[0].Messages():
				seen[m.Payload]++
			case m := <-g1[1].Messages():
				seen[m.Payload]++
			case <-deadline:
				t.Fatalf("group g1 got %d of %d messages", len(seen), n)
			}
		}
		none(t, g1[0])
		none(t, g1[1])
		for k, v := range seen {
			require.Equal(t, 1, v, "message %s went to one member of the group", k)
		}
	})
}
