package frontend_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

// gauge reads a metric value from /metrics text.
func gauge(t *testing.T, metrics, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(metrics)
	require.NotNil(t, m, "metric %s not exported", name)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

func TestWhileKafkaFailsNoAckIsSentMemoryStaysBoundedAndEverythingIsProducedAfterRecovery(t *testing.T) {
	const (
		bound    = 64 << 10
		payload  = 8 << 10
		messages = 40 // 320 KiB: five times the bound
	)
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Ingest.MaxUnackedBytes = bound
		c.Ingest.AckTimeout = 2 * time.Minute
		c.MQTT.MaxPacketSize = 16 << 10
	})
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)

	k.FailProduce(true)
	// Two clients of different versions publish at once; neither may see
	// an ack while Kafka refuses the records.
	v3 := dialV3(t, "tcp://"+n.addr, "held-v3", "", func(o *pahov3.ClientOptions) {
		o.SetWriteTimeout(0).SetMaxResumePubInFlight(0)
	})
	var acked3 atomic.Int64
	var toks []pahov3.Token
	for i := range messages {
		body := make([]byte, payload)
		binary.BigEndian.PutUint32(body, uint32(i))
		toks = append(toks, v3.Publish("held/v3", 1, false, body))
	}
	v5 := dialV5(t, n.addr, "held-v5", "")
	var acked5 atomic.Int64
	var wg sync.WaitGroup
	results := make(chan error, messages)
	for i := range messages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := make([]byte, payload)
			binary.BigEndian.PutUint32(body, uint32(i))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			resp, err := v5.Publish(ctx, &paho.Publish{QoS: 1, Topic: "held/v5", Payload: body})
			if err == nil && resp.ReasonCode != 0 {
				err = fmt.Errorf("reason 0x%02x", resp.ReasonCode)
			}
			acked5.Add(1)
			results <- err
		}()
	}
	go func() {
		for _, tok := range toks {
			tok.Wait()
			acked3.Add(1)
		}
	}()

	// The node fills its bound and then stops reading sockets.
	require.Eventually(t, func() bool {
		return gauge(t, n.metrics(), "fleetgate_ingest_unacked_bytes") > bound/2
	}, 10*time.Second, 20*time.Millisecond)
	for range 20 {
		un := n.srv.Hook().UnackedBytes()
		assert.LessOrEqual(t, un, int64(bound), "unacknowledged bytes above the bound")
		time.Sleep(100 * time.Millisecond)
	}
	assert.Zero(t, acked3.Load(), "PUBACK sent to the 3.1.1 client while kafka failed")
	assert.Zero(t, acked5.Load(), "PUBACK sent to the 5.0 client while kafka failed")
	assert.Less(t, n.srv.Hook().UnackedBytes(), int64(2*messages*payload), "the node buffered everything instead of stopping reads")

	k.FailProduce(false)
	wg.Wait()
	close(results)
	for err := range results {
		require.NoError(t, err)
	}
	for i, tok := range toks {
		require.True(t, tok.WaitTimeout(time.Minute), "publish %d never acked", i)
		require.NoError(t, tok.Error())
	}
	recs := reader.Read(2*messages, 30*time.Second)
	// Per publisher, the order of records is the order of publishes.
	next := map[string]uint32{}
	seen := map[string]map[uint32]bool{"held-v3": {}, "held-v5": {}}
	for _, r := range recs {
		seq := binary.BigEndian.Uint32(r.Value)
		seen[string(r.Key)][seq] = true
		if string(r.Key) == "held-v3" {
			assert.Equal(t, next["held-v3"], seq, "3.1.1 publisher order")
			next["held-v3"] = seq + 1
		}
	}
	assert.Len(t, seen["held-v3"], messages)
	assert.Len(t, seen["held-v5"], messages)
	require.Eventually(t, func() bool { return n.srv.Hook().Idle() }, 5*time.Second, 10*time.Millisecond)
}

func TestAfterTheAckDeadlineClientsGetAFailureNeverASuccess(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Ingest.AckTimeout = time.Second
		c.Ingest.MaxUnackedBytes = 64 << 10
		c.MQTT.MaxPacketSize = 16 << 10
	})
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)

	k.FailProduce(true)
	t.Run("an MQTT 5 client gets a failure reason code for QoS 1 and 2", func(t *testing.T) {
		c := dialV5(t, n.addr, "deadline-v5", "")
		for qos := byte(1); qos <= 2; qos++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := c.Publish(ctx, &paho.Publish{QoS: qos, Topic: "deadline/v5", Payload: []byte("x")})
			cancel()
			require.NotNil(t, resp, "qos %d: %v", qos, err)
			assert.Equal(t, byte(0x80), resp.ReasonCode, "qos %d", qos)
		}
	})
	t.Run("an MQTT 5 client over the byte bound gets 0x80 or 0x97 for every publish", func(t *testing.T) {
		c := dialV5(t, n.addr, "flood-v5", "")
		var wg sync.WaitGroup
		codes := make(chan byte, 20)
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				resp, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: "deadline/flood", Payload: make([]byte, 8<<10)})
				if resp == nil {
					t.Errorf("no answer: %v", err)
					return
				}
				codes <- resp.ReasonCode
			}()
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			assert.Contains(t, []byte{0x80, 0x97}, c)
		}
	})
	t.Run("an MQTT 3.1.1 client is disconnected", func(t *testing.T) {
		lost := make(chan error, 1)
		c := dialV3(t, "tcp://"+n.addr, "deadline-v3", "", func(o *pahov3.ClientOptions) {
			o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
		})
		tok := c.Publish("deadline/v3", 1, false, []byte("x"))
		select {
		case err := <-lost:
			t.Logf("connection lost as expected: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("3.1.1 client not disconnected after the deadline")
		}
		tok.WaitTimeout(time.Second)
		assert.False(t, isAcked(tok), "3.1.1 publish reported as acknowledged")
	})

	k.FailProduce(false)
	t.Run("when Kafka returns, flow resumes without a restart", func(t *testing.T) {
		c := dialV5(t, n.addr, "resumed-v5", "")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: "deadline/resumed", Payload: []byte("back")})
		require.NoError(t, err)
		require.Zero(t, resp.ReasonCode)
		recs := reader.ReadAtLeast(1, 10*time.Second)
		var found bool
		for _, r := range recs {
			found = found || string(r.Value) == "back"
			assert.NotEqual(t, "x", string(r.Value), "a failed publish reached kafka")
		}
		assert.True(t, found)
	})
}

// isAcked reports whether a paho v3 token completed without error, which for
// a publish means a PUBACK arrived.
func isAcked(tok pahov3.Token) bool {
	select {
	case <-tok.Done():
		return tok.Error() == nil
	default:
		return false
	}
}

// TestWhenKafkaHoldsTheRequestClientsAreAnsweredAtTheAckDeadline: a broker
// that took the produce request and stopped answering (a frozen process)
// holds an idempotent producer's records past the producer's own delivery
// timeout, since they may have been written; the node answers them at the
// ack deadline all the same, with a failure, never a success, and flow
// resumes when the broker answers. The held records are then written:
// the clients were told they failed, so a resend would be a duplicate.
func TestWhenKafkaHoldsTheRequestClientsAreAnsweredAtTheAckDeadline(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.Ingest.AckTimeout = time.Second })
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)
	v5 := dialV5(t, n.addr, "held-request-v5", "")
	publish := func(c *paho.Client, qos byte, payload string) *paho.PublishResponse {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := c.Publish(ctx, &paho.Publish{QoS: qos, Topic: "held/request", Payload: []byte(payload)})
		require.NotNil(t, resp, "qos %d: no answer: %v", qos, err)
		return resp
	}
	require.Zero(t, publish(v5, 1, "before").ReasonCode, "the producer is connected")

	k.HoldProduce(true)
	t.Cleanup(func() { k.HoldProduce(false) })
	for qos := byte(1); qos <= 2; qos++ {
		assert.Equal(t, byte(0x80), publish(v5, qos, fmt.Sprintf("held-%d", qos)).ReasonCode, "MQTT 5, qos %d", qos)
	}
	lost := make(chan error, 1)
	v3 := dialV3(t, "tcp://"+n.addr, "held-request-v3", "", func(o *pahov3.ClientOptions) {
		o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
	})
	tok := v3.Publish("held/request", 1, false, []byte("held-v3"))
	select {
	case err := <-lost:
		t.Logf("MQTT 3.1.1 connection closed at the deadline: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the MQTT 3.1.1 client was not disconnected at the deadline")
	}
	tok.WaitTimeout(time.Second)
	assert.False(t, isAcked(tok), "3.1.1 publish reported as acknowledged")
	assert.Equal(t, float64(3), counter(t, n.metrics(), "fleetgate_ingest_records_failed_total", `reason="ack_timeout"`))

	k.HoldProduce(false)
	require.Zero(t, publish(v5, 1, "after").ReasonCode, "flow resumes when the broker answers")
	var values []string
	for _, r := range reader.ReadAtLeast(5, 15*time.Second) {
		values = append(values, string(r.Value))
	}
	for _, v := range []string{"before", "held-1", "held-2", "held-v3", "after"} {
		assert.Contains(t, values, v)
	}
	require.Eventually(t, func() bool { return n.srv.Hook().Idle() }, 10*time.Second, 10*time.Millisecond)
}
