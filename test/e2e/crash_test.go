package e2e

import (
	"encoding/binary"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestSIGKILLOfTheFrontendLosesNoAcknowledgedMessage streams QoS 1
// publishes with 64 in flight, kills the frontend with SIGKILL in the middle,
// and checks that every publish whose PUBACK the client saw is in Kafka,
// which runs in a process of its own.
func TestSIGKILLOfTheFrontendLosesNoAcknowledgedMessage(t *testing.T) {
	kafka := startKafka(t)
	fe := startFrontend(t, kafka)

	const window = 64
	c := testkit.DialRaw(t, fe.mqtt, 4)
	c.Connect("crash-publisher", true)

	var (
		mu      sync.Mutex
		pending = map[uint16]uint32{} // packet id → sequence number
		acked   = map[uint32]bool{}
		sent    uint32
	)
	slots := make(chan struct{}, window)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			pk, err := c.Recv(30 * time.Second)
			if err != nil {
				return // the frontend died
			}
			if pk.FixedHeader.Type != packets.Puback {
				continue
			}
			mu.Lock()
			seq, ok := pending[pk.PacketID]
			delete(pending, pk.PacketID)
			if ok {
				assert.Zero(t, pk.ReasonCode)
				acked[seq] = true
			}
			mu.Unlock()
			<-slots
		}
	}()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for seq := uint32(0); ; seq++ {
			select {
			case slots <- struct{}{}:
			case <-readerDone:
				return
			}
			id := uint16(seq%65535) + 1
			payload := make([]byte, 64)
			binary.BigEndian.PutUint32(payload, seq)
			mu.Lock()
			pending[id] = seq
			sent = seq + 1
			mu.Unlock()
			if err := c.TrySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				TopicName: "crash/stream", PacketID: id, Payload: payload}); err != nil {
				return
			}
		}
	}()

	// Kill the frontend once a few thousand messages are acknowledged, in
	// the middle of the stream.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 3000
	}, 60*time.Second, 5*time.Millisecond, "stream never got going")
	require.NoError(t, fe.Cmd.Process.Signal(syscall.SIGKILL))
	fe.Wait(10 * time.Second)
	<-readerDone
	<-writerDone

	mu.Lock()
	ackedCopy := make(map[uint32]bool, len(acked))
	for k := range acked {
		ackedCopy[k] = true
	}
	total := sent
	mu.Unlock()
	require.Less(t, len(ackedCopy), int(total), "the kill must land while publishes are in flight")

	reader := testkit.NewReader(t, kafka, "mqtt.inbound")
	recs := reader.ReadAtLeast(len(ackedCopy), 30*time.Second)
	inKafka := map[uint32]int{}
	for _, r := range recs {
		inKafka[binary.BigEndian.Uint32(r.Value)]++
	}
	var missing []uint32
	for seq := range ackedCopy {
		if inKafka[seq] == 0 {
			missing = append(missing, seq)
		}
	}
	dups := 0
	for _, n := range inKafka {
		if n > 1 {
			dups++
		}
	}
	t.Logf("sent %d, acknowledged %d, in kafka %d (of them unacknowledged: %d), duplicated %d",
		total, len(ackedCopy), len(inKafka), len(inKafka)-len(ackedCopy), dups)
	assert.Empty(t, missing, "acknowledged messages missing from kafka")
	assert.Zero(t, dups, "a single stream without resends must not duplicate")
}
