package cluster

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// v5 is one connection of an MQTT 5 client (paho.golang). A paho client
// lives for one connection; reconnecting makes a new one.
type v5 struct {
	*paho.Client
	connack *paho.Connack
	// disconnect receives a DISCONNECT the server sent.
	disconnect chan *paho.Disconnect
	// lost is closed when the connection ends for any reason.
	lost     chan struct{}
	lostOnce sync.Once
}

// dialV5 connects an MQTT 5 client to addr with cp; onMsg (optional) sees
// every PUBLISH, which is acknowledged after onMsg returns. It returns an
// error rather than failing the test, for callers that retry.
func dialV5(t *testing.T, addr string, cp *paho.Connect, onMsg func(*paho.Publish)) (*v5, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &v5{disconnect: make(chan *paho.Disconnect, 1), lost: make(chan struct{})}
	markLost := func() { c.lostOnce.Do(func() { close(c.lost) }) }
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: cp.ClientID, Conn: conn, PacketTimeout: 30 * time.Second,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if onMsg != nil {
				onMsg(pr.Packet)
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.disconnect <- d:
			default:
			}
			markLost()
		},
		OnClientError: func(error) { markLost() },
	})
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	authenticateV5(t, addr, cp)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connecting %s to %s: %w", cp.ClientID, addr, err)
	}
	c.connack = ca
	t.Cleanup(func() {
		select {
		case <-c.lost:
		default:
			_ = c.Disconnect(&paho.Disconnect{})
		}
	})
	return c, nil
}

// mustDialV5 is dialV5 that fails the test on error.
func mustDialV5(t *testing.T, addr string, cp *paho.Connect, onMsg func(*paho.Publish)) *v5 {
	t.Helper()
	c, err := dialV5(t, addr, cp, onMsg)
	require.NoError(t, err)
	require.Zero(t, c.connack.ReasonCode, "connack reason of %s", cp.ClientID)
	return c
}

// persistent is a CONNECT of a session that outlives its connection.
func persistent(clientID string, expiry uint32) *paho.Connect {
	return &paho.Connect{ClientID: clientID, CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
}

// subscribe subscribes c to filter at QoS 1 and requires it granted.
func (c *v5) subscribe(t *testing.T, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	require.NoError(t, err)
	require.Equal(t, []byte{1}, sa.Reasons, "suback for %s", filter)
}

// publish publishes at QoS 1 and requires a successful PUBACK.
func (c *v5) publish(t *testing.T, topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	require.NoError(t, err)
	require.Zero(t, resp.ReasonCode, "puback reason")
}

// dialV3 connects an MQTT 3.1.1 client (paho.mqtt.golang) to addr, without
// automatic reconnects: a test decides itself what a lost connection means.
func dialV3(t *testing.T, addr, clientID string, clean bool, adjust func(*mqtt.ClientOptions)) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetProtocolVersion(4).SetCleanSession(clean).SetKeepAlive(30 * time.Second).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).SetOrderMatters(true)
	authenticateV3(t, addr, clientID, o)
	if adjust != nil {
		adjust(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(15*time.Second), "connect %s timed out", clientID)
	require.NoError(t, tok.Error(), "connect %s", clientID)
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// inbox collects the messages a subscriber receives, in arrival order.
type inbox struct {
	mu   sync.Mutex
	msgs []received
	cond chan struct{} // closed and replaced on every arrival
}

type received struct {
	topic   string
	payload string
	dup     bool
	at      time.Time
}

func newInbox() *inbox { return &inbox{cond: make(chan struct{})} }

func (b *inbox) add(topic, payload string, dup bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, received{topic: topic, payload: payload, dup: dup, at: time.Now()})
	close(b.cond)
	b.cond = make(chan struct{})
}

// v5Handler records MQTT 5 deliveries.
func (b *inbox) v5Handler(p *paho.Publish) { b.add(p.Topic, string(p.Payload), p.Duplicate()) }

// v3Handler records MQTT 3.1.1 deliveries.
func (b *inbox) v3Handler(_ mqtt.Client, m mqtt.Message) {
	b.add(m.Topic(), string(m.Payload()), m.Duplicate())
}

// snapshot returns the messages so far.
func (b *inbox) snapshot() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.msgs...)
}

// waitFor waits until ok holds for the messages so far, or d passed.
func (b *inbox) waitFor(d time.Duration, ok func([]received) bool) bool {
	deadline := time.After(d)
	for {
		b.mu.Lock()
		msgs, ch := append([]received(nil), b.msgs...), b.cond
		b.mu.Unlock()
		if ok(msgs) {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// has reports whether a message with payload arrived on topic.
func has(msgs []received, topic, payload string) bool {
	for _, m := range msgs {
		if m.topic == topic && m.payload == payload {
			return true
		}
	}
	return false
}

// payloads returns the payloads of the messages on topics with prefix.
func payloads(msgs []received, prefix string) []string {
	var out []string
	for _, m := range msgs {
		if strings.HasPrefix(m.topic, prefix) {
			out = append(out, m.payload)
		}
	}
	return out
}

// probeUntilDelivered publishes probes with publish until the subscriber's
// inbox has one. A SUBACK means the subscription is stored in Redis and in
// the change log; each dispatcher applies the change log to its index a
// moment later, so a message published in that moment may be routed
// without the new subscription. Tests that need every message delivered
// wait for a probe that went the same way (same publisher, so the same
// Kafka partition and dispatcher) first.
func probeUntilDelivered(t *testing.T, b *inbox, topic string, publish func(payload string)) {
	t.Helper()
	for i := 0; ; i++ {
		payload := fmt.Sprintf("probe-%d", i)
		publish(payload)
		if b.waitFor(300*time.Millisecond, func(m []received) bool { return len(payloads(m, topic)) > 0 }) {
			if i > 0 {
				t.Logf("subscription on %s took %d probes to take effect", topic, i+1)
			}
			return
		}
		require.Less(t, i, 100, "no probe on %s delivered", topic)
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
