package frontend_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// publish5 is the bytes of an MQTT 5 PUBLISH with a Topic Alias property
// (always sent, also when it is 0, which mochi's encoder refuses to write).
func publish5(topic string, qos byte, packetID uint16, alias uint16, payload string) []byte {
	var body []byte
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	if qos > 0 {
		body = append(body, byte(packetID>>8), byte(packetID))
	}
	body = append(body, 3, 0x23, byte(alias>>8), byte(alias)) // properties: Topic Alias
	body = append(body, payload...)
	out := []byte{0x30 | qos<<1}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// requireDisconnect reads until the server's DISCONNECT and requires its
// reason, then the end of the connection.
func requireDisconnect(t *testing.T, c *testkit.Raw, reason byte) {
	t.Helper()
	pk := recvType(t, c, packets.Disconnect)
	require.Equal(t, reason, pk.ReasonCode, "DISCONNECT reason (%q)", pk.Properties.ReasonString)
	_, err := c.Recv(5 * time.Second)
	require.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "the server must close the connection, got %v", err)
}

func TestInboundTopicAliasesAreBoundedByTheAnnouncedMaximum(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil) // default mqtt.topic-alias-maximum: 10
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)
	neighbour := dialV5(t, n.addr, "alias-neighbour", "")

	t.Run("CONNACK announces the configured Topic Alias Maximum, not mochi's 65535 [MQTT-3.2.2-17]", func(t *testing.T) {
		c := testkit.DialRaw(t, n.addr, 5)
		ack := c.Connect("alias-announce", true)
		assert.Equal(t, uint16(10), ack.Properties.TopicAliasMaximum)
	})

	t.Run("aliases from 1 to the maximum are accepted and resolved [MQTT-3.3.2-12]", func(t *testing.T) {
		c := testkit.DialRaw(t, n.addr, 5)
		c.Connect("alias-ok", true)
		c.Write(publish5("alias/one", 1, 1, 1, "a"))
		c.Write(publish5("alias/ten", 1, 2, 10, "b"))
		c.Write(publish5("", 1, 3, 10, "c"))
		c.Write(publish5("", 1, 4, 1, "d"))
		for id := uint16(1); id <= 4; id++ {
			ack := recvType(t, c, packets.Puback)
			assert.Equal(t, id, ack.PacketID)
			assert.Zero(t, ack.ReasonCode, "PUBACK %d reason", id)
		}
	})

	cases := []struct {
		name   string
		pub    []byte
		reason byte
		label  string
	}{
		{"Topic Alias 0 with a topic name gets DISCONNECT 0x94 [MQTT-3.3.2-8]", publish5("alias/zero", 1, 1, 0, "x"), 0x94, "topic_alias_invalid"},
		{"Topic Alias 0 without a topic name gets DISCONNECT 0x94 [MQTT-3.3.2-8]", publish5("", 1, 1, 0, "x"), 0x94, "topic_alias_invalid"},
		{"a Topic Alias above the announced maximum gets DISCONNECT 0x94 [MQTT-3.3.2-9]", publish5("alias/eleven", 1, 1, 11, "x"), 0x94, "topic_alias_invalid"},
		{"a QoS 0 PUBLISH with a Topic Alias above the maximum gets DISCONNECT 0x94 [MQTT-3.3.2-9]", publish5("alias/eleven", 0, 0, 11, "x"), 0x94, "topic_alias_invalid"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="`+tc.label+`"`)
			failed := counter(t, n.metrics(), "fleetgate_ingest_records_failed_total", `reason="invalid_topic"`)
			c := testkit.DialRaw(t, n.addr, 5)
			c.Connect(fmt.Sprintf("alias-bad-%d", i), true)
			c.Write(tc.pub)
			requireDisconnect(t, c, tc.reason)
			require.Eventually(t, func() bool {
				return counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="`+tc.label+`"`) > before
			}, 5*time.Second, 20*time.Millisecond, "disconnect not counted as %s", tc.label)
			assert.Equal(t, failed+1, counter(t, n.metrics(), "fleetgate_ingest_records_failed_total", `reason="invalid_topic"`),
				"the refused publish is counted once in records_failed{invalid_topic}")
		})
	}

	t.Run("an alias set on an earlier connection has no mapping: DISCONNECT 0x82, nothing produced [MQTT-3.3.2-7]", func(t *testing.T) {
		for _, qos := range []byte{0, 1, 2} {
			clientID := fmt.Sprintf("alias-carry-%d", qos)
			c := testkit.DialRaw(t, n.addr, 5)
			c.Connect(clientID, false)
			c.Write(publish5("alias/carried", 1, 1, 1, "first"))
			require.Zero(t, recvType(t, c, packets.Puback).ReasonCode)
			require.NoError(t, c.Conn.Close())

			c = testkit.DialRaw(t, n.addr, 5)
			c.Connect(clientID, false)
			c.Write(publish5("", qos, 2, 1, "second"))
			requireDisconnect(t, c, 0x82)
		}
		require.Eventually(t, func() bool {
			return counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="protocol_error"`) >= 3
		}, 5*time.Second, 20*time.Millisecond, "disconnects not counted as protocol_error")
	})

	// The record contract: every record's mqtt.topic is a valid topic
	// name. Only the accepted publishes above became records.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := neighbour.Publish(ctx, &paho.Publish{QoS: 1, Topic: "alias/marker", Payload: []byte("end")})
	require.NoError(t, err)
	var topics []string
	for _, r := range reader.Read(8, 20*time.Second) {
		tp, _ := testkit.Header(r, kafkarecord.HeaderTopic)
		topics = append(topics, tp)
	}
	assert.ElementsMatch(t, []string{"alias/one", "alias/ten", "alias/ten", "alias/one",
		"alias/carried", "alias/carried", "alias/carried", "alias/marker"}, topics)
}

func TestWithTopicAliasMaximumZeroNoAliasIsAnnouncedOrAccepted(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.TopicAliasMaximum = 0 })
	n.waitReady()
	c := testkit.DialRaw(t, n.addr, 5)
	ack := c.Connect("no-alias", true)
	// Absent (0): the client MUST NOT send any Topic Alias [MQTT-3.2.2-18].
	assert.Zero(t, ack.Properties.TopicAliasMaximum)
	c.Write(publish5("alias/none", 1, 1, 1, "x"))
	requireDisconnect(t, c, 0x94) // [MQTT-3.3.2-9]
}

func TestMoreUnacknowledgedPublishesThanTheReceiveMaximumGetDisconnect0x93(t *testing.T) {
	for _, rm := range []int{1, 2} {
		t.Run(fmt.Sprintf("receive maximum %d", rm), func(t *testing.T) {
			k := testkit.StartKafka(t)
			n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.ReceiveMaximum = rm })
			n.waitReady()
			pub := func(c *testkit.Raw, qos byte, id uint16) {
				c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
					TopicName: "rm/test", PacketID: id, Payload: []byte("x")})
			}

			t.Run("QoS 1 publishes awaiting a slow Kafka [MQTT-3.3.4-7]", func(t *testing.T) {
				c := testkit.DialRaw(t, n.addr, 5)
				ack := c.Connect(fmt.Sprintf("rm-qos1-%d", rm), true)
				require.Equal(t, uint16(rm), ack.Properties.ReceiveMaximum, "CONNACK Receive Maximum")
				k.FailProduce(true) // Kafka holds every record: no PUBACK goes out
				t.Cleanup(func() { k.FailProduce(false) })
				for i := 1; i <= rm; i++ {
					pub(c, 1, uint16(i))
				}
				pub(c, 1, uint16(rm+1))
				requireDisconnect(t, c, 0x93)
				require.Eventually(t, func() bool {
					return counter(t, n.metrics(), "fleetgate_frontend_disconnects_total", `reason="receive_maximum_exceeded"`) > 0
				}, 5*time.Second, 20*time.Millisecond, "disconnect not counted as receive_maximum_exceeded")
				assert.Positive(t, counter(t, n.metrics(), "fleetgate_ingest_records_failed_total", `reason="receive_maximum_exceeded"`))
				k.FailProduce(false)
			})

			t.Run("a QoS 2 publish counts until its PUBCOMP, not its PUBREC (3.3.4)", func(t *testing.T) {
				c := testkit.DialRaw(t, n.addr, 5)
				c.Connect(fmt.Sprintf("rm-qos2-%d", rm), true)
				for i := 1; i <= rm; i++ {
					pub(c, 2, uint16(i))
					require.Zero(t, recvType(t, c, packets.Pubrec).ReasonCode)
				}
				// Releasing one frees one slot.
				c.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 1})
				require.Zero(t, recvType(t, c, packets.Pubcomp).ReasonCode)
				pub(c, 1, 100)
				require.Zero(t, recvType(t, c, packets.Puback).ReasonCode)
				// Fill the window again with a QoS 2 publish whose
				// PUBREL has not come: one more publish is one too many.
				pub(c, 2, 101)
				require.Zero(t, recvType(t, c, packets.Pubrec).ReasonCode)
				pub(c, 1, 102)
				requireDisconnect(t, c, 0x93)
			})

			t.Run("a client that keeps to the Receive Maximum is never disconnected", func(t *testing.T) {
				client := dialV5(t, n.addr, fmt.Sprintf("rm-paho-%d", rm), "")
				var wg sync.WaitGroup
				var failed atomic.Int64
				for g := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range 25 {
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							resp, err := client.Publish(ctx, &paho.Publish{QoS: byte(1 + (g+i)%2), Topic: "rm/paho", Payload: []byte("y")})
							cancel()
							if err != nil || resp.ReasonCode != 0 {
								failed.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				assert.Zero(t, failed.Load(), "publishes that failed")
			})
		})
	}
}

func TestTheByteBudgetCountsUserPropertiesAndEveryOtherHeader(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	n.waitReady()
	k.FailProduce(true) // hold the record: its bytes stay counted
	t.Cleanup(func() { k.FailProduce(false) })
	c := dialV5(t, n.addr, "budget-props", "")
	const userBytes = 32 << 10
	props := &paho.PublishProperties{CorrelationData: []byte(strings.Repeat("c", 1024)), ResponseTopic: "reply/" + strings.Repeat("r", 1024)}
	for i := range 8 {
		props.User = append(props.User, paho.UserProperty{Key: fmt.Sprintf("k%d", i), Value: strings.Repeat("v", userBytes/8)})
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = c.Publish(ctx, &paho.Publish{QoS: 1, Topic: "budget/props", Payload: []byte("tiny"), Properties: props})
	}()
	// Key, value and topic alone are some 30 bytes (plus a 256-byte
	// overhead); the held record must count its user properties,
	// correlation data and response topic too.
	require.Eventually(t, func() bool {
		return gauge(t, n.metrics(), "fleetgate_ingest_unacked_bytes") >= userBytes+2048
	}, 10*time.Second, 20*time.Millisecond, "unacked bytes: %v", gauge(t, n.metrics(), "fleetgate_ingest_unacked_bytes"))
}

func TestARecordTooLargeForKafkaGets0x95AndOneLogLine(t *testing.T) {
	k := testkit.StartKafka(t)
	var tooLarge atomic.Bool
	// Kafka's answer for a record above its max.message.bytes.
	k.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		if !tooLarge.Load() {
			return nil, nil, false
		}
		preq := req.(*kmsg.ProduceRequest)
		resp := preq.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range preq.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	var logs lockedBuffer
	cfg := testConfig(t, k.Addr())
	f := clustertest.StartFrontend(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	n := &node{Frontend: f, t: t, srv: f.Server, cfg: cfg, addr: f.Addr, ops: f.Server.OpsAddr()}
	n.waitReady()

	tooLarge.Store(true)
	const publishes = 6
	c5 := testkit.DialRaw(t, n.addr, 5)
	c5.Connect("too-large-v5", true)
	for i := 1; i <= publishes; i++ {
		qos := byte(1 + i%2)
		c5.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
			TopicName: "big/one", PacketID: uint16(i), Payload: []byte("pretend this is large")})
		typ := packets.Puback
		if qos == 2 {
			typ = packets.Pubrec
		}
		ack := recvType(t, c5, typ)
		assert.Equal(t, uint16(i), ack.PacketID)
		assert.Equal(t, byte(0x95), ack.ReasonCode, "PUBACK/PUBREC reason: 0x95 Packet too large, not 0x80")
	}

	// MQTT 3.1.1 has no negative ack: the connection closes.
	c3 := testkit.DialRaw(t, n.addr, 4)
	c3.Connect("too-large-v3", true)
	c3.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName: "big/one", PacketID: 1, Payload: []byte("pretend this is large")})
	_, err := c3.Recv(15 * time.Second)
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "the server must close the connection, got %v", err)

	assert.Equal(t, float64(publishes+1), counter(t, n.metrics(), "fleetgate_ingest_records_failed_total", `reason="too_large"`))
	lines := strings.Count(logs.String(), "kafka refused record as too large")
	assert.GreaterOrEqual(t, lines, 1, "the first refusal is logged")
	assert.Less(t, lines, publishes+1, "one rate-limited line, not one per publish")

	// Other records still flow.
	tooLarge.Store(false)
	reader := testkit.NewReader(t, k.Addr(), topic)
	c5b := dialV5(t, n.addr, "after-too-large", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c5b.Publish(ctx, &paho.Publish{QoS: 1, Topic: "big/after", Payload: []byte("ok")})
	require.NoError(t, err)
	assert.Zero(t, resp.ReasonCode)
	got := reader.Read(1, 10*time.Second)
	tp, _ := testkit.Header(got[0], kafkarecord.HeaderTopic)
	assert.Equal(t, "big/after", tp)
}

func TestTheTopicAliasMaximumFlagIsValidated(t *testing.T) {
	for _, v := range []int{0, 10, 65535} {
		cfg := testConfig(t, "127.0.0.1:9092")
		cfg.MQTT.TopicAliasMaximum = v
		assert.NoError(t, cfg.Validate(), "mqtt.topic-alias-maximum %d", v)
	}
	for _, v := range []int{-1, 65536} {
		cfg := testConfig(t, "127.0.0.1:9092")
		cfg.MQTT.TopicAliasMaximum = v
		assert.ErrorContains(t, cfg.Validate(), "mqtt.topic-alias-maximum", "mqtt.topic-alias-maximum %d", v)
	}
}
