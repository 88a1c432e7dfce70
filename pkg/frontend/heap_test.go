package frontend_test

import (
	"bytes"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// heapInUse is the live heap of the test process after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestWhileKafkaFailsTheHeapDoesNotGrowWithWhatClientsSend measures the
// node's heap, not its own counter: MQTT 3.1.1 publishers write QoS 1
// publishes as fast as the socket takes them while Kafka refuses every
// record. A node that stops reading (at mqtt.receive-maximum publishes per
// 3.1.1 client, within ingest.max-unacked-bytes for the node) makes the
// writers block once the kernel's socket buffers are full, and its heap
// holds what it took (the held publishes and their records, about twice
// their bytes); a node that kept reading would take all 512 MiB into its
// heap.
func TestWhileKafkaFailsTheHeapDoesNotGrowWithWhatClientsSend(t *testing.T) {
	const (
		clients   = 4
		perConn   = 128 << 20 // far beyond the kernel's socket buffers (tcp_rmem max 32 MiB)
		packet    = 16 << 10
		maxGrowth = 48 << 20
	)
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.Ingest.AckTimeout = 10 * time.Minute })
	n.waitReady()
	k.FailProduce(true)

	var frame bytes.Buffer
	require.NoError(t, mqttwire.Encode(&frame, packets.Packet{ProtocolVersion: 4,
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "heap/t", PacketID: 1,
		Payload: make([]byte, packet)}))
	raws := make([]*testkit.Raw, clients)
	for i := range raws {
		raws[i] = testkit.DialRaw(t, n.addr, 4)
		raws[i].Connect("heap-"+string(rune('a'+i)), true)
	}
	before := heapInUse()

	var written atomic.Int64
	done := make(chan struct{}, clients)
	for _, r := range raws {
		go func() {
			defer func() { done <- struct{}{} }()
			_ = r.Conn.SetWriteDeadline(time.Time{})
			for sent := 0; sent < perConn; sent += frame.Len() {
				if _, err := r.Conn.Write(frame.Bytes()); err != nil {
					return
				}
				written.Add(int64(frame.Len()))
			}
		}()
	}
	// Wait until the writers are stuck: nothing more written for a second.
	last := int64(-1)
	require.Eventually(t, func() bool {
		w := written.Load()
		stuck := w == last
		last = w
		return stuck
	}, 2*time.Minute, time.Second, "the writers never stopped")
	select {
	case <-done:
		t.Fatalf("a client wrote all %d MiB: the node kept reading while Kafka failed", perConn>>20)
	default:
	}
	growth := int64(heapInUse()) - int64(before)
	t.Logf("clients wrote %d MiB before blocking; the heap grew by %.1f MiB (unacknowledged bytes held: %d KiB)",
		written.Load()>>20, float64(growth)/(1<<20), n.srv.Hook().UnackedBytes()>>10)
	assert.Less(t, growth, int64(maxGrowth), "the heap grew with what the clients sent")
	for _, r := range raws {
		_ = r.Conn.Close() // unblocks the writers
	}
	for range clients {
		<-done
	}
	// Kafka returns: what the node held is produced, and it drains clean.
	k.FailProduce(false)
	require.Eventually(t, func() bool { return n.srv.Hook().Idle() }, time.Minute, 20*time.Millisecond,
		"the held publishes are produced once kafka takes records again")
}
