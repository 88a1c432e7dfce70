package frontend_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// eventReader reads the events topic of a cluster.
type eventReader struct {
	t       *testing.T
	r       *testkit.Reader
	pending []*events.Event
}

// next returns the next event of clientID of the given kind, skipping
// events before it, or fails the test after 10 s.
func (er *eventReader) next(clientID string, kind events.Kind) *events.Event {
	er.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for i, e := range er.pending {
			if e.ClientID == clientID && e.Kind == kind {
				er.pending = er.pending[i+1:]
				return e
			}
		}
		er.pending = er.pending[:0]
		require.True(er.t, time.Now().Before(deadline), "no %s event of %s", kind, clientID)
		for _, rec := range er.r.ReadAtLeast(1, time.Until(deadline)) {
			e, err := events.Decode(rec)
			require.NoError(er.t, err, "every record of the events topic follows the contract")
			require.Equal(er.t, e.ClientID, string(rec.Key), "keyed by client id")
			er.pending = append(er.pending, e)
		}
	}
}

// The frontends report what happens to sessions (connect, subscribe,
// unsubscribe, the reason of each disconnect) and every completed QoS 1
// delivery to the events topic, for the archiver and anyone else.
func TestSessionEventsAndDeliveryReceiptsReachTheEventsTopic(t *testing.T) {
	testRedis.Require(t)
	c := clustertest.Start(t, testRedis.Addr, clustertest.Options{Frontends: 2})
	er := &eventReader{t: t, r: testkit.NewReader(t, c.Kafka.Addr(), "mqtt.events")}
	inbound := testkit.NewReader(t, c.Kafka.Addr(), topic)

	sub := testkit.DialRaw(t, c.Frontends[0].Addr, 5)
	sub.Connect("ev-sub", true)
	e := er.next("ev-sub", events.Connect)
	assert.Equal(t, "fe-0", e.Node)
	assert.Equal(t, byte(5), e.Protocol)
	require.NotNil(t, e.CleanStart)
	assert.True(t, *e.CleanStart)
	require.NotNil(t, e.SessionPresent)
	assert.False(t, *e.SessionPresent)

	sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "ev/+", Qos: 1, NoLocal: true}, {Filter: "$share/g/ev/x", Qos: 2}, {Filter: "ev/#/bad", Qos: 0}}})
	suback := recvType(t, sub, packets.Suback)
	e = er.next("ev-sub", events.Subscribe)
	require.Len(t, e.Subscriptions, 3)
	assert.Equal(t, events.Subscription{Filter: "ev/+", QoS: 1, NoLocal: true, ReasonCode: 1}, e.Subscriptions[0])
	assert.Equal(t, events.Subscription{Filter: "ev/x", Group: "g", QoS: 2, ReasonCode: 2}, e.Subscriptions[1])
	assert.Equal(t, "ev/#/bad", e.Subscriptions[2].Filter)
	assert.Equal(t, packets.ErrTopicFilterInvalid.Code, e.Subscriptions[2].ReasonCode)
	for i, s := range e.Subscriptions {
		assert.Equal(t, suback.ReasonCodes[i], s.ReasonCode, "the event carries the SUBACK's codes")
	}

	pub := testkit.DialRaw(t, c.Frontends[1].Addr, 4)
	pub.Connect("ev-pub", true)
	pub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "ev/1", PacketID: 5, Payload: []byte("hello")})
	recvType(t, pub, packets.Puback)
	rec := inbound.ReadAtLeast(1, 10*time.Second)
	msgID, ok := testkit.Header(rec[0], "fg.message_id")
	require.True(t, ok)

	got := recvType(t, sub, packets.Publish)
	assert.Equal(t, "ev/1", got.TopicName)
	sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: got.PacketID})
	e = er.next("ev-sub", events.Delivered)
	assert.Equal(t, "ev/1", e.Topic)
	assert.Equal(t, msgID, e.MessageID, "the receipt names the inbound record's message id")
	require.NotNil(t, e.QoS)
	assert.Equal(t, byte(1), *e.QoS)
	assert.Equal(t, got.PacketID, e.PacketID)
	assert.Equal(t, "fe-0", e.Node)

	sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 2,
		Filters: packets.Subscriptions{{Filter: "ev/+"}, {Filter: "never/subscribed"}}})
	recvType(t, sub, packets.Unsuback)
	e = er.next("ev-sub", events.Unsubscribe)
	require.Len(t, e.Subscriptions, 2)
	assert.Equal(t, "ev/+", e.Subscriptions[0].Filter)
	assert.Zero(t, e.Subscriptions[0].ReasonCode)
	assert.Equal(t, packets.CodeNoSubscriptionExisted.Code, e.Subscriptions[1].ReasonCode)

	sub.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: packets.CodeDisconnect.Code})
	e = er.next("ev-sub", events.Disconnect)
	assert.Equal(t, events.ReasonClient, e.Reason)
	require.NotNil(t, e.ReasonCode)
	assert.Zero(t, *e.ReasonCode)

	require.NoError(t, pub.Conn.Close())
	e = er.next("ev-pub", events.Disconnect)
	assert.Equal(t, events.ReasonConnectionLost, e.Reason)
	assert.Equal(t, "fe-1", e.Node)

	// A client id taken over on the other node.
	first := testkit.DialRaw(t, c.Frontends[0].Addr, 5)
	first.Connect("ev-moving", false)
	er.next("ev-moving", events.Connect)
	second := testkit.DialRaw(t, c.Frontends[1].Addr, 5)
	ack := second.Connect("ev-moving", false)
	assert.True(t, ack.SessionPresent)
	e = er.next("ev-moving", events.Disconnect)
	assert.Equal(t, events.ReasonTakenOver, e.Reason)
	assert.Equal(t, "fe-0", e.Node, "the node that lost the connection reports it")
	require.NotNil(t, e.ReasonCode)
	assert.Equal(t, packets.ErrSessionTakenOver.Code, *e.ReasonCode)
}

func TestBehindAProxyProtocolLoadBalancerTheEventsNameTheDevicesAddress(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.Listen.ProxyProtocol = true
		c.MQTT.Listen.ProxyProtocolTrusted = config.StringList{"127.0.0.1/32"}
	})
	n.waitReady()
	er := &eventReader{t: t, r: testkit.NewReader(t, k.Addr(), "mqtt.events")}

	conn, err := net.Dial("tcp", n.addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr:      &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40001},
		DestinationAddr: &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1883}}
	_, err = h.WriteTo(conn)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{ClientID: "behind-lb", Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: "behind-lb", KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	require.Zero(t, ack.ReasonCode)

	e := er.next("behind-lb", events.Connect)
	assert.Equal(t, "203.0.113.7:40001", e.Remote, "the device's address, not the load balancer's")

	// Its acks go straight to the socket under the PROXY header (the
	// ingest hook's flush queue): they arrive whole and in order.
	for i := range 20 {
		resp, err := c.Publish(ctx, &paho.Publish{Topic: "behind/lb", QoS: 1, Payload: []byte(fmt.Sprint(i))})
		require.NoError(t, err, "publish %d", i)
		require.Zero(t, resp.ReasonCode, "publish %d", i)
	}

	// The load balancer's own address without a header is refused, and counted.
	bare, err := net.Dial("tcp", n.addr)
	require.NoError(t, err)
	defer bare.Close()
	_ = bare.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = bare.Write([]byte{0x10, 0x00})
	require.NoError(t, err)
	_, err = bare.Read(make([]byte, 1))
	require.Error(t, err, "no MQTT without a PROXY header from a trusted address")
	require.Eventually(t, func() bool {
		return strings.Contains(n.metrics(), `fleetgate_frontend_listener_refusals_total{reason="proxy_header_missing"} 1`)
	}, 10*time.Second, 50*time.Millisecond)
}
