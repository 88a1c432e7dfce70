package conformance

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
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
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: clean, UsernameFlag: true, PasswordFlag: true}
	cp.Username, cp.Password = creds(clientID)
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

// TestTheSuitesClustersDemandCredentialsAndKeepSessionsToTheirIdentity:
// every cluster of this suite runs as the product does at its defaults, so
// a CONNECT without credentials is refused (MQTT 5 CONNACK 0x87, MQTT 3.1.1
// 0x05) [MQTT-3.2.2-6] [MQTT-3.1.4-2], and a session belongs to the identity
// that made it: another identity's CONNECT for its client id is refused too
// and leaves it as it was.
func TestTheSuitesClustersDemandCredentialsAndKeepSessionsToTheirIdentity(t *testing.T) {
	c := start(t, clustertest.Options{})
	for _, v := range []byte{v5, v311} {
		_, ack, _ := rawConnectAnswer(t, c.Addr(), v, id("anonymous"), 30, func(pk *packets.Packet) {
			pk.Connect.Username, pk.Connect.UsernameFlag, pk.Connect.Password, pk.Connect.PasswordFlag = nil, false, nil, false
		})
		want := byte(0x87)
		if v == v311 {
			want = 0x05
		}
		assert.Equal(t, want, ack.ReasonCode, "MQTT %d without credentials", v)
	}

	owner := id("owned")
	r := testkit.DialRaw(t, c.Addr(), v5)
	require.False(t, login(r, owner, false).SessionPresent)
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	_, ack, _ := rawConnectAnswer(t, c.Addr(), v5, owner, 30, func(pk *packets.Packet) {
		user, pw := creds(id("intruder"))
		pk.Connect.Username, pk.Connect.Password, pk.Connect.Clean = []byte(user), pw, false
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 300, true
	})
	assert.Equal(t, byte(0x87), ack.ReasonCode, "another identity's CONNECT for the session's client id")
	back := testkit.DialRaw(t, c.Addr(), v5)
	assert.True(t, login(back, owner, false).SessionPresent, "the owner's session is still there")
}
