package conformance

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
)

func dialV5(t *testing.T, addr, clientID string, clean bool, expiry uint32, onMsg func(*paho.Publish)) (*paho.Client, *paho.Connack) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: conn, PacketTimeout: 30 * time.Second,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if onMsg != nil {
				onMsg(pr.Packet)
			}
			return true, nil
		}}})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: clean}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	require.NoError(t, err)
	require.EqualValues(t, 0, ca.ReasonCode)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, ca
}

func TestSmokePubSubV5(t *testing.T) {
	c := start(t, clustertest.Options{})
	got := make(chan *paho.Publish, 10)
	sub, _ := dialV5(t, c.Addr(), "sub", true, 0, func(p *paho.Publish) { got <- p })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a/+", QoS: 1}}})
	require.NoError(t, err)
	require.Equal(t, []byte{1}, sa.Reasons)
	pub, _ := dialV5(t, c.Addr(), "pub", true, 0, nil)
	_, err = pub.Publish(ctx, &paho.Publish{Topic: "a/b", QoS: 1, Payload: []byte("hello")})
	require.NoError(t, err)
	select {
	case p := <-got:
		require.Equal(t, "a/b", p.Topic)
		require.Equal(t, "hello", string(p.Payload))
		require.EqualValues(t, 1, p.QoS)
	case <-time.After(15 * time.Second):
		t.Fatal("no delivery")
	}
}
