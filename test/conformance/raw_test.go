package conformance

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// Raw MQTT helpers, for wire details that no library exposes or lets us
// send.

// rawConnect connects a clean session; adjust may change the CONNECT.
func rawConnect(t *testing.T, addr string, version byte, clientID string, adjust func(*packets.Packet)) (*testkit.Raw, packets.Packet) {
	t.Helper()
	r := testkit.DialRaw(t, addr, version)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: authed(packets.ConnectParams{ClientIdentifier: clientID, Clean: true, Keepalive: 30})}
	if adjust != nil {
		adjust(&pk)
	}
	r.Send(pk)
	ack := rawRecv(t, r)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	require.Zero(t, ack.ReasonCode, "CONNACK reason")
	return r, ack
}

// rawRecv reads the next packet within waitFor.
func rawRecv(t *testing.T, r *testkit.Raw) packets.Packet {
	t.Helper()
	pk, err := r.Recv(waitFor)
	require.NoError(t, err)
	return pk
}

// rawNone asserts that nothing arrives within quiet.
func rawNone(t *testing.T, r *testkit.Raw) {
	t.Helper()
	pk, err := r.Recv(quiet)
	require.True(t, testkit.IsTimeout(err), "expected nothing, got %v (packet type %d, topic %q)", err, pk.FixedHeader.Type, pk.TopicName)
}

// rawSubscribe sends SUBSCRIBE with an optional Subscription Identifier and
// returns the SUBACK.
func rawSubscribe(t *testing.T, r *testkit.Raw, packetID uint16, subID int, subs ...packets.Subscription) packets.Packet {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: packetID, Filters: subs}
	if subID > 0 {
		pk.Properties.SubscriptionIdentifier = []int{subID}
	}
	r.Send(pk)
	ack := rawRecv(t, r)
	require.Equal(t, packets.Suback, ack.FixedHeader.Type)
	require.Equal(t, packetID, ack.PacketID)
	return ack
}

// rawPublish sends a QoS 1 PUBLISH and waits for its PUBACK.
func rawPublish(t *testing.T, r *testkit.Raw, packetID uint16, topic, payload string, adjust func(*packets.Packet)) {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: packetID,
		TopicName: topic, Payload: []byte(payload)}
	if adjust != nil {
		adjust(&pk)
	}
	r.Send(pk)
	ack := rawRecv(t, r)
	require.Equal(t, packets.Puback, ack.FixedHeader.Type, "PUBACK for %q", topic)
	require.Equal(t, packetID, ack.PacketID)
	require.Less(t, ack.ReasonCode, byte(0x80), "PUBACK reason")
}

// rawMessage reads the next PUBLISH, acknowledging it at QoS 1.
func rawMessage(t *testing.T, r *testkit.Raw) packets.Packet {
	t.Helper()
	pk := rawRecv(t, r)
	require.Equal(t, packets.Publish, pk.FixedHeader.Type, "expected PUBLISH")
	if pk.FixedHeader.Qos == 1 {
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	return pk
}

// authed adds the client's credentials to a raw CONNECT's parameters.
func authed(p packets.ConnectParams) packets.ConnectParams {
	user, pw := creds(p.ClientIdentifier)
	p.Username, p.Password, p.UsernameFlag, p.PasswordFlag = []byte(user), pw, true, true
	return p
}

// login is r.Connect with the client's credentials.
func login(r *testkit.Raw, clientID string, clean bool) packets.Packet {
	user, pw := creds(clientID)
	return r.ConnectAs(clientID, clean, user, pw)
}
