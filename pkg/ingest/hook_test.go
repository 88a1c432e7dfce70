package ingest

import (
	"bufio"
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// heldProducer keeps every record until the test completes it, so the test
// decides the order in which Kafka "acknowledges".
type heldProducer struct {
	mu    sync.Mutex
	held  []*held
	added chan struct{}
}

type held struct {
	rec     *kgo.Record
	promise func(*kgo.Record, error)
}

func (p *heldProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	p.mu.Lock()
	p.held = append(p.held, &held{r, promise})
	p.mu.Unlock()
	p.added <- struct{}{}
}

func (p *heldProducer) complete(i int, err error) {
	p.mu.Lock()
	h := p.held[i]
	p.mu.Unlock()
	h.promise(h.rec, err)
}

// pipeClient is a mochi client whose socket is one end of a pipe; the test
// reads what the server writes from the other end.
func pipeClient(t *testing.T, version byte) (*mqtt.Client, func(time.Duration) (packets.Packet, error)) {
	t.Helper()
	srvEnd, cliEnd := net.Pipe()
	t.Cleanup(func() { srvEnd.Close(); cliEnd.Close() })
	s := mqtt.New(&mqtt.Options{Logger: testkit.DiscardLogger()})
	cl := s.NewClient(srvEnd, "test", "client-1", false)
	cl.Properties.ProtocolVersion = version
	br := bufio.NewReader(cliEnd)
	read := func(d time.Duration) (packets.Packet, error) {
		_ = cliEnd.SetReadDeadline(time.Now().Add(d))
		pk, _, err := mqttwire.Read(br, version, nil)
		return pk, err
	}
	return cl, read
}

func newTestHook(t *testing.T, p Producer) *Hook {
	t.Helper()
	h, err := New(Config{MaxUnackedBytes: 1 << 20, AckTimeout: 10 * time.Second},
		Options{Node: "n1", Topic: "mqtt.inbound", ReceiveMaximum: 16}, p,
		testkit.DiscardLogger(), noop.NewMeterProvider())
	require.NoError(t, err)
	return h
}

func publish(qos byte, id uint16, topic string) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		PacketID: id, TopicName: topic, Payload: []byte(topic)}
}

// requireAnswered returns a check that OnPublish's result leaves the
// PUBLISH to the hook: a packet mochi's processPublish neither acknowledges
// (QoS 0), forwards (Ignore) nor retains, and no error.
func requireAnswered(t *testing.T) func(packets.Packet, error) {
	return func(pk packets.Packet, err error) {
		t.Helper()
		require.NoError(t, err)
		require.Zero(t, pk.FixedHeader.Qos, "mochi would acknowledge it")
		require.True(t, pk.Ignore, "mochi would forward it to its own subscribers")
		require.False(t, pk.FixedHeader.Retain, "mochi would retain it")
	}
}

func TestAcksLeaveInArrivalOrderWhateverOrderKafkaConfirmsIn(t *testing.T) {
	p := &heldProducer{added: make(chan struct{}, 16)}
	h := newTestHook(t, p)
	cl, read := pipeClient(t, 5)
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
		assert.Equal(t, id, pk.PacketID, "[MQTT-4.6.0-2] acks in the order of the publishes")
		assert.Zero(t, pk.ReasonCode)
	}
	require.Eventually(t, h.Idle, 5*time.Second, time.Millisecond)
}

// TestAFailedRecordGetsAFailureAckAndLaterOnesStillSucceed, MQTT 5, on a
// connection whose acks a worker writes (a pipe) and on one whose acks the
// flush queue writes to the socket (TCP).
func TestAFailedRecordGetsAFailureAckAndLaterOnesStillSucceed(t *testing.T) {
	for _, kind := range []string{"pipe", "socket"} {
		t.Run(kind, func(t *testing.T) {
			p := &heldProducer{added: make(chan struct{}, 16)}
			h := newTestHook(t, p)
			var (
				cl   *mqtt.Client
				read func(time.Duration) (packets.Packet, error)
			)
			if kind == "pipe" {
				cl, read = pipeClient(t, 5)
			} else {
				cl, _, read = tcpClient(t, 5, "client-1")
			}
			_, _ = h.OnPublish(cl, publish(1, 1, "a"))
			<-p.added
			_, _ = h.OnPublish(cl, publish(2, 2, "b"))
			<-p.added
			p.complete(0, errors.New("kafka down"))
			p.complete(1, nil)
			pk, err := read(5 * time.Second)
			require.NoError(t, err)
			assert.Equal(t, packets.Puback, pk.FixedHeader.Type)
			assert.Equal(t, byte(0x80), pk.ReasonCode)
			pk, err = read(5 * time.Second)
			require.NoError(t, err)
			assert.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
			assert.Zero(t, pk.ReasonCode)
			in, ok := cl.State.Inflight.Get(2)
			require.True(t, ok, "the PUBREC is recorded so mochi can complete PUBREL → PUBCOMP")
			assert.Equal(t, packets.Pubrec, in.FixedHeader.Type)
		})
	}
}

func TestAResendWhileTheOriginalAwaitsKafkaIsNotProducedAgain(t *testing.T) {
	p := &heldProducer{added: make(chan struct{}, 16)}
	h := newTestHook(t, p)
	cl, read := pipeClient(t, 4)
	_, _ = h.OnPublish(cl, publish(1, 9, "a"))
	<-p.added
	dup := publish(1, 9, "a")
	dup.FixedHeader.Dup = true
	requireAnswered(t)(h.OnPublish(cl, dup))
	p.mu.Lock()
	n := len(p.held)
	p.mu.Unlock()
	assert.Equal(t, 1, n, "records produced")
	p.complete(0, nil)
	pk, err := read(5 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, uint16(9), pk.PacketID)
}

func TestTheRecordCarriesTheContractHeaders(t *testing.T) {
	p := &heldProducer{added: make(chan struct{}, 16)}
	h := newTestHook(t, p)
	cl, _ := pipeClient(t, 5)
	cl.Properties.Username = []byte("u1")
	pk := publish(0, 0, "s/1")
	pk.FixedHeader.Retain = true
	pk.Properties.User = []packets.UserProperty{{Key: "k", Val: "v"}}
	before := time.Now()
	_, _ = h.OnPublish(cl, pk)
	<-p.added
	m, err := kafkarecord.Decode(p.held[0].rec)
	require.NoError(t, err)
	assert.Equal(t, "client-1", m.ClientID)
	assert.Equal(t, "s/1", m.Topic)
	assert.True(t, m.Retain)
	assert.Equal(t, "u1", m.Username)
	assert.Equal(t, "n1", m.Node)
	assert.Equal(t, []kafkarecord.UserProperty{{Key: "k", Value: "v"}}, m.UserProperties)
	assert.False(t, m.ReceivedAt.Before(before))
	assert.Equal(t, "mqtt.inbound", p.held[0].rec.Topic)
}

func TestAClientThatDoesNotReadItsAcksNeverDelaysAnother(t *testing.T) {
	p := &heldProducer{added: make(chan struct{}, 64)}
	h := newTestHook(t, p)
	// net.Pipe has no buffer: the stalled client's first ack blocks its
	// writer for good, since the test never reads that pipe.
	stalled, _ := pipeClient(t, 5)
	other, read := pipeClient(t, 5)
	for id := uint16(1); id <= 3; id++ {
		_, _ = h.OnPublish(stalled, publish(1, id, "stalled"))
		<-p.added
	}
	for i := range 3 {
		p.complete(i, nil) // Kafka callbacks for the stalled client return at once
	}
	for id := uint16(1); id <= 10; id++ {
		_, _ = h.OnPublish(other, publish(1, id, "other"))
		<-p.added
		p.complete(int(id)+2, nil)
		pk, err := read(5 * time.Second)
		require.NoError(t, err, "ack %d of the unaffected client", id)
		assert.Equal(t, id, pk.PacketID)
	}
	// The unaffected client's last ack is counted off just after the write.
	require.Eventually(t, func() bool { return h.Outstanding() == 3 }, 5*time.Second, time.Millisecond,
		"only the stalled client's acks remain unwritten")
}

// TestAMessageIDCarriesTheTimeItWasMadeToWellUnderAMillisecond: the
// delivery latency the frontends report is measured from the time in the
// record's message id (kafkarecord.MessageIDTime), so the ids must carry it
// with the clock's precision, not only the millisecond.
func TestAMessageIDCarriesTheTimeItWasMadeToWellUnderAMillisecond(t *testing.T) {
	// google/uuid counts the fraction in 256 ns steps where RFC 9562 reads
	// 1/4096 ms (244 ns): up to 0.05 ms early.
	const slack = 50 * time.Microsecond
	gaps := make([]time.Duration, 0, 2001)
	for range 2001 {
		before := time.Now()
		id := newMessageID()
		after := time.Now()
		got, ok := kafkarecord.MessageIDTime(id)
		require.True(t, ok, id)
		require.False(t, got.Before(before.Add(-slack)), "%s: %s is before %s", id, got, before)
		require.False(t, got.After(after), "%s: %s is after %s", id, got, after)
		gaps = append(gaps, after.Sub(got))
	}
	// Whole milliseconds only would make the median gap half a millisecond.
	slices.Sort(gaps)
	assert.Less(t, gaps[len(gaps)/2], time.Millisecond/4, "the ids carry the fraction of the millisecond")
}
