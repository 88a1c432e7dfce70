package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sync/semaphore"

	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/topic"
	"github.com/fleetgate/fleetgate/pkg/workers"
)

// Producer is the part of *kgo.Client the hook uses.
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

// The unacknowledged-bytes bound counts every byte a record holds: its key,
// value and each header's key and value (MQTT topic, user properties,
// correlation data, response topic, content type, ...), plus these stated
// overheads for what the bytes sit in: recordOverhead per record (the
// kgo.Record, the contract Message, the answer entry and the promise
// closure) and headerOverhead per header (a kgo.RecordHeader).
const (
	recordOverhead = 256
	headerOverhead = 40
)

// recordSize is what rec counts against the unacknowledged-bytes bound.
func recordSize(rec *kgo.Record) int64 {
	n := len(rec.Key) + len(rec.Value) + recordOverhead
	for _, h := range rec.Headers {
		n += len(h.Key) + len(h.Value) + headerOverhead
	}
	return int64(n)
}

// tooLargeLogEvery is the least time between two log lines about records
// Kafka refused as too large: a device that keeps sending them must not
// flood the log.
const tooLargeLogEvery = 10 * time.Second

// RetainedQuota decides whether a device may leave a retained message with
// a payload of size bytes (retained.Quota); an error says why not.
type RetainedQuota interface {
	Allow(size int) error
}

// Hook is the mochi hook that writes PUBLISHes (and wills) to Kafka.
type Hook struct {
	mqtt.HookBase

	cfg            Config
	node           string
	topic          string
	producer       Producer
	log            *slog.Logger
	metrics        *metrics
	receiveMax     int
	maxInflightAge int64
	exactlyOnce    ExactlyOnce
	authorizer     Authorizer
	quotaOf        Quotas // nil: the node's quota for every client
	topicLimits    topic.Limits
	aliasMax       uint16

	budget      *semaphore.Weighted
	unacked     atomic.Int64 // bytes read but not yet acknowledged by Kafka
	outstanding atomic.Int64 // QoS>0 publishes whose ack is not yet written
	// saturatedSince is when the budget last ran out (unix ns), 0 while
	// publishes get their bytes.
	saturatedSince atomic.Int64

	clients sync.Map // *mqtt.Client → *clientAcks
	quotas  sync.Map // *mqtt.Client → *clientQuota
	flushes flushQueue

	tooLargeLog logLimiter
	overdueLog  logLimiter
	retained    RetainedQuota
	retainedLog logLimiter

	drainOnce sync.Once
	draining  chan struct{} // closed: accept no new publishes
	stopOnce  sync.Once
	stop      chan struct{} // closed by Stop: the deadline watch ends
}

// Options are the server facts the hook needs.
type Options struct {
	Node  string // node id written in every record
	Topic string // Kafka topic
	// ReceiveMaximum is the Receive Maximum announced to clients.
	ReceiveMaximum uint16
	// MaxInflightAge is mochi's MaximumMessageExpiryInterval, in seconds.
	MaxInflightAge int64
	// ExactlyOnce keeps inbound QoS 2 state beyond the connection, so that
	// a QoS 2 PUBLISH resent after a reconnect to another node is not
	// produced twice; nil keeps it per connection only.
	ExactlyOnce ExactlyOnce
	// Authorizer decides which topics a client may publish to; nil
	// allows every topic.
	Authorizer Authorizer
	// Quotas overrides the node's publish quota for some clients (by
	// identity or group); nil: every client has the node's.
	Quotas Quotas
	// Retained decides whether a device may leave a retained message;
	// nil allows every one.
	Retained RetainedQuota
	// TopicLimits bound topic names; a PUBLISH over them is answered as
	// one to an invalid topic name. The zero value: the protocol's bound
	// only.
	TopicLimits topic.Limits
	// TopicAliasMaximum is the Topic Alias Maximum announced to MQTT 5
	// clients. mochi refuses a PUBLISH with an alias above it, or with
	// neither a topic name nor an alias, or with a wildcard in its topic
	// name; the hook counts those in records_failed{invalid_topic}.
	TopicAliasMaximum uint16
}

// Authorizer decides whether a client may publish to a topic name (after
// its topic alias is resolved). It is asked once per PUBLISH, so it must be
// cheap.
type Authorizer interface {
	AllowPublish(cl *mqtt.Client, topic string) bool
}

// ExactlyOnce records inbound QoS 2 packet ids across connections and nodes
// (the session store's rel set).
type ExactlyOnce interface {
	// Received reports whether cl's QoS 2 packet id was answered with
	// PUBREC and not yet released.
	Received(cl *mqtt.Client, packetID uint16) (bool, error)
	// MarkReceived records cl's QoS 2 packet id before its PUBREC.
	MarkReceived(cl *mqtt.Client, packetID uint16) error
}

// New returns the hook. It does no I/O.
func New(cfg Config, opts Options, producer Producer, log *slog.Logger, mp metric.MeterProvider) (*Hook, error) {
	h := &Hook{
		cfg:            cfg,
		node:           opts.Node,
		topic:          opts.Topic,
		producer:       producer,
		log:            log.With("component", "ingest"),
		receiveMax:     int(opts.ReceiveMaximum),
		maxInflightAge: opts.MaxInflightAge,
		exactlyOnce:    opts.ExactlyOnce,
		authorizer:     opts.Authorizer,
		quotaOf:        opts.Quotas,
		topicLimits:    opts.TopicLimits,
		aliasMax:       opts.TopicAliasMaximum,
		retained:       opts.Retained,
		budget:         semaphore.NewWeighted(int64(cfg.MaxUnackedBytes)),
		draining:       make(chan struct{}),
		stop:           make(chan struct{}),
	}
	if h.receiveMax == 0 {
		h.receiveMax = 1024
	}
	if h.maxInflightAge == 0 {
		h.maxInflightAge = 24 * 60 * 60
	}
	m, err := newMetrics(mp, h.unacked.Load, h.outstanding.Load)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	go h.watchDeadlines(deadlineCheckEvery(cfg.AckTimeout))
	return h, nil
}

// Stop implements mqtt.Hook: the deadline watch ends (mochi stops its
// hooks when the server closes).
func (h *Hook) Stop() error {
	h.stopOnce.Do(func() { close(h.stop) })
	return nil
}

// deadlineCheckEvery is how often the publishes awaiting Kafka are checked
// against their ack deadline: a tenth of it, between 100 ms and 1 s, so an
// answer comes at most that late.
func deadlineCheckEvery(ackTimeout time.Duration) time.Duration {
	return min(max(ackTimeout/10, 100*time.Millisecond), time.Second)
}

// watchDeadlines answers, every interval, the publishes Kafka has not
// answered by their ack deadline (expireOverdue). The producer's delivery
// timeout (kafka.ProducerOptions.DeliveryTimeout, the same deadline) fails
// a record only while it is safe to: an idempotent producer keeps a record
// whose request the broker took until the broker answers, however long a
// frozen broker takes, and the device would wait as long for its PUBACK.
// While nothing awaits Kafka a check costs one atomic load; otherwise it
// looks at the oldest publish of every connection that published.
func (h *Hook) watchDeadlines(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		if h.outstanding.Load() == 0 {
			continue
		}
		now := time.Now()
		expired := 0
		h.clients.Range(func(_, v any) bool {
			expired += h.expireOverdue(v.(*clientAcks), now.UnixNano())
			return true
		})
		if expired == 0 {
			continue
		}
		h.metrics.failN(ReasonAckTimeout, expired)
		if ok, suppressed := h.overdueLog.allow(now, tooLargeLogEvery); ok {
			h.log.Warn("answered publishes kafka had not acknowledged by the ack deadline with a failure (mqtt 5: 0x80; mqtt 3.1.1: connection closed); kafka may still write them",
				"publishes", expired, "ack_timeout", h.cfg.AckTimeout, "suppressed_lines", suppressed)
		}
	}
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "fleetgate-ingest" }

// Provides implements mqtt.Hook.
func (h *Hook) Provides(b byte) bool {
	switch b { // mochi asks for every event of every connection
	case mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnSelectSubscribers, mqtt.OnDisconnect:
		return true
	}
	return false
}

// UnackedBytes reports the bytes awaiting Kafka.
func (h *Hook) UnackedBytes() int64 { return h.unacked.Load() }

// Outstanding reports the QoS 1/2 publishes whose ack is not yet written.
func (h *Hook) Outstanding() int64 { return h.outstanding.Load() }

// Drain makes the hook refuse new PUBLISHes: from now on a publish is neither
// produced nor answered (the client resends it, unacknowledged, after it
// reconnects to another node). Publishes accepted before are still produced
// and acknowledged.
func (h *Hook) Drain() {
	h.drainOnce.Do(func() { close(h.draining) })
}

func (h *Hook) isDraining() bool {
	select {
	case <-h.draining:
		return true
	default:
		return false
	}
}

// Idle reports whether every accepted publish has been answered.
func (h *Hook) Idle() bool { return h.unacked.Load() == 0 && h.outstanding.Load() == 0 }

// OnSelectSubscribers switches off mochi's local fan-out: deliveries to
// subscribers come from the dispatcher, through Kafka, so that every
// subscriber on every node sees the same stream.
func (h *Hook) OnSelectSubscribers(_ *mqtt.Subscribers, _ packets.Packet) *mqtt.Subscribers {
	return &mqtt.Subscribers{}
}

// OnDisconnect forgets the connection's answer queue. Answers still in
// flight find the connection closed and are dropped; the client resends.
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.clients.Delete(cl)
	h.quotas.Delete(cl)
}

// OnPacketRead answers a QoS 2 PUBLISH resent after its PUBREC went out.
// mochi would answer it with PUBREC 0x91 (packet identifier in use), which an
// MQTT 5 client takes as a failure; the spec wants a plain PUBREC and no
// second delivery [MQTT-4.3.3-10]. The packet is replaced by a PUBACK for
// packet id 0, which mochi ignores.
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Pubrel {
		h.released(cl, pk.PacketID)
		return pk, nil
	}
	if pk.FixedHeader.Type != packets.Publish {
		return pk, nil
	}
	if pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias == 0 {
		// [MQTT-3.3.2-8]: a Topic Alias of 0 is not permitted. mochi
		// answers it with 0x94 only when a topic name comes with it,
		// and with 0x82 when the name is empty; it is the alias that is
		// invalid either way.
		h.metrics.fail(ReasonInvalidTopic)
		h.disconnect(cl, packets.ErrTopicAliasInvalid)
		return Ignored(pk.ProtocolVersion), nil
	}
	switch pk.PublishValidate(h.aliasMax) {
	case packets.ErrTopicAliasInvalid, packets.ErrProtocolViolationNoTopic, packets.ErrProtocolViolationSurplusWildcard:
		// mochi refuses it (DISCONNECT 0x94, 0x82, 0x82) before any
		// hook sees it as a publish: counted here, answered there.
		h.metrics.fail(ReasonInvalidTopic)
		return pk, nil
	}
	if isSysTopic(pk.TopicName) {
		return h.rejectSysTopic(cl, pk)
	}
	if pk.FixedHeader.Qos != 2 {
		return pk, nil
	}
	if in, ok := cl.State.Inflight.Get(pk.PacketID); !ok || in.FixedHeader.Type != packets.Pubrec {
		return pk, nil
	}
	h.metrics.duplicates.Add(context.Background(), 1, h.metrics.qosAttr[2])
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
	return Ignored(pk.ProtocolVersion), nil
}

// handled is what OnPublish returns for every PUBLISH, which it answers
// itself: a QoS 0 packet that mochi forwards to no one (Ignore) and does not
// retain, so mochi's processPublish does nothing more with it. Returning
// packets.ErrRejectPacket stops mochi as well, but its hook chain then
// boxes the whole packet (about 1 KiB) for a debug log line whether or not
// debug is logged: a third of the frontend's allocated bytes at 10,000
// devices × 1 msg/s.
var handled = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, Ignore: true}

// Ignored is a packet mochi processes as a no-op: a PUBACK for packet id 0,
// which matches no inflight message. A hook's OnPacketRead returns it for a
// packet the hook answered itself.
func Ignored(version byte) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: version}
}

// isSysTopic reports whether topic is in the server's $SYS tree, which
// clients may not publish to (4.7.2); mochi would drop such a PUBLISH without
// answering it, leaving a QoS 1/2 publisher waiting forever.
func isSysTopic(topic string) bool {
	return len(topic) >= 4 && strings.EqualFold(topic[:4], "$SYS")
}

// rejectSysTopic answers a PUBLISH to $SYS: PUBACK/PUBREC 0x90 on MQTT 5, a
// closed connection on MQTT 3.1.1 (which has no negative ack), nothing for
// QoS 0.
func (h *Hook) rejectSysTopic(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.metrics.fail(ReasonInvalidTopic)
	h.log.Info("publish to $SYS rejected", "client_id", cl.ID, "topic", pk.TopicName)
	qos := pk.FixedHeader.Qos
	if qos == 0 {
		return Ignored(pk.ProtocolVersion), nil
	}
	if cl.Properties.ProtocolVersion < 5 {
		return pk, packets.ErrRejectPacket // mochi closes the connection
	}
	acks := h.acksFor(cl)
	if acks.unacknowledged() >= h.receiveMax {
		h.metrics.fail(ReasonReceiveMaximum) // [MQTT-3.3.4-7], as in OnPublish
		h.disconnect(cl, packets.ErrReceiveMaximum)
		return Ignored(pk.ProtocolVersion), nil
	}
	deadline := time.Now().Add(h.cfg.AckTimeout)
	if !acks.acquire(deadline, h.draining) {
		return pk, packets.ErrRejectPacket
	}
	h.outstanding.Add(1)
	h.complete(acks, acks.push(pk.PacketID, qos, deadline), packets.ErrTopicNameInvalid)
	return Ignored(pk.ProtocolVersion), nil
}

func (h *Hook) acksFor(cl *mqtt.Client) *clientAcks {
	if a, ok := h.clients.Load(cl); ok {
		return a.(*clientAcks)
	}
	a, _ := h.clients.LoadOrStore(cl, &clientAcks{cl: cl, window: make(chan struct{}, h.receiveMax)})
	return a.(*clientAcks)
}

// OnPublish produces the PUBLISH to Kafka and answers it when Kafka has. It
// always returns handled, so mochi neither acks nor fans out nor retains:
// the hook owns the answer.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	// Over its quota the client waits here, its socket unread; the ack
	// deadline starts after.
	h.throttle(cl, len(pk.Payload)+len(pk.TopicName))
	received := time.Now()
	qos := pk.FixedHeader.Qos
	h.metrics.received.AddAt(int(qos), 1)

	if h.isDraining() {
		// Shutting down: the publish is not produced and not answered;
		// the client is disconnected shortly and resends it (unacked)
		// to the node it reconnects to.
		h.metrics.fail(ReasonShuttingDown)
		return handled, nil
	}

	if pk.TopicName == "" {
		// The topic name is resolved from its alias before this hook
		// runs; empty means the alias has no mapping on this connection
		// (mappings never carry over to a new one [MQTT-3.3.2-7]): a
		// Protocol Error (3.3.2.3.4). Nothing is produced or answered.
		h.metrics.fail(ReasonInvalidTopic)
		h.log.Info("closing connection: publish with an empty topic name and an unknown topic alias",
			"client_id", cl.ID, "topic_alias", pk.Properties.TopicAlias)
		h.disconnect(cl, packets.Code{Code: packets.ErrProtocolViolation.Code, Reason: "topic alias has no mapping on this connection"})
		return handled, nil
	}

	deadline := received.Add(h.cfg.AckTimeout)
	var acks *clientAcks
	var e *entry
	if qos > 0 {
		acks = h.acksFor(cl)
		if pk.FixedHeader.Dup && acks.pending(pk.PacketID) {
			// A resend of a publish still awaiting Kafka: its answer is
			// on the way; producing it again would duplicate it.
			h.metrics.duplicates.Add(context.Background(), 1, h.metrics.qosAttr[qos])
			return handled, nil
		}
		if cl.Properties.ProtocolVersion >= 5 && acks.unacknowledged() >= h.receiveMax {
			// [MQTT-3.3.4-7]: an MQTT 5 client may have at most the
			// Receive Maximum announced in CONNACK of QoS 1/2 publishes
			// without PUBACK, PUBCOMP or a failure PUBREC; one more is
			// answered with DISCONNECT 0x93 (3.3.4, 4.13). MQTT 3.1.1
			// has no such limit: its socket is not read until a slot
			// frees (acquire below).
			h.metrics.fail(ReasonReceiveMaximum)
			h.log.Info("closing connection: receive maximum exceeded", "client_id", cl.ID, "receive_maximum", h.receiveMax)
			h.disconnect(cl, packets.ErrReceiveMaximum)
			return handled, nil
		}
		if !acks.acquire(deadline, h.draining) {
			if h.isDraining() {
				h.metrics.fail(ReasonShuttingDown)
				return handled, nil
			}
			// The client sends more than Receive Maximum publishes
			// without reading their acks, or is gone.
			h.metrics.fail(ReasonClientStalled)
			if !cl.Closed() {
				h.log.Warn("closing connection: client does not read its acks", "client_id", cl.ID)
			}
			cl.Stop(packets.ErrReceiveMaximum)
			return handled, nil
		}
		h.outstanding.Add(1)
		e = acks.push(pk.PacketID, qos, deadline)
		if qos == 2 && pk.FixedHeader.Dup && h.receivedBefore(cl, pk.PacketID) {
			// Resent after a reconnect (maybe to another node) although
			// its PUBREC went out: answer it again, produce it once
			// [MQTT-4.3.3-10].
			h.metrics.duplicates.Add(context.Background(), 1, h.metrics.qosAttr[qos])
			h.complete(acks, e, packets.CodeSuccess)
			return handled, nil
		}
	}

	if h.authorizer != nil && !h.authorizer.AllowPublish(cl, pk.TopicName) {
		// Nothing is produced. MQTT 5 gets PUBACK/PUBREC 0x87 in its
		// place among the acks; MQTT 3.1.1, which has no negative ack,
		// gets the acks before it and a closed connection
		// [MQTT-3.3.5-2]: a positive ack would say the message is in
		// Kafka. QoS 0 is dropped and counted.
		h.log.Debug("publish refused: not authorized", "client_id", cl.ID, "username", string(cl.Properties.Username), "topic", pk.TopicName, "qos", qos)
		h.reject(cl, acks, e, packets.ErrNotAuthorized, ReasonNotAuthorized)
		return handled, nil
	}

	if pk.FixedHeader.Retain && h.retained != nil {
		if err := h.retained.Allow(len(pk.Payload)); err != nil {
			// Over the retained store's bounds: MQTT 5 gets 0x97 (Quota
			// exceeded) in its place among the acks, MQTT 3.1.1 a closed
			// connection [MQTT-3.3.5-2]; nothing is produced, not even
			// without the flag: the device asked for it retained.
			if ok, suppressed := h.retainedLog.allow(time.Now(), tooLargeLogEvery); ok {
				h.log.Info("publish refused: "+err.Error(), "client_id", cl.ID, "payload_bytes", len(pk.Payload), "suppressed", suppressed)
			}
			h.reject(cl, acks, e, packets.ErrQuotaExceeded, ReasonRetainedQuota)
			return handled, nil
		}
	}

	// [MQTT-3.3.2-4]: a PUBLISH with Payload Format Indicator 1 must carry
	// UTF-8; the receiver may reject it with 0x99.
	if pk.Properties.PayloadFormatFlag && pk.Properties.PayloadFormat == 1 && !utf8.Valid(pk.Payload) {
		h.reject(cl, acks, e, packets.ErrPayloadFormatInvalid, ReasonPayloadFormat)
		return handled, nil
	}

	// On this goroutine's stack: Encode copies what it keeps.
	var msg kafkarecord.Message
	h.message(&msg, cl, pk, received)
	if !validTopicName(msg.Topic) {
		// The record contract: mqtt.topic is a valid topic name,
		// whatever the client sent. mochi's checks should have caught
		// this; never produce it. MQTT 5 gets PUBACK/PUBREC 0x90,
		// MQTT 3.1.1 a closed connection (writeAcks), QoS 0 nothing.
		h.log.Info("publish refused: invalid topic name", "client_id", cl.ID)
		h.reject(cl, acks, e, packets.ErrTopicNameInvalid, ReasonInvalidTopic)
		return handled, nil
	}
	if err := h.topicLimits.Check(msg.Topic); err != nil {
		// Valid MQTT, longer or deeper than this server takes
		// (mqtt.max-topic-length, mqtt.max-topic-levels): answered like
		// an invalid topic name, PUBACK/PUBREC 0x90 (MQTT 5, section
		// 3.4.2.1), a closed connection for MQTT 3.1.1, which has no
		// negative ack [MQTT-3.3.5-2]; nothing is produced.
		h.log.Info("publish refused: topic name over the limit", "client_id", cl.ID, "err", err)
		h.reject(cl, acks, e, packets.ErrTopicNameInvalid, ReasonTopicLimit)
		return handled, nil
	}
	rec := kafkarecord.Encode(h.topic, &msg)
	size := recordSize(rec)
	if !h.reserve(cl, size, deadline) {
		h.reject(cl, acks, e, packets.ErrQuotaExceeded, ReasonBackpressure)
		return handled, nil
	}

	// The producer's delivery timeout (= the ack deadline) bounds the
	// record's time in Kafka from now. Only a publish that already waited
	// for budget needs a deadline of its own, to be answered within the
	// deadline from its receipt; a context timer for every message would
	// cost more than the rest of its path.
	ctx, cancel := traceContext(pk.Properties.User), context.CancelFunc(nil)
	if time.Since(received) > h.cfg.AckTimeout/10 {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	// The callback captures what it needs, not pk: a captured packet would
	// move to the heap, a kilobyte for every publish.
	packetID, topicName := pk.PacketID, msg.Topic
	h.producer.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if cancel != nil {
			cancel()
		}
		h.release(size)
		if err != nil && isTooLarge(err) {
			// Retrying cannot help: PUBACK/PUBREC 0x95 on MQTT 5, a
			// closed connection on MQTT 3.1.1 (writeAcks); one log line
			// per tooLargeLogEvery, however many records.
			h.metrics.fail(ReasonTooLarge)
			if ok, suppressed := h.tooLargeLog.allow(time.Now(), tooLargeLogEvery); ok {
				h.log.Warn("kafka refused record as too large", "client_id", cl.ID, "topic", topicName, "qos", qos,
					"record_bytes", size, "suppressed", suppressed, "err", err)
			}
			if e != nil {
				h.complete(acks, e, packets.Code{Code: packets.ErrPacketTooLarge.Code, Reason: "record too large for kafka"})
			}
			return
		}
		if err != nil {
			h.metrics.fail(ReasonKafka)
			h.log.Warn("kafka did not take record", "client_id", cl.ID, "topic", topicName, "qos", qos, "err", err)
			if e != nil {
				h.complete(acks, e, packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "kafka did not acknowledge the record"})
			}
			return
		}
		h.metrics.produced.Add(1)
		h.metrics.latency.Record(context.Background(), time.Since(received).Seconds())
		if qos == 2 && h.exactlyOnce != nil {
			// Off the producer's callback goroutine: a store round trip
			// must not hold up every other record's promise.
			workers.Go(func() {
				if err := h.exactlyOnce.MarkReceived(cl, packetID); err != nil && !cl.Closed() {
					// The record is in Kafka; only a resend of this
					// publish after a lost PUBREC would be produced twice.
					h.log.Warn("qos 2 packet id not recorded in the session store", "client_id", cl.ID, "packet_id", packetID, "err", err)
				}
				h.complete(acks, e, packets.CodeSuccess)
			})
			return
		}
		if e != nil {
			h.complete(acks, e, packets.CodeSuccess)
		}
	})
	return handled, nil
}

// disconnect ends cl's connection with code as its stop cause. The
// frontend's connection wrapper answers an MQTT 5 client with a DISCONNECT
// carrying that code (every publisher has had a successful CONNACK
// [MQTT-3.14.0-1]) and counts it; MQTT 3.1.1, where only clients send
// DISCONNECT, sees the connection close.
func (h *Hook) disconnect(cl *mqtt.Client, code packets.Code) {
	cl.Stop(code)
}

// released notes a PUBREL: a QoS 2 publish whose PUBREC went out stops
// counting against the Receive Maximum when it is released (3.3.4).
func (h *Hook) released(cl *mqtt.Client, packetID uint16) {
	in, ok := cl.State.Inflight.Get(packetID)
	if !ok || in.FixedHeader.Type != packets.Pubrec {
		return
	}
	if a, ok := h.clients.Load(cl); ok {
		a.(*clientAcks).releaseRec()
	}
}

// isTooLarge reports whether Kafka (or the producer's own limit) refused a
// record for its size, which no retry can fix.
func isTooLarge(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)
}

// validTopicName reports whether topic may be the mqtt.topic of a record: a
// non-empty UTF-8 string of at most 65,535 bytes without U+0000
// [MQTT-1.5.4-1] [MQTT-1.5.4-2] [MQTT-4.7.3-1] and without wildcards
// [MQTT-3.3.2-2].
func validTopicName(topic string) bool {
	return topic != "" && len(topic) <= 65535 && utf8.ValidString(topic) &&
		!strings.ContainsAny(topic, "+#\x00")
}

// logLimiter lets one log line through per interval and counts the ones it
// held back.
type logLimiter struct {
	mu         sync.Mutex
	last       time.Time // guarded by mu
	suppressed int       // guarded by mu
}

// allow reports whether a line may be logged now, and how many were held
// back since the last one.
func (l *logLimiter) allow(now time.Time, every time.Duration) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}

// receivedBefore asks the session store whether a QoS 2 packet id resent
// with DUP was received before the connection changed.
func (h *Hook) receivedBefore(cl *mqtt.Client, packetID uint16) bool {
	if h.exactlyOnce == nil {
		return false
	}
	ok, err := h.exactlyOnce.Received(cl, packetID)
	if err != nil {
		// Producing it again risks a duplicate; refusing it would lose
		// the message if it was never produced.
		h.log.Warn("cannot check a resent qos 2 publish; producing it", "client_id", cl.ID, "packet_id", packetID, "err", err)
		return false
	}
	return ok
}

// reject answers a publish that will not be produced.
func (h *Hook) reject(cl *mqtt.Client, acks *clientAcks, e *entry, code packets.Code, reason string) {
	h.metrics.fail(reason)
	if e == nil { // QoS 0 has no answer; the message is dropped and counted.
		h.log.Debug("dropping qos 0 publish", "client_id", cl.ID, "reason", reason)
		return
	}
	h.complete(acks, e, code)
}

// reserve takes size bytes of the node's unacknowledged-bytes budget,
// waiting (and so not reading this client's socket) until deadline.
func (h *Hook) reserve(cl *mqtt.Client, size int64, deadline time.Time) bool {
	if h.budget.TryAcquire(size) {
		h.unacked.Add(size)
		h.saturatedSince.Store(0)
		return true
	}
	// Once the node has been full for a whole ack deadline, answer at once
	// instead of making every further publish wait the deadline again on a
	// socket the node is not reading: the client learns fast that the node
	// is overloaded.
	now := time.Now()
	h.saturatedSince.CompareAndSwap(0, now.UnixNano())
	if limit := time.Unix(0, h.saturatedSince.Load()).Add(h.cfg.AckTimeout); limit.Before(deadline) {
		deadline = limit
	}
	for time.Now().Before(deadline) {
		// Wake up every second to notice a closed connection or a drain.
		wait := min(time.Until(deadline), time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := h.budget.Acquire(ctx, size)
		cancel()
		if err == nil {
			h.unacked.Add(size)
			h.saturatedSince.Store(0)
			return true
		}
		if cl.Closed() || h.isDraining() {
			return false
		}
	}
	return false
}

func (h *Hook) release(size int64) {
	h.unacked.Add(-size)
	h.budget.Release(size)
}

// message maps a PUBLISH to the record contract.
func (h *Hook) message(m *kafkarecord.Message, cl *mqtt.Client, pk packets.Packet, received time.Time) {
	*m = kafkarecord.Message{
		ClientID:   cl.ID,
		Topic:      pk.TopicName,
		Payload:    pk.Payload,
		QoS:        pk.FixedHeader.Qos,
		Retain:     pk.FixedHeader.Retain,
		Username:   string(cl.Properties.Username),
		Protocol:   cl.Properties.ProtocolVersion,
		Kind:       kafkarecord.KindPublish,
		MessageID:  newMessageID(),
		Node:       h.node,
		ReceivedAt: received,
	}
	p := &pk.Properties
	m.ContentType = p.ContentType
	if p.PayloadFormatFlag {
		f := p.PayloadFormat
		m.PayloadFormat = &f
	}
	if p.MessageExpiryInterval > 0 {
		e := p.MessageExpiryInterval
		m.MessageExpiry = &e
	}
	m.ResponseTopic = p.ResponseTopic
	if len(p.CorrelationData) > 0 {
		m.CorrelationData = p.CorrelationData
	}
	for _, u := range p.User {
		m.UserProperties = append(m.UserProperties, kafkarecord.UserProperty{Key: u.Key, Value: u.Val})
	}
}

func init() {
	// Draw the random bits of message ids from a buffered pool instead
	// of one getrandom call per message.
	uuid.EnableRandPool()
}

// newMessageID returns a UUIDv7: unique, and sortable by creation time.
func newMessageID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// traceContext returns a context carrying the trace of an MQTT 5 publisher
// that sent W3C trace context as user properties (traceparent, tracestate),
// so the record's span continues the device's trace.
func traceContext(user []packets.UserProperty) context.Context {
	ctx := context.Background()
	for _, u := range user {
		if u.Key == "traceparent" {
			return propagation.TraceContext{}.Extract(ctx, userCarrier(user))
		}
	}
	return ctx
}

// userCarrier reads W3C trace context from MQTT 5 user properties.
type userCarrier []packets.UserProperty

func (c userCarrier) Get(key string) string {
	for _, u := range c {
		if u.Key == key {
			return u.Val
		}
	}
	return ""
}

func (c userCarrier) Set(string, string) {}

func (c userCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, u := range c {
		keys[i] = u.Key
	}
	return keys
}
