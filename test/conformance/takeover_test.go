package conformance

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// Takeover: a CONNECT with the client id of a connected client makes the
// server close the existing connection [MQTT-3.1.4-2] (3.1.1) /
// [MQTT-3.1.4-3] (5.0), with DISCONNECT 0x8E Session taken over on MQTT 5.
// The old connection is observed with paho.golang (OnServerDisconnect),
// paho.mqtt.golang (connection lost: it is an error to the library) and
// raw packets; mosquitto_sub would reconnect and take the session back,
// so it is only the newcomer here, on a single node and across nodes.

// closedBy waits for the raw connection to end: it returns the DISCONNECT
// if the server sent one, or nil when it just closed the socket.
func closedBy(t *testing.T, r *testkit.Raw) *packets.Packet {
	t.Helper()
	for {
		pk, err := r.Recv(waitFor)
		if err != nil {
			require.True(t, errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || !testkit.IsTimeout(err),
				"connection still open after %s: %v", waitFor, err)
			return nil
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			return &pk
		}
	}
}

func TestTakeover(t *testing.T) {
	for _, frontends := range []int{1, 2} {
		name := "same node"
		if frontends == 2 {
			name = "across nodes"
		}
		t.Run(name, func(t *testing.T) {
			c := start(t, clustertest.Options{Frontends: frontends})
			first, second := c.Frontends[0].Addr, c.Frontends[frontends-1].Addr

			t.Run("v5/raw", func(t *testing.T) {
				cid := id("taken")
				old, _ := rawConnect(t, first, v5, cid, nil)
				rawConnect(t, second, v5, cid, nil)
				d := closedBy(t, old)
				require.NotNil(t, d, "DISCONNECT before the close")
				require.Equal(t, packets.ErrSessionTakenOver.Code, d.ReasonCode)
				_, err := old.Recv(waitFor)
				require.Error(t, err, "connection closed after the DISCONNECT")
			})
			t.Run("v5/paho.golang", func(t *testing.T) {
				cid := id("taken")
				old, err := dialPaho5Conn(t, first, opts{ID: cid}, nil)
				require.NoError(t, err)
				dialPaho5(t, second, opts{ID: cid})
				select {
				case d := <-old.disc:
					require.EqualValues(t, 0x8E, d.ReasonCode)
				case <-time.After(waitFor):
					t.Fatal("no DISCONNECT on the connection taken over")
				}
			})
			t.Run("v5/mosquitto takes over paho.golang", func(t *testing.T) {
				cid := id("taken")
				old, err := dialPaho5Conn(t, first, opts{ID: cid}, nil)
				require.NoError(t, err)
				dialMosquitto(v5)(t, second, opts{ID: cid})
				select {
				case d := <-old.disc:
					require.EqualValues(t, 0x8E, d.ReasonCode)
				case <-time.After(waitFor):
					t.Fatal("no DISCONNECT on the connection taken over")
				}
			})
			t.Run("v311/raw", func(t *testing.T) {
				cid := id("taken")
				old, _ := rawConnect(t, first, v311, cid, nil)
				rawConnect(t, second, v311, cid, nil)
				closedBy(t, old) // whether a DISCONNECT came first: TestTakeoverV311NoDisconnect
			})
			t.Run("v311/paho.mqtt.golang", func(t *testing.T) {
				cid := id("taken")
				old := dialPaho3(t, first, opts{ID: cid}).(*paho3)
				dialPaho3(t, second, opts{ID: cid})
				require.Eventually(t, func() bool { return !old.c.IsConnectionOpen() }, waitFor, 10*time.Millisecond,
					"the connection taken over is closed")
			})
			t.Run("v311/mosquitto takes over paho.mqtt.golang", func(t *testing.T) {
				cid := id("taken")
				old := dialPaho3(t, first, opts{ID: cid}).(*paho3)
				dialMosquitto(v311)(t, second, opts{ID: cid})
				require.Eventually(t, func() bool { return !old.c.IsConnectionOpen() }, waitFor, 10*time.Millisecond,
					"the connection taken over is closed")
			})
			t.Run("the session moves with the takeover", func(t *testing.T) {
				// The new connection resumes the session: a QoS 1 message
				// published after the takeover reaches it [MQTT-3.1.2-4].
				cid, f := id("taken"), id("moving")
				dialPaho5(t, first, opts{ID: cid, Persistent: true, Subs: []sub{{f, 1}}})
				s := dialPaho5(t, second, opts{ID: cid, Persistent: true})
				present, _ := s.SessionPresent()
				require.True(t, present, "Session Present on the taking-over connection [MQTT-3.2.2-3]")
				dialPaho5(t, first, opts{ID: id("pub")}).Publish(f, "here", 1, false)
				require.Equal(t, "here", next(t, s).Payload)
			})
		})
	}
}
