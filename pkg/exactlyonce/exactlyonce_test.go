package exactlyonce

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/session"
)

var testRedis testkit.TestRedis

func TestMain(m *testing.M) { os.Exit(testkit.RunWithRedis(m, false, &testRedis)) }

var ids atomic.Uint64

// fixture is a session store on the test server and a client whose
// session it registers, with the epoch the tracker sees for it.
type fixture struct {
	store *session.Store
	cl    *mqtt.Client
	peer  net.Conn // the client's end of the connection
	epoch atomic.Uint64
	t     *Tracker
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	testRedis.Require(t)
	cfg := session.Config{
		Redis:             session.RedisConfig{Addrs: []string{testRedis.Addr}},
		MaxQueuedMessages: 100, MaxQueuedBytes: 1 << 20, QueueFullPolicy: session.DropOldest,
		HeartbeatInterval: time.Second, LivenessTTL: 5 * time.Second,
	}
	require.NoError(t, cfg.Validate())
	rdb := cfg.Redis.NewClient()
	t.Cleanup(func() { _ = rdb.Close() })
	f := &fixture{store: session.New(rdb, cfg, session.WithLogger(testkit.DiscardLogger()))}
	server, client := net.Pipe()
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	f.peer = client
	f.cl = mqtt.New(nil).NewClient(server, "t", fmt.Sprintf("%s-%d", t.Name(), ids.Add(1)), false)
	f.cl.Properties.ProtocolVersion = 5
	f.connect(t)
	f.t = New(f.store, func(*mqtt.Client) (uint64, bool) {
		e := f.epoch.Load()
		return e, e != 0
	}, 5*time.Second, testkit.DiscardLogger())
	return f
}

// connect registers a new connection of the client's session, as a
// reconnect on any node does, and makes it the tracker's.
func (f *fixture) connect(t *testing.T) uint64 {
	t.Helper()
	res, err := f.store.Connect(context.Background(), session.ConnectRequest{
		ClientID: f.cl.ID, Node: "node", ExpirySeconds: 3600, Protocol: 5, Window: 10,
	})
	require.NoError(t, err)
	f.epoch.Store(res.Epoch)
	return res.Epoch
}

func TestAnIDMarkedBeforeAReconnectIsStillReceivedAfterIt(t *testing.T) {
	f := newFixture(t)
	got, err := f.t.Received(f.cl, 7)
	require.NoError(t, err)
	require.False(t, got, "nothing marked yet")

	require.NoError(t, f.t.MarkReceived(f.cl, 7))
	f.connect(t) // the client reconnects, here or on another node

	got, err = f.t.Received(f.cl, 7)
	require.NoError(t, err)
	require.True(t, got, "the DUP resend must be answered without producing it again [MQTT-4.3.3-9]")
	got, err = f.t.Received(f.cl, 8)
	require.NoError(t, err)
	require.False(t, got)
}

func TestAConnectionThatLostItsSessionCannotMarkIDs(t *testing.T) {
	f := newFixture(t)
	old := f.epoch.Load()
	f.connect(t)
	f.epoch.Store(old) // the tracker still sees the old connection's epoch
	err := f.t.MarkReceived(f.cl, 9)
	require.Error(t, err)
	require.True(t, session.Gone(err), "want a fenced write, got %v", err)

	f.epoch.Store(0) // no session here at all
	require.ErrorIs(t, f.t.MarkReceived(f.cl, 9), session.ErrFenced)
}

func TestAPubrelForAnIDOnlyInTheStoreIsAnsweredWithPubcomp(t *testing.T) {
	f := newFixture(t)
	require.NoError(t, f.t.MarkReceived(f.cl, 11))
	f.connect(t) // mochi's inflight of the new connection does not know id 11

	read := make(chan packets.FixedHeader, 1)
	var id uint16
	go func() {
		r := bufio.NewReader(f.peer)
		b, err := r.ReadByte()
		if err != nil {
			return
		}
		var fh packets.FixedHeader
		_ = fh.Decode(b)
		n, _ := r.ReadByte()
		body := make([]byte, n)
		_, _ = r.Read(body)
		if len(body) >= 2 {
			id = uint16(body[0])<<8 | uint16(body[1])
		}
		read <- fh
	}()
	pubrel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 11, ProtocolVersion: 5}
	require.True(t, f.t.Release(f.cl, pubrel), "the tracker must answer an id mochi does not track")
	select {
	case fh := <-read:
		require.Equal(t, packets.Pubcomp, fh.Type)
		require.Equal(t, uint16(11), id)
	case <-time.After(10 * time.Second):
		t.Fatal("no PUBCOMP written")
	}

	got, err := f.t.Received(f.cl, 11)
	require.NoError(t, err)
	require.False(t, got, "a released id is free for a new message")
	require.False(t, f.t.Release(f.cl, pubrel), "a PUBREL for an id the store does not hold is mochi's to answer")
}
