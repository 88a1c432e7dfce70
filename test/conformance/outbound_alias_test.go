package conformance

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// connectWithAliases connects a raw MQTT 5 client that takes up to max
// topic aliases from the server (CONNECT Topic Alias Maximum; 0 sends
// none), subscribes it to filter at QoS 1 and returns it.
func connectWithAliases(t *testing.T, addr, cid, filter string, max uint16) *testkit.Raw {
	t.Helper()
	r := testkit.DialRaw(t, addr, v5)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: authed(packets.ConnectParams{ClientIdentifier: cid, Clean: true, Keepalive: 30})}
	pk.Properties.TopicAliasMaximum = max
	r.Send(pk)
	ack := rawRecv(t, r)
	require.Equal(t, packets.Connack, ack.FixedHeader.Type)
	require.Zero(t, ack.ReasonCode)
	rawSubscribe(t, r, 1, 0, packets.Subscription{Filter: filter, Qos: 1})
	return r
}

// received is a PUBLISH as the client read it off the wire.
type received struct {
	topic   string
	alias   uint16
	payload string
}

func recvPublishes(t *testing.T, r *testkit.Raw, n int) []received {
	t.Helper()
	var out []received
	for len(out) < n {
		pk := rawRecv(t, r)
		require.Equal(t, packets.Publish, pk.FixedHeader.Type)
		r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		var a uint16
		if pk.Properties.TopicAliasFlag {
			a = pk.Properties.TopicAlias
		}
		out = append(out, received{topic: pk.TopicName, alias: a, payload: string(pk.Payload)})
	}
	return out
}

// TestTheServerSendsTopicAliasesToAClientThatTakesThem: a subscriber whose
// CONNECT allows topic aliases gets one for each topic sent to it a second
// time, up to the smaller of its Topic Alias Maximum and the server's
// bound, never above it [MQTT-3.1.2-26]; later messages on that topic carry
// the alias with an empty topic name. A client that allows none gets none
// [MQTT-3.1.2-27], and mappings end with the connection [MQTT-3.3.2-7].
func TestTheServerSendsTopicAliasesToAClientThatTakesThem(t *testing.T) {
	c := start(t, clustertest.Options{Frontends: 1})
	addr := c.Frontends[0].Addr
	f := id("alias")
	pub := dialPaho5(t, addr, opts{ID: id("pub")})
	sequence := []string{"a", "a", "a", "b", "b", "c", "c", "c"}
	send := func() {
		for i, s := range sequence {
			pub.Publish(f+"/"+s, s+string(rune('0'+i)), 1, false)
		}
	}

	cid := id("taker")
	r := connectWithAliases(t, addr, cid, f+"/#", 2)
	plain := connectWithAliases(t, addr, id("plain"), f+"/#", 0)
	send()
	got := recvPublishes(t, r, len(sequence))
	want := []received{
		{f + "/a", 0, "a0"}, // sent once: no alias yet
		{f + "/a", 1, "a1"}, // the second time: topic and alias 1
		{"", 1, "a2"},       // then the alias alone
		{f + "/b", 0, "b3"},
		{f + "/b", 2, "b4"},
		{f + "/c", 0, "c5"}, // the client's maximum (2) is reached: no alias for c
		{f + "/c", 0, "c6"},
		{f + "/c", 0, "c7"},
	}
	assert.Equal(t, want, got)
	for _, m := range recvPublishes(t, plain, len(sequence)) {
		assert.Zero(t, m.alias, "no alias to a client that takes none [MQTT-3.1.2-27]")
		assert.NotEmpty(t, m.topic)
	}

	// A new connection starts without mappings.
	r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	_, _ = r.Recv(time.Second)
	require.NoError(t, r.Conn.Close())
	r = connectWithAliases(t, addr, cid, f+"/#", 2)
	pub.Publish(f+"/a", "again", 1, false)
	assert.Equal(t, []received{{f + "/a", 0, "again"}}, recvPublishes(t, r, 1), "[MQTT-3.3.2-7]")
}
