package conformance

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// The suite runs each behaviour through two independent client libraries
// per protocol version, behind the small client interface below:
//
//	MQTT 5:     github.com/eclipse/paho.golang, mosquitto_sub/_pub -V mqttv5
//	MQTT 3.1.1: github.com/eclipse/paho.mqtt.golang, mosquitto_sub/_pub -V mqttv311
//
// Wire details no library exposes are checked with testkit.Raw in addition.

const (
	v311 byte = 4
	v5   byte = 5

	// waitFor bounds what must happen; quiet is how long we watch for
	// what must not.
	waitFor = 20 * time.Second
	quiet   = 1500 * time.Millisecond
)

// msg is a PUBLISH a client received.
type msg struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	// Expiry is the Message Expiry Interval it carried (MQTT 5), and
	// HasExpiry whether it carried one.
	Expiry    uint32
	HasExpiry bool
	// SubID is the first Subscription Identifier it carried (MQTT 5).
	SubID int
}

// will is a Will Message of a CONNECT.
type will struct {
	Topic, Payload string
	QoS            byte
	Retain         bool
	// Delay is the MQTT 5 Will Delay Interval in seconds.
	Delay uint32
}

// sub is one subscription of a SUBSCRIBE.
type sub struct {
	Filter string
	QoS    byte
}

// opts shape a connection. The zero value is a clean session.
type opts struct {
	ID string
	// Persistent: Clean Session 0 (3.1.1) / Clean Start 0 with a session
	// expiry (MQTT 5; Expiry, or 300 s when 0).
	Persistent bool
	Expiry     uint32
	// KeepAlive is what an MQTT 3.1.1 client (dialPaho3) asks; 0: 30 s.
	KeepAlive time.Duration
	Will      *will
	// Subs are subscribed right after the CONNACK, then Unsubs are
	// unsubscribed: mosquitto_sub can only do it this way.
	Subs   []sub
	Unsubs []string
	// RetainAsPublished sets the option on every subscription (MQTT 5).
	RetainAsPublished bool
	// SubID is the Subscription Identifier of the SUBSCRIBE (MQTT 5);
	// only the mosquitto client uses it.
	SubID int
}

// client is one connection of a library.
type client interface {
	// Granted is the SUBACK's reason codes for opts.Subs.
	Granted() []byte
	// SessionPresent is the CONNACK's flag; ok is false when the library
	// does not expose it.
	SessionPresent() (present, ok bool)
	// Publish sends a message and returns once it is acknowledged
	// (QoS 1, 2). mosquitto publishes from a connection of its own.
	Publish(topic, payload string, qos byte, retain bool)
	// Messages are the PUBLISHes received, in order.
	Messages() <-chan msg
	// Disconnect ends the connection normally (DISCONNECT).
	Disconnect()
	// Drop closes the TCP connection without DISCONNECT.
	Drop()
}

// lib is a client library for one protocol version.
type lib struct {
	name    string
	version byte
	dial    func(t *testing.T, addr string, o opts) client
}

func libs(version byte) []lib {
	if version == v5 {
		return []lib{
			{name: "paho.golang", version: v5, dial: dialPaho5},
			{name: "mosquitto", version: v5, dial: dialMosquitto(v5)},
		}
	}
	return []lib{
		{name: "paho.mqtt.golang", version: v311, dial: dialPaho3},
		{name: "mosquitto", version: v311, dial: dialMosquitto(v311)},
	}
}

// forLibs runs fn once per library of each version, as subtests named
// "v5/paho.golang" and so on.
func forLibs(t *testing.T, versions []byte, fn func(t *testing.T, l lib)) {
	for _, v := range versions {
		for _, l := range libs(v) {
			name := "v311/" + l.name
			if v == v5 {
				name = "v5/" + l.name
			}
			t.Run(name, func(t *testing.T) { fn(t, l) })
		}
	}
}

var both = []byte{v311, v5}

var uniq atomic.Int64

// id returns a client id or topic segment unique in the test binary.
func id(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, uniq.Add(1))
}

// next returns the next message, failing the test after waitFor.
func next(t *testing.T, c client) msg {
	t.Helper()
	select {
	case m := <-c.Messages():
		return m
	case <-time.After(waitFor):
		t.Fatalf("no message within %s", waitFor)
		return msg{}
	}
}

// nextOf is next for a message published on topic through cluster c: when
// none arrives it says whether the message reached Kafka (the records of
// mqtt.inbound on topic) and what the client got before, so that a loss is
// placed on ingest or on delivery.
func nextOf(t *testing.T, c *clustertest.Cluster, cl client, topic string, got []msg) msg {
	t.Helper()
	select {
	case m := <-cl.Messages():
		return m
	case <-time.After(waitFor):
	}
	inKafka := []string{}
	kc, err := kgo.NewClient(kgo.SeedBrokers(c.Kafka.Addr()), kgo.ConsumeTopics("mqtt.inbound"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer kc.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := kc.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if v, _ := testkit.Header(r, kafkarecord.HeaderTopic); v == topic {
				q, _ := testkit.Header(r, kafkarecord.HeaderQoS)
				inKafka = append(inKafka, fmt.Sprintf("%q (qos %s, %s/%d/%d)", r.Value, q, r.Topic, r.Partition, r.Offset))
			}
		})
		if n == 0 {
			break
		}
	}
	t.Fatalf("no message within %s; received before: %+v; records on %s in Kafka: %v", waitFor, got, topic, inKafka)
	return msg{}
}

// none asserts that no message arrives within quiet.
func none(t *testing.T, c client) {
	t.Helper()
	select {
	case m := <-c.Messages():
		t.Fatalf("unexpected message %+v", m)
	case <-time.After(quiet):
	}
}

// ---- paho.golang (MQTT 5) ----

type paho5 struct {
	t       *testing.T
	c       *paho.Client
	conn    net.Conn
	ack     *paho.Connack
	granted []byte
	msgs    chan msg
	// disc receives a DISCONNECT sent by the server.
	disc chan *paho.Disconnect
	pub  *paho.Client
}

func dialPaho5(t *testing.T, addr string, o opts) client {
	t.Helper()
	p, err := dialPaho5Conn(t, addr, o, nil)
	require.NoError(t, err)
	return p
}

// dialPaho5Conn connects; adjust may change the CONNECT before it is sent.
func dialPaho5Conn(t *testing.T, addr string, o opts, adjust func(*paho.Connect)) (*paho5, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	p := &paho5{t: t, conn: conn, msgs: make(chan msg, 1000), disc: make(chan *paho.Disconnect, 1)}
	p.c = paho.NewClient(paho.ClientConfig{
		ClientID: o.ID, Conn: conn, PacketTimeout: waitFor,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p.msgs <- fromPaho5(pr.Packet)
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case p.disc <- d:
			default:
			}
		},
	})
	cp := &paho.Connect{ClientID: o.ID, KeepAlive: 30, CleanStart: !o.Persistent,
		Properties: &paho.ConnectProperties{}}
	cp.Username, cp.Password = creds(o.ID)
	cp.UsernameFlag, cp.PasswordFlag = true, true
	if o.Persistent {
		e := o.Expiry
		if e == 0 {
			e = 300
		}
		cp.Properties.SessionExpiryInterval = &e
	} else if o.Expiry > 0 {
		cp.Properties.SessionExpiryInterval = &o.Expiry
	}
	if w := o.Will; w != nil {
		cp.WillMessage = &paho.WillMessage{Topic: w.Topic, Payload: []byte(w.Payload), QoS: w.QoS, Retain: w.Retain}
		cp.WillProperties = &paho.WillProperties{}
		if w.Delay > 0 {
			d := w.Delay
			cp.WillProperties.WillDelayInterval = &d
		}
	}
	if adjust != nil {
		adjust(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ca, err := p.c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	p.ack = ca
	t.Cleanup(func() { _ = conn.Close() })
	if len(o.Subs) > 0 {
		s := &paho.Subscribe{}
		for _, f := range o.Subs {
			s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f.Filter, QoS: f.QoS, RetainAsPublished: o.RetainAsPublished})
		}
		sa, err := p.c.Subscribe(ctx, s)
		require.NoError(t, err)
		p.granted = sa.Reasons
	}
	if len(o.Unsubs) > 0 {
		_, err := p.c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: o.Unsubs})
		require.NoError(t, err)
	}
	return p, nil
}

func fromPaho5(p *paho.Publish) msg {
	m := msg{Topic: p.Topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain}
	if p.Properties != nil && p.Properties.MessageExpiry != nil {
		m.Expiry, m.HasExpiry = *p.Properties.MessageExpiry, true
	}
	if p.Properties != nil && p.Properties.SubscriptionIdentifier != nil {
		m.SubID = *p.Properties.SubscriptionIdentifier
	}
	return m
}

func (p *paho5) Granted() []byte              { return p.granted }
func (p *paho5) SessionPresent() (bool, bool) { return p.ack.SessionPresent, true }
func (p *paho5) Messages() <-chan msg         { return p.msgs }

func (p *paho5) Publish(topic, payload string, qos byte, retain bool) {
	p.t.Helper()
	_, err := p.publish(&paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain})
	require.NoError(p.t, err)
}

func (p *paho5) publish(pk *paho.Publish) (*paho.PublishResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return p.c.Publish(ctx, pk)
}

func (p *paho5) Disconnect() { _ = p.c.Disconnect(&paho.Disconnect{}) }
func (p *paho5) Drop()       { _ = p.conn.Close() }

// ---- paho.mqtt.golang (MQTT 3.1.1) ----

type paho3 struct {
	t       *testing.T
	c       mqtt3.Client
	mu      sync.Mutex
	conn    net.Conn
	present bool
	granted []byte
	msgs    chan msg
}

func dialPaho3(t *testing.T, addr string, o opts) client {
	t.Helper()
	p := &paho3{t: t, msgs: make(chan msg, 1000)}
	user, pw := creds(o.ID)
	co := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(o.ID).
		SetProtocolVersion(4).SetCleanSession(!o.Persistent).SetAutoReconnect(false).
		SetConnectRetry(false).SetKeepAlive(cmp.Or(o.KeepAlive, 30*time.Second)).SetOrderMatters(true).
		SetResumeSubs(false).SetWriteTimeout(waitFor).SetUsername(user).SetPassword(string(pw)).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) {
			p.msgs <- msg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained()}
		})
	co.SetCustomOpenConnectionFn(func(_ *url.URL, _ mqtt3.ClientOptions) (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			p.mu.Lock()
			p.conn = c
			p.mu.Unlock()
		}
		return c, err
	})
	if w := o.Will; w != nil {
		co.SetBinaryWill(w.Topic, []byte(w.Payload), w.QoS, w.Retain)
	}
	p.c = mqtt3.NewClient(co)
	tok := p.c.Connect()
	require.True(t, tok.WaitTimeout(waitFor), "connect timed out")
	require.NoError(t, tok.Error())
	p.present = tok.(*mqtt3.ConnectToken).SessionPresent()
	t.Cleanup(func() { p.Drop() })
	if len(o.Subs) > 0 {
		filters := map[string]byte{}
		for _, s := range o.Subs {
			filters[s.Filter] = s.QoS
		}
		st := p.c.SubscribeMultiple(filters, nil)
		require.True(t, st.WaitTimeout(waitFor), "subscribe timed out")
		require.NoError(t, st.Error())
		res := st.(*mqtt3.SubscribeToken).Result()
		for _, s := range o.Subs {
			p.granted = append(p.granted, res[s.Filter])
		}
	}
	if len(o.Unsubs) > 0 {
		ut := p.c.Unsubscribe(o.Unsubs...)
		require.True(t, ut.WaitTimeout(waitFor), "unsubscribe timed out")
		require.NoError(t, ut.Error())
	}
	return p
}

func (p *paho3) Granted() []byte              { return p.granted }
func (p *paho3) SessionPresent() (bool, bool) { return p.present, true }
func (p *paho3) Messages() <-chan msg         { return p.msgs }

func (p *paho3) Publish(topic, payload string, qos byte, retain bool) {
	p.t.Helper()
	tok := p.c.Publish(topic, qos, retain, []byte(payload))
	require.True(p.t, tok.WaitTimeout(waitFor), "publish timed out")
	require.NoError(p.t, tok.Error())
}

func (p *paho3) Disconnect() { p.c.Disconnect(250) }

func (p *paho3) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		_ = p.conn.Close()
	}
}
