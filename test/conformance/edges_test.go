package conformance

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// The MQTT 5 protocol edges of issue 15 (docs/limits.md) through a whole
// cluster of two frontends, at the product's defaults wherever the edge is
// reachable there: inbound Topic Aliases, an alias without a mapping, the
// Receive Maximum, a record too large for Kafka, and a wildcard SUBSCRIBE
// over more retained messages than a session's queue holds. For each: the
// exact answer on MQTT 5, and on MQTT 3.1.1 where the edge has a
// counterpart; the metric that counts it, in exact increments on the node
// that answered (and none on the other); nothing of a refused PUBLISH in
// Kafka or at a watcher subscribed on the other node; and clients beside it
// on the same node served before and after. pkg/frontend/limits_test.go
// has the same edges against a single frontend.

// edge is a cluster with the clients every test of this file puts beside
// the edge: two neighbours on frontend 0 (paho.golang and
// paho.mqtt.golang) and one on frontend 1, subscribed to served; and a
// watcher on frontend 1 subscribed to prefix/#, the topics the edge
// publishes to.
type edge struct {
	c                 *clustertest.Cluster
	served, prefix    string
	n5, n3, neighbour client
	watch             client
}

func startEdge(t *testing.T, name string, o clustertest.Options) *edge {
	t.Helper()
	o.Frontends = 2
	e := &edge{c: start(t, o), served: id(name + "-served"), prefix: id(name)}
	a0, a1 := e.c.Frontends[0].Addr, e.c.Frontends[1].Addr
	e.n5 = dialPaho5(t, a0, opts{ID: id(name + "-n5"), Subs: []sub{{e.served, 1}}})
	e.n3 = dialPaho3(t, a0, opts{ID: id(name + "-n3"), Subs: []sub{{e.served, 1}}})
	e.neighbour = dialPaho5(t, a1, opts{ID: id(name + "-n1"), Subs: []sub{{e.served, 1}}})
	e.watch = dialPaho5(t, a1, opts{ID: id(name + "-watch"), Subs: []sub{{e.prefix + "/#", 1}}})
	return e
}

// requireServed: the neighbours publish and receive through the cluster.
func (e *edge) requireServed(t *testing.T) {
	t.Helper()
	requireServed(t, e.served, e.n5, e.n3, e.neighbour)
}

// requireOnly requires that the watcher on frontend 1 receives exactly want
// ("topic=payload", topics under e.prefix, in any order) and nothing more,
// and that Kafka holds exactly those records under the topic under (under
// itself and the topics below it): a refused PUBLISH was neither produced
// nor delivered.
func (e *edge) requireOnly(t *testing.T, under string, want ...string) {
	t.Helper()
	var got, wantTopics []string
	for range want {
		m := next(t, e.watch)
		got = append(got, m.Topic+"="+m.Payload)
	}
	none(t, e.watch)
	require.ElementsMatch(t, want, got, "what the watcher on frontend 1 received")
	for _, w := range want {
		tp, _, _ := strings.Cut(w, "=")
		wantTopics = append(wantTopics, tp)
	}
	require.ElementsMatch(t, wantTopics, producedUnder(t, e.c, under), "the records in Kafka")
}

// producedUnder returns the mqtt.topic of every record in the inbound Kafka
// topic, up to its end now, whose topic name is under or below it.
func producedUnder(t *testing.T, c *clustertest.Cluster, under string) []string {
	t.Helper()
	topic := c.Frontends[0].Config.Kafka.Topic
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Kafka.Addr()), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	require.NoError(t, err)
	left := map[int32]int64{} // partition → its end offset, until read
	ends.Each(func(o kadm.ListedOffset) {
		require.NoError(t, o.Err)
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	var topics []string
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "kafka read to its end: partitions left %v", left)
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := left[r.Partition]; !ok || r.Offset >= end {
				return
			}
			if tp, _ := testkit.Header(r, kafkarecord.HeaderTopic); tp == under || strings.HasPrefix(tp, under+"/") {
				topics = append(topics, tp)
			}
			if r.Offset == left[r.Partition]-1 {
				delete(left, r.Partition)
			}
		})
	}
	return topics
}

// metric is one counter series on one frontend.
type metric struct {
	node        int
	name, label string
}

// counts reads each metric.
func counts(t *testing.T, c *clustertest.Cluster, ms ...metric) map[metric]float64 {
	t.Helper()
	out := make(map[metric]float64, len(ms))
	for _, m := range ms {
		out[m] = nodeCounter(t, c, m.node, m.name, m.label)
	}
	return out
}

// requireIncrements waits until every metric of before is exactly
// want[metric] above it (0 for a metric want does not name).
func requireIncrements(t *testing.T, c *clustertest.Cluster, before, want map[metric]float64) {
	t.Helper()
	var now map[metric]float64
	ok := assert.Eventually(t, func() bool {
		now = counts(t, c, keys(before)...)
		for m, v := range before {
			if now[m]-v != want[m] {
				return false
			}
		}
		return true
	}, waitFor, 20*time.Millisecond)
	if !ok {
		for m, v := range before {
			t.Errorf("frontend %d %s{%s}: +%v, want +%v", m.node, m.name, m.label, now[m]-v, want[m])
		}
		t.FailNow()
	}
}

func keys(m map[metric]float64) []metric {
	out := make([]metric, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// onBoth is the metric on frontend 0 and frontend 1.
func onBoth(name, label string) []metric {
	return []metric{{0, name, label}, {1, name, label}}
}

const (
	disconnects   = "fleetgate_frontend_disconnects_total"
	recordsFailed = "fleetgate_ingest_records_failed_total"
)

// reason is a label selector for the reason label.
func reason(r string) string { return `reason="` + r + `"` }

// refusalCounts reads the metrics a PUBLISH refused on frontend node may
// move: fleetgate_frontend_disconnects_total{reason=disconnect} on both
// nodes, and fleetgate_ingest_records_failed_total{reason=failed} on the
// other node (which refused nothing) and, when counted, on this one.
func refusalCounts(t *testing.T, c *clustertest.Cluster, node int, disconnect, failed string, counted bool) map[metric]float64 {
	t.Helper()
	ms := append(onBoth(disconnects, reason(disconnect)), metric{1 - node, recordsFailed, reason(failed)})
	if counted {
		ms = append(ms, metric{node, recordsFailed, reason(failed)})
	}
	return counts(t, c, ms...)
}

// refused is what refusalCounts should have moved: one disconnect on node
// and, when counted there, one failed record.
func refused(node int, disconnect, failed string) map[metric]float64 {
	return map[metric]float64{{node, disconnects, reason(disconnect)}: 1, {node, recordsFailed, reason(failed)}: 1}
}

// publishAliased is the bytes of an MQTT 5 PUBLISH with a Topic Alias
// property, written by hand: mochi's encoder leaves out a Topic Alias of 0.
func publishAliased(topic string, qos byte, packetID, alias uint16, payload string) []byte {
	var body []byte
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	if qos > 0 {
		body = append(body, byte(packetID>>8), byte(packetID))
	}
	body = append(body, 3, 0x23, byte(alias>>8), byte(alias)) // properties: Topic Alias
	body = append(body, payload...)
	out := []byte{packets.Publish<<4 | qos<<1}
	for n := len(body); ; {
		b := byte(n % 128)
		if n /= 128; n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// requireAck reads the next packet and requires it to be the PUBACK (QoS 1)
// or PUBREC (QoS 2) of packetID with code.
func requireAck(t *testing.T, r *testkit.Raw, qos byte, packetID uint16, code byte) {
	t.Helper()
	pk := rawRecv(t, r)
	typ := packets.Puback
	if qos == 2 {
		typ = packets.Pubrec
	}
	require.Equal(t, typ, pk.FixedHeader.Type, "packet type (reason %#x)", pk.ReasonCode)
	require.Equal(t, packetID, pk.PacketID)
	require.Equal(t, code, pk.ReasonCode, "reason code (%q)", pk.Properties.ReasonString)
}

// TestInboundTopicAliasesOutsideTheAnnouncedRangeGetDisconnect0x94: at the
// default mqtt.topic-alias-maximum (10) the CONNACK announces Topic Alias
// Maximum 10, which a client must not exceed [MQTT-3.2.2-17]; the aliases
// 1 to 10 are accepted and resolved [MQTT-3.3.2-12]. A PUBLISH with Topic
// Alias 0 [MQTT-3.3.2-8], with or without a topic name, or with an alias
// above 10 [MQTT-3.3.2-9], at any QoS, gets DISCONNECT 0x94 (Topic Alias
// invalid, MQTT 5 section 3.3.2.3.4) and a closed connection
// [MQTT-3.14.4-1] [MQTT-3.14.4-2]. Counted once each in
// fleetgate_frontend_disconnects_total{reason="topic_alias_invalid"} on the
// node; an alias of 0, which the ingest hook refuses, also in
// fleetgate_ingest_records_failed_total{reason="invalid_topic"}. Nothing
// refused reaches Kafka or the watcher on frontend 1, and the connection
// that used its aliases well goes on. MQTT 3.1.1 has no Topic Alias (no
// properties at all): no counterpart.
func TestInboundTopicAliasesOutsideTheAnnouncedRangeGetDisconnect0x94(t *testing.T) {
	e := startEdge(t, "alias", clustertest.Options{})
	require.Equal(t, 10, e.c.Frontends[0].Config.MQTT.TopicAliasMaximum, "the default")
	addr := e.c.Frontends[0].Addr
	e.requireServed(t)

	r, ack := rawConnect(t, addr, v5, id("alias-ok"), nil)
	require.Equal(t, uint16(10), ack.Properties.TopicAliasMaximum, "CONNACK Topic Alias Maximum")
	for i, p := range []struct {
		topic string
		alias uint16
	}{{e.prefix + "/one", 1}, {e.prefix + "/ten", 10}, {"", 10}, {"", 1}} {
		r.Write(publishAliased(p.topic, 1, uint16(i+1), p.alias, fmt.Sprint(i+1)))
		requireAck(t, r, 1, uint16(i+1), 0)
	}

	for _, tc := range []struct {
		name    string
		topic   string
		qos     byte
		alias   uint16
		counted bool // in records_failed{invalid_topic} too
	}{
		{"Topic Alias 0 with a topic name [MQTT-3.3.2-8]", "/zero", 1, 0, true},
		{"Topic Alias 0 without a topic name [MQTT-3.3.2-8]", "", 1, 0, true},
		{"Topic Alias 0 at QoS 0 [MQTT-3.3.2-8]", "/zero", 0, 0, true},
		{"Topic Alias 11, one above the maximum, at QoS 1 [MQTT-3.3.2-9]", "/eleven", 1, 11, false},
		{"Topic Alias 11 at QoS 0 [MQTT-3.3.2-9]", "/eleven", 0, 11, false},
		{"Topic Alias 65535 at QoS 2 [MQTT-3.3.2-9]", "/max", 2, 65535, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refusalCounts(t, e.c, 0, "topic_alias_invalid", "invalid_topic", tc.counted)
			topic := tc.topic
			if topic != "" {
				topic = e.prefix + topic
			}
			bad, _ := rawConnect(t, addr, v5, id("alias-bad"), nil)
			bad.Write(publishAliased(topic, tc.qos, 1, tc.alias, "refused"))
			requireServerDisconnect(t, bad, packets.ErrTopicAliasInvalid.Code)
			requireIncrements(t, e.c, before, refused(0, "topic_alias_invalid", "invalid_topic"))
		})
	}

	// The good connection goes on: its mappings are its own.
	r.Write(publishAliased("", 1, 10, 10, "5"))
	requireAck(t, r, 1, 10, 0)
	e.requireOnly(t, e.prefix, e.prefix+"/one=1", e.prefix+"/ten=2", e.prefix+"/ten=3", e.prefix+"/one=4", e.prefix+"/ten=5")
	e.requireServed(t)
}

// TestWithTopicAliasMaximumZeroNoAliasIsAccepted: with
// mqtt.topic-alias-maximum 0 on frontend 0 its CONNACK carries no Topic
// Alias Maximum (absent means 0), so a client must send no alias at all
// [MQTT-3.2.2-18]; a PUBLISH with alias 1 is above the maximum
// [MQTT-3.3.2-9] and gets DISCONNECT 0x94, counted once in
// fleetgate_frontend_disconnects_total{reason="topic_alias_invalid"} on
// frontend 0, nothing produced. Frontend 1, at the default, announces 10
// and takes the same PUBLISH. MQTT 3.1.1 has no Topic Alias: no
// counterpart.
func TestWithTopicAliasMaximumZeroNoAliasIsAccepted(t *testing.T) {
	e := startEdge(t, "noalias", clustertest.Options{Frontend: func(i int, cfg *frontend.Config) {
		if i == 0 {
			cfg.MQTT.TopicAliasMaximum = 0
		}
	}})
	e.requireServed(t)
	before := refusalCounts(t, e.c, 0, "topic_alias_invalid", "invalid_topic", false)

	p, err := dialPaho5Conn(t, e.c.Frontends[0].Addr, opts{ID: id("noalias-paho")}, nil)
	require.NoError(t, err)
	require.NotNil(t, p.ack.Properties)
	assert.Nil(t, p.ack.Properties.TopicAliasMaximum, "frontend 0's CONNACK announces no Topic Alias Maximum")
	bad, ack := rawConnect(t, e.c.Frontends[0].Addr, v5, id("noalias-bad"), nil)
	require.Zero(t, ack.Properties.TopicAliasMaximum)
	bad.Write(publishAliased(e.prefix+"/refused", 1, 1, 1, "refused"))
	requireServerDisconnect(t, bad, packets.ErrTopicAliasInvalid.Code)

	good, ack := rawConnect(t, e.c.Frontends[1].Addr, v5, id("noalias-default"), nil)
	require.Equal(t, uint16(10), ack.Properties.TopicAliasMaximum, "frontend 1's CONNACK, at the default")
	good.Write(publishAliased(e.prefix+"/taken", 1, 1, 1, "a"))
	requireAck(t, good, 1, 1, 0)
	good.Write(publishAliased("", 1, 2, 1, "b"))
	requireAck(t, good, 1, 2, 0)

	requireIncrements(t, e.c, before, refused(0, "topic_alias_invalid", "invalid_topic"))
	e.requireOnly(t, e.prefix, e.prefix+"/taken=a", e.prefix+"/taken=b")
	e.requireServed(t)
}

// TestAnAliasWithoutAMappingOnThisConnectionGetsDisconnect0x82: a Topic
// Alias mapping lives as long as its connection; a receiver must not carry
// it to another [MQTT-3.3.2-7], also for the same session on the same or
// another node. A PUBLISH with an empty topic name and an alias this
// connection never mapped is a Protocol Error (MQTT 5 section 3.3.2.3.4):
// DISCONNECT 0x82 at any QoS and a closed connection [MQTT-4.13.1-1],
// nothing produced, counted once in
// fleetgate_frontend_disconnects_total{reason="protocol_error"} and in
// fleetgate_ingest_records_failed_total{reason="invalid_topic"} on the node.
// An empty topic name with no alias at all is the same Protocol Error,
// counted as a protocol_error disconnect. MQTT 3.1.1 has no aliases; its
// counterpart is a PUBLISH with an empty topic name, which no topic name
// may be [MQTT-4.7.3-1]: the connection is closed [MQTT-4.8.0-1] (v3.1.1),
// without a DISCONNECT, which a 3.1.1 server never sends; counted as a
// protocol_error disconnect.
func TestAnAliasWithoutAMappingOnThisConnectionGetsDisconnect0x82(t *testing.T) {
	e := startEdge(t, "unmapped", clustertest.Options{})
	e.requireServed(t)
	a0, a1 := e.c.Frontends[0].Addr, e.c.Frontends[1].Addr
	var want []string
	for _, tc := range []struct {
		name    string
		node    int    // where the refused PUBLISH goes
		earlier string // where an earlier connection of the session mapped alias 1; "" none
		version byte
		alias   bool // counted in records_failed{invalid_topic} too
	}{
		{"v5, mapped on an earlier connection to the same node", 0, a0, v5, true},
		{"v5, mapped on an earlier connection to the other node", 0, a1, v5, true},
		{"v5, mapped on the same node, refused on the other", 1, a0, v5, true},
		{"v5, never mapped", 0, "", v5, true},
		{"v5, an empty topic name without an alias", 0, "", v5, false},
		{"v3.1.1, an empty topic name", 0, "", v311, false},
	} {
		for _, qos := range []byte{0, 1, 2} {
			t.Run(fmt.Sprintf("%s, QoS %d", tc.name, qos), func(t *testing.T) {
				before := refusalCounts(t, e.c, tc.node, "protocol_error", "invalid_topic", tc.alias)
				cid := id("unmapped")
				if tc.earlier != "" {
					r, _ := rawPersistent(t, tc.earlier, v5, cid)
					r.Write(publishAliased(e.prefix+"/mapped", 1, 1, 1, cid))
					requireAck(t, r, 1, 1, 0)
					want = append(want, e.prefix+"/mapped="+cid)
					r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
					requireEnd(t, r)
				}
				r, _ := rawPersistent(t, e.c.Frontends[tc.node].Addr, tc.version, cid)
				pid := uint16(0)
				if qos > 0 {
					pid = 2
				}
				if tc.alias {
					r.Write(publishAliased("", qos, pid, 1, "refused"))
				} else {
					r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: pid,
						TopicName: "", Payload: []byte("refused")})
				}
				if tc.version == v5 {
					requireServerDisconnect(t, r, packets.ErrProtocolViolation.Code)
				} else {
					requireEnd(t, r)
				}
				requireIncrements(t, e.c, before, refused(tc.node, "protocol_error", "invalid_topic"))
			})
		}
	}
	e.requireOnly(t, e.prefix, want...)
	e.requireServed(t)
}

// TestMoreThanTheReceiveMaximumUnacknowledgedPublishesGetDisconnect0x93: at
// the default mqtt.receive-maximum the CONNACK announces Receive Maximum
// 256 (MQTT 5 section 3.2.2.3.3). A client must not have more QoS 1 and 2
// PUBLISHes than that without their PUBACK, PUBCOMP or a failure PUBREC
// [MQTT-3.3.4-7] (the server's own bound towards the client, [MQTT-3.3.4-9],
// is another matter); a QoS 2 PUBLISH counts from its PUBLISH to its
// PUBCOMP, so a client holding back 256 PUBRELs has reached it at the
// defaults, with nothing held in Kafka. One more QoS 1 or 2 PUBLISH
// is more than the Receive Maximum: DISCONNECT 0x93 (Receive Maximum
// exceeded, section 3.3.4 and 4.13, a Protocol Error: the connection
// closes [MQTT-4.13.1-1]), counted once in
// fleetgate_frontend_disconnects_total{reason="receive_maximum_exceeded"}
// on the node. A PUBREL frees exactly one place. The 256 that went before
// were taken (PUBREC 0x00): they reach Kafka and the watcher; the one over
// the bound does not. MQTT 3.1.1 has no Receive Maximum (its CONNACK has
// no properties), so there is no counterpart to test; mqtt.receive-maximum
// means to hold a 3.1.1 client to the same window by not reading its
// socket instead.
func TestMoreThanTheReceiveMaximumUnacknowledgedPublishesGetDisconnect0x93(t *testing.T) {
	e := startEdge(t, "rm", clustertest.Options{})
	const receiveMax = 256
	require.Equal(t, receiveMax, e.c.Frontends[0].Config.MQTT.ReceiveMaximum, "the default")
	addr := e.c.Frontends[0].Addr
	e.requireServed(t)

	for _, tc := range []struct {
		name    string
		release bool // PUBREL one, then fill the freed place with a QoS 2 PUBLISH
		qos     byte // of the PUBLISH over the bound
	}{
		{"the 257th, QoS 1, is one too many", false, 1},
		{"the 257th, QoS 2, is one too many", false, 2},
		{"a PUBREL frees one place, no more", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refusalCounts(t, e.c, 0, "receive_maximum_exceeded", "receive_maximum_exceeded", false)
			r, ack := rawConnect(t, addr, v5, id("rm"), nil)
			require.Equal(t, uint16(receiveMax), ack.Properties.ReceiveMaximum, "CONNACK Receive Maximum")
			topic := id(e.prefix + "/held")
			pub := func(qos byte, packetID uint16) {
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: packetID,
					TopicName: topic, Payload: []byte(fmt.Sprint(packetID))})
			}
			var want []string
			for i := uint16(1); i <= receiveMax; i++ {
				pub(2, i)
				want = append(want, fmt.Sprintf("%s=%d", topic, i))
			}
			for i := uint16(1); i <= receiveMax; i++ {
				requireAck(t, r, 2, i, 0) // no PUBREL: each still counts
			}
			if tc.release {
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 1})
				pk := rawRecv(t, r)
				require.Equal(t, packets.Pubcomp, pk.FixedHeader.Type)
				require.Equal(t, uint16(1), pk.PacketID)
				pub(1, 1000) // fits, and is answered at once
				requireAck(t, r, 1, 1000, 0)
				pub(2, 1001) // takes the freed place
				requireAck(t, r, 2, 1001, 0)
				want = append(want, topic+"=1000", topic+"=1001")
			}
			pub(tc.qos, 2000)
			requireServerDisconnect(t, r, packets.ErrReceiveMaximum.Code)
			requireIncrements(t, e.c, before, refused(0, "receive_maximum_exceeded", "receive_maximum_exceeded"))
			e.requireOnly(t, topic, want...)
		})
	}
	// The Receive Maximum bounds QoS 1 and 2 only: at a quota of 0 a QoS 0
	// PUBLISH is still accepted (MQTT 5 section 4.9: "the Server ... can
	// continue to send PUBLISH packets with QoS 0"; the Receive Maximum
	// counts QoS 1 and 2, 3.3.4). MQTT 3.1.1 has no Receive Maximum and a
	// 3.1.1 server never sends DISCONNECT: with as many QoS 2 publishes
	// awaiting PUBREL the client goes on publishing.
	for _, version := range both {
		t.Run(protocolName(version)+": QoS 0 at a quota of 0, and 3.1.1 unbounded", func(t *testing.T) {
			before := refusalCounts(t, e.c, 0, "receive_maximum_exceeded", "receive_maximum_exceeded", false)
			r, _ := rawConnect(t, addr, version, id("rm-zero"), nil)
			topic := id(e.prefix + "/zero")
			var want []string
			for i := uint16(1); i <= receiveMax; i++ {
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: i,
					TopicName: topic, Payload: []byte(fmt.Sprint(i))})
				want = append(want, fmt.Sprintf("%s=%d", topic, i))
			}
			for i := uint16(1); i <= receiveMax; i++ {
				requireAck(t, r, 2, i, 0) // no PUBREL: each still counts
			}
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: []byte("qos0")})
			want = append(want, topic+"=qos0")
			if version == v311 {
				r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 3000,
					TopicName: topic, Payload: []byte("qos1")})
				requireAck(t, r, 1, 3000, 0)
				want = append(want, topic+"=qos1")
			}
			requireOpen(t, r)
			e.requireOnly(t, topic, want...)
			requireIncrements(t, e.c, before, nil)
		})
	}
	e.requireServed(t)
}

// TestARecordTooLargeForKafkaGets0x95: with mqtt.max-packet-size raised to
// 2 MiB on frontend 0, above Kafka's default max.message.bytes (1 MiB), a
// PUBLISH of 1.5 MiB becomes a record Kafka refuses for its size, which no
// retry can fix. MQTT 5 gets PUBACK / PUBREC 0x95 (Packet too large, MQTT 5
// sections 3.4.2.1 and 3.5.2.1, one of the codes [MQTT-3.4.2-1]
// [MQTT-3.5.2-1] allow) in its place among the acks, and the connection
// goes on; MQTT 3.1.1, which has no negative acknowledgement, gets a closed
// connection [MQTT-3.3.5-2] (v3.1.1). Each is counted once in
// fleetgate_ingest_records_failed_total{reason="too_large"} on frontend 0,
// the 3.1.1 close also in fleetgate_frontend_disconnects_total{reason=
// "packet_too_large"}. (The one rate-limited log line per 10 s is checked
// in pkg/frontend/limits_test.go: a cluster's log goes to t.Log.) At the
// default mqtt.max-packet-size (256 KiB, frontend 1) no such record can
// be made: a 300 KiB PUBLISH is refused as a packet, DISCONNECT 0x95 on
// MQTT 5 and a closed connection on 3.1.1, counted as a packet_too_large
// disconnect and never a record.
func TestARecordTooLargeForKafkaGets0x95(t *testing.T) {
	e := startEdge(t, "large", clustertest.Options{Frontend: func(i int, cfg *frontend.Config) {
		if i == 0 {
			cfg.MQTT.MaxPacketSize = 2 << 20
		}
	}})
	require.EqualValues(t, 256<<10, e.c.Frontends[1].Config.MQTT.MaxPacketSize, "the default")
	e.requireServed(t)
	large := make([]byte, 1536<<10) // random: incompressible, whatever kafka.compression says
	_, _ = rand.Read(large)
	publish := func(r *testkit.Raw, qos byte, packetID uint16, topic string, payload []byte) error {
		return r.TrySend(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: packetID,
			TopicName: topic, Payload: payload})
	}
	tooLarge := []metric{
		{0, recordsFailed, reason("too_large")}, {1, recordsFailed, reason("too_large")},
		{0, disconnects, reason("packet_too_large")}, {1, disconnects, reason("packet_too_large")},
	}
	var want []string

	t.Run("MQTT 5 gets 0x95 in its place among the acks, and goes on", func(t *testing.T) {
		before := counts(t, e.c, tooLarge...)
		r, _ := rawConnect(t, e.c.Frontends[0].Addr, v5, id("large-v5"), nil)
		// All at once: the producer's batches are no larger than the
		// topic takes (kafka.max-message-bytes), so a large record fails
		// alone and the small ones sent beside it go through.
		sent := []struct {
			qos     byte
			topic   string
			payload []byte
			code    byte
		}{
			{1, "/before", []byte("small"), 0},
			{1, "/large", large, packets.ErrPacketTooLarge.Code},
			{2, "/large", large, packets.ErrPacketTooLarge.Code},
			{1, "/after", []byte("small"), 0},
		}
		for i, p := range sent {
			require.NoError(t, publish(r, p.qos, uint16(i+1), e.prefix+p.topic, p.payload))
		}
		for i, p := range sent {
			requireAck(t, r, p.qos, uint16(i+1), p.code)
		}
		requireOpen(t, r)
		want = append(want, e.prefix+"/before=small", e.prefix+"/after=small")
		requireIncrements(t, e.c, before, map[metric]float64{{0, recordsFailed, reason("too_large")}: 2})
	})
	t.Run("MQTT 3.1.1 gets the acks before it, then a closed connection", func(t *testing.T) {
		before := counts(t, e.c, tooLarge...)
		r, _ := rawConnect(t, e.c.Frontends[0].Addr, v311, id("large-v3"), nil)
		require.NoError(t, publish(r, 1, 1, e.prefix+"/before311", []byte("small")))
		requireAck(t, r, 1, 1, 0)
		require.NoError(t, publish(r, 1, 2, e.prefix+"/large311", large))
		requireEnd(t, r)
		want = append(want, e.prefix+"/before311=small")
		requireIncrements(t, e.c, before, map[metric]float64{
			{0, recordsFailed, reason("too_large")}:      1,
			{0, disconnects, reason("packet_too_large")}: 1,
		})
	})
	for _, version := range both {
		t.Run(protocolName(version)+" at the default mqtt.max-packet-size: refused as a packet", func(t *testing.T) {
			before := counts(t, e.c, tooLarge...)
			r, _ := rawConnect(t, e.c.Frontends[1].Addr, version, id("large-default"), nil)
			_ = publish(r, 1, 1, e.prefix+"/over", make([]byte, 300<<10)) // the node may stop reading before the end
			if version == v5 {
				requireServerDisconnect(t, r, packets.ErrPacketTooLarge.Code)
			} else {
				requireEnd(t, r)
			}
			requireIncrements(t, e.c, before, map[metric]float64{{1, disconnects, reason("packet_too_large")}: 1})
		})
	}
	e.requireOnly(t, e.prefix, want...)
	e.requireServed(t)
}

// TestAWildcardSubscribeOverRetainedMessagesStopsAtTheQueueBound: at the
// defaults (session.max-queued-messages 1,000, session.queue-full-policy
// drop-oldest) a fresh subscriber's wildcard SUBSCRIBE over 3,000 retained
// messages streams them into its queue a page (one HSCAN step, about 1,000)
// at a time and stops once a page overflows the queue's bound: the
// subscriber receives at least the 1,000 the queue holds, each once, with
// RETAIN 1 [MQTT-3.3.1-8] (v3.1.1), and not all of them. (What it receives
// beyond the queue is what it acknowledged while the stream ran: up to
// delivery.max-inflight while the stream holds the connection's reader,
// more once it does not. Three pages overflow the queue however fast the
// subscriber drains it meanwhile; a few more than 1,100 do not always.)
// Not sending the rest is a deliberate bound on "all retained messages
// matching" [MQTT-3.3.1-9] (v5) / [MQTT-3.3.1-6] (v3.1.1) (docs/limits.md;
// mosquitto stops at its queue bound too, docs/benchmarks.md). Counted once
// per subscription in fleetgate_delivery_retained_stopped_total on the
// subscriber's node. The subscriber's connection keeps working: a live
// message published after arrives, with RETAIN 0. The same on both
// protocol versions (no reason code: nothing is refused), one on each node.
func TestAWildcardSubscribeOverRetainedMessagesStopsAtTheQueueBound(t *testing.T) {
	const retainedN = 3000
	e := startEdge(t, "retstop", clustertest.Options{})
	bound := e.c.Frontends[0].Config.Session.MaxQueuedMessages
	require.Equal(t, 1000, bound, "the default")
	e.requireServed(t)

	// One publisher, pipelined within the Receive Maximum, under a prefix
	// of their own (the watcher's is for refused publishes).
	prefix := id("retained")
	pubAddr := e.c.Frontends[1].Addr
	r, _ := rawConnect(t, pubAddr, v5, id("retstop-pub"), nil)
	topicOf := func(i int) string { return fmt.Sprintf("%s/%d/%d", prefix, i/100, i) }
	for from := 0; from < retainedN; from += 200 {
		to := min(from+200, retainedN)
		for i := from; i < to; i++ {
			r.Send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
				PacketID: uint16(i + 1), TopicName: topicOf(i), Payload: []byte(fmt.Sprint(i))})
		}
		for i := from; i < to; i++ {
			requireAck(t, r, 1, uint16(i+1), 0)
		}
	}
	// The dispatcher stores one publisher's messages in order: once the
	// last is retained, all are.
	awaitRetained(t, lib{name: "paho.golang", version: v5, dial: dialPaho5}, pubAddr, topicOf(retainedN-1), 1,
		func(m msg) bool { return m.Payload == fmt.Sprint(retainedN-1) })

	for node, version := range []byte{v5, v311} {
		t.Run(fmt.Sprintf("%s on frontend %d", protocolName(version), node), func(t *testing.T) {
			const stopped = "fleetgate_delivery_retained_stopped_total"
			before := counts(t, e.c, onBoth(stopped, "")...)
			addr := e.c.Frontends[node].Addr
			o := opts{ID: id("retstop-sub"), Subs: []sub{{prefix + "/#", 1}}}
			var s client
			if version == v5 {
				s = dialPaho5(t, addr, o)
			} else {
				s = dialPaho3(t, addr, o)
			}
			got := map[string]bool{}
		drain:
			for {
				select {
				case m := <-s.Messages():
					require.True(t, m.Retain, "RETAIN 1 on a retained message sent at subscribe")
					require.True(t, strings.HasPrefix(m.Topic, prefix+"/"), m.Topic)
					require.False(t, got[m.Topic], "%s sent twice", m.Topic)
					got[m.Topic] = true
				case <-time.After(3 * time.Second): // the queue drains in rounds; this is well past one
					break drain
				}
			}
			t.Logf("%d of %d retained messages sent", len(got), retainedN)
			assert.GreaterOrEqual(t, len(got), bound, "the subscriber gets what its queue holds")
			assert.Less(t, len(got), retainedN, "the stream stops at the queue's bound")
			requireIncrements(t, e.c, before, map[metric]float64{{node, stopped, ""}: 1})

			// Its connection goes on.
			live := id(prefix + "/live")
			e.neighbour.Publish(live, "live", 1, false)
			m := next(t, s)
			require.Equal(t, live, m.Topic)
			require.Equal(t, "live", m.Payload)
			require.False(t, m.Retain)
		})
	}
	e.requireServed(t)
}
