package ingest

import (
	"bufio"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// rawTCP is a server's end of a TCP connection that offers its socket, as
// the frontend's connections over TCP do.
type rawTCP struct{ *net.TCPConn }

func (c rawTCP) RawWriter() (syscall.RawConn, bool) {
	rc, err := c.SyscallConn()
	return rc, err == nil
}

// tcpClient is a mochi client on the server's end of a loopback TCP
// connection with small socket buffers; the test reads what the server
// writes from the client's end (cli).
func tcpClient(t *testing.T, version byte, id string) (*mqtt.Client, *net.TCPConn, func(time.Duration) (packets.Packet, error)) {
	t.Helper()
	srv, cli := testkit.TCPPair(t)
	require.NoError(t, srv.SetWriteBuffer(1024))
	require.NoError(t, cli.SetReadBuffer(1024))
	s := mqtt.New(&mqtt.Options{Logger: testkit.DiscardLogger()})
	cl := s.NewClient(rawTCP{srv}, "test", id, false)
	cl.Properties.ProtocolVersion = version
	br := bufio.NewReader(cli)
	read := func(d time.Duration) (packets.Packet, error) {
		_ = cli.SetReadDeadline(time.Now().Add(d))
		pk, _, err := mqttwire.Read(br, version, nil)
		return pk, err
	}
	return cl, cli, read
}

// TestOnASocketTheAcksLeaveInArrivalOrder: over a connection that offers
// its socket the flush queue writes the acks, in arrival order whatever
// order Kafka confirms in, MQTT 3.1.1 and 5.
func TestOnASocketTheAcksLeaveInArrivalOrder(t *testing.T) {
	for _, version := range []byte{4, 5} {
		p := &heldProducer{added: make(chan struct{}, 16)}
		h := newTestHook(t, p)
		cl, _, read := tcpClient(t, version, "client-1")
		for id := uint16(1); id <= 3; id++ {
			requireAnswered(t)(h.OnPublish(cl, publish(1, id, "t")))
			<-p.added
		}
		p.complete(2, nil)
		p.complete(1, nil)
		_, err := read(200 * time.Millisecond)
		require.Error(t, err, "no ack may leave before the first publish is confirmed")
		p.complete(0, nil)
		for id := uint16(1); id <= 3; id++ {
			pk, err := read(5 * time.Second)
			require.NoError(t, err)
			assert.Equal(t, packets.Puback, pk.FixedHeader.Type)
			assert.Equal(t, id, pk.PacketID, "version %d", version)
		}
	}
}

// TestASocketThatTakesNoMoreAcksNeverDelaysAnotherAndLosesNone: a client
// that stops reading fills its socket; the ack that does not fit goes to a
// goroutine of its own, the other client's acks still leave at once, and
// once the stalled client reads again every ack it was owed arrives, in
// order, each once.
func TestASocketThatTakesNoMoreAcksNeverDelaysAnotherAndLosesNone(t *testing.T) {
	p := &heldProducer{added: make(chan struct{}, 64)}
	h := newTestHook(t, p)
	stalled, _, readStalled := tcpClient(t, 5, "stalled")
	other, _, readOther := tcpClient(t, 5, "other")

	// Publish, each confirmed at once, until the stalled client's socket
	// takes no more: that ack stays outstanding, with a goroutine waiting
	// to write it.
	next, sent := 0, 0
	full := false
	for !full && sent < 1<<20 {
		sent++
		_, _ = h.OnPublish(stalled, publish(1, uint16(sent%65535+1), "stalled"))
		<-p.added
		p.complete(next, nil)
		next++
		written := time.Now().Add(time.Second)
		for h.Outstanding() > 0 && time.Now().Before(written) {
			time.Sleep(time.Millisecond)
		}
		full = h.Outstanding() > 0
	}
	require.True(t, full, "the stalled client's socket never filled")
	t.Logf("the stalled client's socket took %d acks", sent-1)

	for id := uint16(1); id <= 10; id++ {
		_, _ = h.OnPublish(other, publish(1, id, "other"))
		<-p.added
		p.complete(next, nil)
		next++
		pk, err := readOther(5 * time.Second)
		require.NoError(t, err, "ack %d of the unaffected client", id)
		assert.Equal(t, id, pk.PacketID)
	}

	for i := 1; i <= sent; i++ {
		pk, err := readStalled(5 * time.Second)
		require.NoError(t, err, "ack %d of %d of the stalled client", i, sent)
		require.Equal(t, uint16(i%65535+1), pk.PacketID, "ack %d", i)
	}
	require.Eventually(t, func() bool { return h.Outstanding() == 0 }, 5*time.Second, time.Millisecond)
	_, err := readStalled(100 * time.Millisecond)
	require.Error(t, err, "no ack twice")
}

// TestOnASocketAFailedRecordClosesAnMQTT311Connection: MQTT 3.1.1 gets
// the acks before the failure, then the connection is closed, since it has
// no negative acknowledgement (MQTT 5 on a socket:
// TestAFailedRecordGetsAFailureAckAndLaterOnesStillSucceed).
func TestOnASocketAFailedRecordClosesAnMQTT311Connection(t *testing.T) {
	t.Run("MQTT 3.1.1", func(t *testing.T) {
		p := &heldProducer{added: make(chan struct{}, 16)}
		h := newTestHook(t, p)
		cl, _, read := tcpClient(t, 4, "client-4")
		for id := uint16(1); id <= 3; id++ {
			_, _ = h.OnPublish(cl, publish(1, id, "a"))
			<-p.added
		}
		p.complete(0, nil)
		p.complete(1, errors.New("kafka down"))
		p.complete(2, nil)
		pk, err := read(5 * time.Second)
		require.NoError(t, err)
		assert.Equal(t, uint16(1), pk.PacketID)
		require.Eventually(t, cl.Closed, 5*time.Second, time.Millisecond, "the connection is closed at the failure")
		_, err = read(200 * time.Millisecond)
		require.Error(t, err, "no ack after the failure: the client resends those publishes")
	})
}
