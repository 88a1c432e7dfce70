package delivery

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/workers"
)

// takeBatch bounds the messages moved from the queue in one store call.
const takeBatch = 256

// ack is an acknowledgement of an outbound message.
type ack struct {
	kind   byte // packets.Puback, Pubrec or Pubcomp
	id     uint16
	reason byte
}

// outbound is a message in flight to the client.
type outbound struct {
	state byte // 1 (QoS 1), 2 (QoS 2 PUBLISH sent), 3 (PUBREL sent)
	// topic and messageID, for the delivery receipt; empty for a PUBREL
	// resent after a reconnect (the store keeps only its packet id).
	topic, messageID string
}

// Pump writes the messages of one connection's session to it and records
// their acknowledgements: the outbound half of a session. Create it with
// Deliverer.Open.
type Pump struct {
	d  *Deliverer
	cl *mqtt.Client
	// epoch fences the pump's store writes; set by Begin.
	epoch uint64
	// onGone runs once the store says the session moved on (a newer
	// connection took it over).
	onGone func()
	halted atomic.Bool // taken over: no more rounds
	closed atomic.Bool // the connection ended (Close)

	// ctx ends the pump's store calls when the connection is gone (Stop).
	// The first pump run makes it, under ctxMu: an idle connection holds
	// none. Once set it never changes, and the running pump reads it
	// without the lock.
	ctxMu  sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc

	// Acknowledgements read and not yet applied; nil while there are none,
	// so an idle connection holds no buffer.
	acksMu  sync.Mutex
	acks    []ack
	maxAcks int
	// direct are messages a dispatcher handed straight to the session's
	// inflight hash, from notices, not yet written; guarded by acksMu. The
	// session's window in Redis bounds them.
	direct []session.QueuedMessage

	// The pump runs on at most one goroutine at a time, started on demand
	// by kick: an idle connection has none.
	running atomic.Bool
	pending atomic.Bool
	// begun: Begin set the session's epoch; no round runs before.
	begun atomic.Bool
	// wroteSeq mirrors lastSeq after each round, for Behind.
	wroteSeq atomic.Uint64
	// queued: the queue may hold messages (a notice, a poll, a connect or
	// a failed attempt said so). An acknowledgement alone does not set it,
	// so completing a delivery costs no look at an empty queue.
	queued atomic.Bool
	// work holds the pump's state below; OnDisconnect takes it to apply
	// the acknowledgements the pump did not get to.
	work sync.Mutex

	// Owned by the running pump.
	window int
	resent bool
	// Outbound topic aliases [MQTT-3.1.2-26]: aliases maps the topics
	// given one on this connection, aliasMax bounds them (0: the client
	// takes none [MQTT-3.1.2-27]); sentOnce holds topics sent once without
	// one, so that a one-off topic takes no alias (bounded).
	aliasMax uint16
	aliases  map[string]uint16
	sentOnce map[string]struct{}
	// snapshot is what was in flight at the CONNECT, when the session
	// store said so (BeginFrom): resend reads it instead of the store; nil
	// when it did not (a pointer: every connection holds the field).
	snapshot *[]session.InflightMessage
	inflight map[uint16]outbound
	// lastSeq is the sequence number of the newest message written (or
	// resent) on this connection: messages go out in sequence order, and
	// one at or below it was written already.
	lastSeq uint64
	// fill: messages past lastSeq are in the inflight hash but did not
	// arrive (a lost or late notice); the next round reads them from there.
	fill bool
	// written are packet ids whose delivery ended when they were written
	// (QoS 0, or not sendable at all), to be acknowledged in the store
	// with the next round.
	written []uint16
	retryAt *time.Timer
	backoff time.Duration

	// listed: the pump is on the node's ack sweep (sweep.go), which runs
	// it once delivery.ack-delay is up; due: the sweep ran it, so its
	// deferred acknowledgements are recorded now.
	listed atomic.Bool
	due    atomic.Bool
}

// Open returns the pump of a new connection. It does nothing until Begin.
// onGone runs when a store write finds that the session moved on.
func (d *Deliverer) Open(cl *mqtt.Client, onGone func()) *Pump {
	// The inflight map is made with the first message written: an idle
	// connection holds none.
	c := &Pump{d: d, cl: cl, onGone: onGone}
	c.window = d.cfg.MaxInflight
	if cl.Properties.ProtocolVersion >= 5 {
		rm := int(cl.Properties.Props.ReceiveMaximum)
		if rm == 0 {
			rm = 65535 // absent: no limit beyond the protocol's [MQTT-3.1.2.11.3]
		}
		c.window = min(c.window, rm)
	}
	if cl.Properties.ProtocolVersion >= 5 && d.cfg.TopicAliases > 0 {
		c.aliasMax = uint16(min(int(cl.Properties.Props.TopicAliasMaximum), d.cfg.TopicAliases))
	}
	// An honest client has at most two acknowledgements per message in
	// flight (PUBREC, PUBCOMP); more are dropped (see pushAck).
	c.maxAcks = 2*c.window + 16
	return c
}

// Window is the most messages the pump keeps in flight: the session's
// window in the store.
func (c *Pump) Window() int { return c.window }

// Begin starts delivering for the session registered with epoch, whose
// messages up to lastSeq were handed over before this connection: what is
// in flight is resent first, then the queue follows.
func (c *Pump) Begin(epoch, lastSeq uint64) {
	c.begin(epoch, lastSeq, nil, false, true)
}

// begin sets the pump's session and lets it run: a kick before it (a
// notice or an acknowledgement that came before the connection's CONNACK
// went out) only marked work pending.
func (c *Pump) begin(epoch, lastSeq uint64, inflight []session.InflightMessage, snapshot, queued bool) {
	c.work.Lock()
	c.epoch, c.lastSeq = epoch, lastSeq
	c.wroteSeq.Store(lastSeq)
	if snapshot && !c.resent {
		c.snapshot = &inflight
	}
	c.work.Unlock()
	c.begun.Store(true)
	if queued {
		c.queued.Store(true)
	}
	if queued || len(inflight) > 0 || c.pending.Load() {
		c.kick()
	}
}

// BeginFrom is Begin with what the session store's Connect found: the
// messages in flight then (resent first) and whether the queue held any.
// Use it only when nothing can have changed since but through a notice to
// this pump: a session with nothing in flight and an empty queue then
// costs no store read at all.
func (c *Pump) BeginFrom(epoch, lastSeq uint64, inflight []session.InflightMessage, queued bool) {
	c.begin(epoch, lastSeq, inflight, true, queued)
}

// Behind reports whether the session's sequence counter seq (from
// session.Store.PendingOf) is past what the pump wrote: a message was
// handed to the session that the pump never heard of. It may be briefly
// true while a round is writing; a kick then costs one round.
func (c *Pump) Behind(seq uint64) bool { return seq > c.wroteSeq.Load() }

// Halt stops the pump's rounds for good: the session was taken over.
// Acknowledgements still read are recorded by Close.
func (c *Pump) Halt() { c.halted.Store(true) }

// Stop ends the pump's work at once: the connection is gone.
func (c *Pump) Stop() {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	if c.cancel != nil {
		c.cancel()
	} else if c.ctx == nil {
		c.ctx = stopped
	}
}

// stopped is the context of a pump stopped before it ever ran.
var stopped = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// context returns the pump's context, making it on the first run.
func (c *Pump) context() context.Context {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
	return c.ctx
}

// Close records, once the connection ended, the acknowledgements it read
// that no round recorded yet (Finish).
func (c *Pump) Close(newCtx func() (context.Context, context.CancelFunc)) {
	c.closed.Store(true)
	c.Finish(newCtx)
}

// pushAck hands an acknowledgement to the pump. It never blocks the read
// goroutine: a client that sends more acknowledgements than it has messages
// in flight loses the excess, which match nothing anyway.
// PushAck hands the pump an acknowledgement read from the client: kind is
// packets.Puback, Pubrec or Pubcomp.
func (c *Pump) PushAck(kind byte, id uint16, reason byte) {
	c.pushAck(ack{kind: kind, id: id, reason: reason})
}

func (c *Pump) pushAck(a ack) {
	c.acksMu.Lock()
	full := len(c.acks) >= c.maxAcks
	if !full {
		c.acks = append(c.acks, a)
	}
	c.acksMu.Unlock()
	if full {
		c.d.metrics.acksDropped.Add(context.Background(), 1)
	}
	if c.mayWait(a) {
		// Recorded by the node's next ack sweep: no round (and no
		// goroutine woken) for it now.
		c.d.sweep.add(c)
		return
	}
	c.kick()
}

// mayWait reports whether acknowledgement a can be left to the node's ack
// sweep without running the pump: a PUBACK or PUBCOMP (a PUBREC is
// answered with a PUBREL once recorded), while no queued message waits for
// the window it frees and no round is running (a running round takes it
// anyway). The round the sweep runs then decides as deferAcks does.
func (c *Pump) mayWait(a ack) bool {
	return c.d.cfg.AckDelay > 0 && a.kind != packets.Pubrec && c.begun.Load() &&
		!c.queued.Load() && !c.running.Load() && !c.halted.Load()
}

// PushDirect hands the pump a message a dispatcher put in flight for it.
func (c *Pump) PushDirect(m session.QueuedMessage) {
	c.acksMu.Lock()
	c.direct = append(c.direct, m)
	c.acksMu.Unlock()
	c.kick()
}

// takeDirect returns the direct messages received so far and forgets them.
func (c *Pump) takeDirect() []session.QueuedMessage {
	c.acksMu.Lock()
	defer c.acksMu.Unlock()
	d := c.direct
	c.direct = nil
	return d
}

// takeAcks returns the acknowledgements read so far and forgets them.
func (c *Pump) takeAcks() []ack {
	c.acksMu.Lock()
	defer c.acksMu.Unlock()
	a := c.acks
	c.acks = nil
	return a
}

// KickQueued makes the pump look at the queue: messages may be there.
func (c *Pump) KickQueued() {
	c.queued.Store(true)
	c.kick()
}

// kick makes the pump run: now, or again after its current round.
func (c *Pump) kick() {
	c.pending.Store(true)
	if !c.begun.Load() {
		return // begin runs the pump
	}
	if c.running.CompareAndSwap(false, true) {
		// On a worker whose stack has grown for a round already: a new
		// goroutine per round paid that growth by copying at every
		// delivery to a quiet subscriber.
		workers.Go(c.pump)
	}
}

func (c *Pump) pump() {
	ctx := c.context()
	for {
		c.pending.Store(false)
		c.work.Lock()
		c.round()
		c.wroteSeq.Store(c.lastSeq)
		c.work.Unlock()
		c.running.Store(false)
		if !c.pending.Load() || ctx.Err() != nil {
			return
		}
		if !c.running.CompareAndSwap(false, true) {
			return // another kick started a pump
		}
	}
}

// Finish records the acknowledgements that arrived after the pump's last
// round, once the connection has ended: a PUBACK read just before the
// client's DISCONNECT still completes its message [MQTT-4.4.0-1]. newCtx
// makes the context of the store's calls, only when there is something to
// record: a connection's end usually has nothing, and a context with a
// deadline is a timer made and stopped (the sessions hook's contexts were
// 6.0 % of the frontend's CPU samples in a reconnect storm, 3.3 % with
// these two made only when needed).
func (c *Pump) Finish(newCtx func() (context.Context, context.CancelFunc)) {
	// The pump may be stuck writing to a client that stopped reading: give
	// up on the lock after a while (those messages are then sent again).
	for deadline := time.Now().Add(time.Second); !c.work.TryLock(); {
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	defer c.work.Unlock()
	pending := c.takeAcks()
	s := c.settle(pending)
	var err error
	if len(s.acks) > 0 || len(s.pubrecs) > 0 {
		ctx, cancel := newCtx()
		defer cancel()
		if c.closed.Load() {
			// A reconnect may have overtaken the close: the
			// acknowledgements still name this session's messages,
			// whatever its epoch now.
			err = c.d.store.AckAfterClose(ctx, c.cl.ID, s.acks)
			if err == nil && len(s.pubrecs) > 0 {
				err = c.d.rounds.do(ctx, &session.Round{ClientID: c.cl.ID, Epoch: c.epoch, Pubrecs: s.pubrecs})
			}
		} else {
			err = c.d.rounds.do(ctx, &session.Round{ClientID: c.cl.ID, Epoch: c.epoch, Acks: s.acks, Pubrecs: s.pubrecs})
		}
	}
	if err != nil {
		c.restore(pending)
		if !session.Gone(err) {
			c.d.log.Warn("acknowledgements at disconnect not recorded; those messages are sent again", "client_id", c.cl.ID, "err", err)
		}
		return
	}
	c.settled(s)
}

// round resends what was in flight (once per connection), then runs store
// rounds until there is nothing left to do: each records the
// acknowledgements received so far and takes as many queued messages as
// the client's window has room for, in one script sent in a pipeline
// shared with the node's other sessions (rounds).
func (c *Pump) round() {
	if c.ctx.Err() != nil || c.halted.Load() {
		return
	}
	if !c.resent {
		if err := c.resend(); err != nil {
			c.fail("resending inflight messages", err)
			return
		}
		c.resent = true
	}
	// full: a take of this round stopped at the session's window in the
	// store with messages left in the queue. The queue stays marked, and
	// the next take waits for an acknowledgement that frees a place.
	full := false
	for c.ctx.Err() == nil {
		if c.fill {
			if err := c.fillFromInflight(); err != nil {
				c.fail("reading inflight messages", err)
				return
			}
		}
		direct := c.takeDirect()
		if len(direct) > 0 {
			c.send(direct, sentDirect)
		}
		pending := c.takeAcks()
		s := c.settle(pending)
		take := 0
		if free := c.window - len(c.inflight) + s.completing; free > 0 && (!full || s.completing > 0) && c.queued.Swap(false) {
			take = min(free, takeBatch)
		}
		if take == 0 && len(s.acks) == 0 && len(s.pubrecs) == 0 && len(s.pubrels) == 0 {
			if len(direct) > 0 || c.fill {
				continue // the QoS 0 messages written, or the gap to fill
			}
			return
		}
		if take == 0 && c.deferAcks(s) {
			c.restore(pending)
			if len(direct) > 0 || c.fill {
				continue
			}
			return
		}
		r := session.Round{ClientID: c.cl.ID, Epoch: c.epoch, Acks: s.acks, Pubrecs: s.pubrecs, Take: take}
		if len(r.Acks) > 0 || len(r.Pubrecs) > 0 || r.Take > 0 {
			if err := c.d.rounds.do(c.ctx, &r); err != nil {
				c.restore(pending)
				if take > 0 {
					c.queued.Store(true)
				}
				c.fail("delivery round", err)
				return
			}
		}
		c.settled(s)
		if len(r.Taken) > 0 {
			c.send(r.Taken, sentQueued)
		}
		if take > 0 && r.Seq > c.lastSeq {
			// Messages handed to this session directly that did not
			// arrive (yet): write them from the inflight hash, in order.
			c.fill = true
		}
		if take > 0 {
			full = r.Full
			switch {
			case len(r.Taken) == take:
				c.queued.Store(true) // there may be more
			case r.Full:
				// The window is full of messages handed to the session
				// directly that this pump has not written yet (their
				// notice is on its way, or the fill writes them): the
				// queue waits for their acknowledgements, not for a
				// notice or the poll.
				c.queued.Store(true)
			default:
				c.backoff = 0 // the queue is empty
			}
		}
	}
}

// deferAcks reports whether the acknowledgements of s may wait for a later
// round, and if so lists the pump on the node's ack sweep, which runs it
// within delivery.ack-delay: a round that only records acknowledgements is
// a Redis script of its own, while one that also takes messages carries
// them for free, and the sweep sends the rounds of every session whose
// acknowledgements waited in shared pipelines, which Redis reads, runs and
// fsyncs together instead of one turn of its event loop each. They wait
// only while nothing else is to be done: no queued messages (the window
// would need the slots they free), no PUBREC (its PUBREL waits for the
// record), no QoS 0 message written (recording it late would risk sending
// it again after a crash, and QoS 0 is at most once). A connection that
// ends records them (Finish); a node that crashes sends those messages
// again on the next connection, as QoS 1 and 2 allow.
func (c *Pump) deferAcks(s settlement) bool {
	if c.d.cfg.AckDelay <= 0 || len(s.acks) == 0 || len(s.pubrecs) > 0 || len(s.pubrels) > 0 || len(c.written) > 0 || c.queued.Load() {
		return false
	}
	if c.due.Swap(false) {
		return false // the sweep came: record them now
	}
	c.d.sweep.add(c)
	return true
}

// send writes msgs, direct or taken, in sequence order: those at or below
// lastSeq were written already; a gap before the next one (a notice still on
// its way, or lost) makes the next round write everything past lastSeq from
// the inflight hash instead, where every message in flight is.
func (c *Pump) send(msgs []session.QueuedMessage, how sendKind) {
	slices.SortFunc(msgs, func(a, b session.QueuedMessage) int { return cmp.Compare(a.Seq, b.Seq) })
	buf := bufPool.Get().(*bytes.Buffer)
	for _, m := range msgs {
		if m.Seq <= c.lastSeq {
			continue
		}
		if m.Seq != c.lastSeq+1 {
			c.fill = true
			break
		}
		c.lastSeq = m.Seq
		if c.write(buf, m, how) {
			c.written = append(c.written, m.PacketID)
		}
	}
	c.flush(buf)
	bufPool.Put(buf)
}

// fillFromInflight writes the messages in the inflight hash past lastSeq.
func (c *Pump) fillFromInflight() error {
	msgs, err := c.d.store.Inflight(c.ctx, c.cl.ID)
	if err != nil {
		return err
	}
	c.fill = false
	c.d.metrics.filled.Add(1)
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	for _, m := range msgs { // in sequence order
		if m.Released || m.Seq <= c.lastSeq {
			continue
		}
		c.lastSeq = m.Seq
		if c.write(buf, m.QueuedMessage, sentDirect) {
			c.written = append(c.written, m.PacketID)
		}
	}
	c.flush(buf)
	return nil
}

// settlement is what a round records for the acknowledgements read.
type settlement struct {
	// acks complete their messages: PUBACK, PUBCOMP, a PUBREC with a
	// failure code, and the messages done when written (client.written).
	acks []uint16
	// kinds are the packet types of acks (0 for a written message).
	kinds []byte
	// completing counts the acks of messages in flight, whose slots in
	// the window the round frees.
	completing int
	pubrecs    []uint16 // PUBREC of a QoS 2 PUBLISH: record, then PUBREL
	pubrels    []uint16 // PUBREC again after PUBREL: PUBREL again
}

// settle sorts the acknowledgements read: PUBACK and PUBCOMP complete a
// message [MQTT-4.3.2-1] [MQTT-4.3.3-1]; PUBREC is recorded and answered
// with PUBREL [MQTT-4.3.3-4]; an MQTT 5 PUBREC with a failure code ends the
// flow [MQTT-4.3.3-4 non-normative 4.13.2]. Acknowledgements of packet ids
// not in flight, or not in the state they acknowledge, are ignored like
// mochi does.
func (c *Pump) settle(pending []ack) settlement {
	var s settlement
	var seen map[uint16]struct{}
	if len(pending) > 1 {
		seen = make(map[uint16]struct{}, len(pending))
	}
	for _, a := range pending {
		o, ok := c.inflight[a.id]
		if !ok {
			continue
		}
		switch {
		case a.kind == packets.Puback && o.state == 1,
			a.kind == packets.Pubcomp && o.state == 3,
			a.kind == packets.Pubrec && o.state == 2 && a.reason >= packets.ErrUnspecifiedError.Code:
			if seen != nil {
				if _, dup := seen[a.id]; dup {
					continue
				}
				seen[a.id] = struct{}{}
			}
			s.acks = append(s.acks, a.id)
			s.kinds = append(s.kinds, a.kind)
			s.completing++
		case a.kind == packets.Pubrec && o.state == 2:
			s.pubrecs = append(s.pubrecs, a.id)
		case a.kind == packets.Pubrec && o.state == 3:
			s.pubrels = append(s.pubrels, a.id)
		}
	}
	for _, id := range c.written {
		s.acks = append(s.acks, id)
		s.kinds = append(s.kinds, 0)
	}
	return s
}

// settled applies a settlement the store recorded: completed messages
// leave the window (with their delivery receipts), and recorded PUBRECs
// are answered with PUBREL.
func (c *Pump) settled(s settlement) {
	c.written = c.written[:0]
	if len(s.acks) > 0 {
		c.due.Store(false) // what the sweep came for is recorded
	}
	for i, id := range s.acks {
		if s.kinds[i] == 0 {
			continue
		}
		if o, ok := c.inflight[id]; ok {
			delete(c.inflight, id)
			c.d.metrics.completed.Add(1)
			if s.kinds[i] != packets.Pubrec { // a refused PUBREC ends the flow undelivered
				c.receipt(id, o)
			}
		}
	}
	for _, id := range s.pubrecs {
		if o, ok := c.inflight[id]; ok && o.state == 2 {
			o.state = 3
			c.inflight[id] = o
		}
	}
	for _, id := range append(s.pubrecs, s.pubrels...) {
		_ = c.cl.WritePacket(pubrel(id))
	}
}

// restore puts acknowledgements back for the next attempt.
func (c *Pump) restore(pending []ack) {
	if len(pending) == 0 {
		return
	}
	c.acksMu.Lock()
	c.acks = append(append([]ack(nil), pending...), c.acks...)
	c.acksMu.Unlock()
}

// fail handles a store error of the pump: a fenced session was taken over
// by a newer connection, which this one learns here if it missed the
// takeover notice; anything else is retried with backoff.
func (c *Pump) fail(what string, err error) {
	if c.ctx.Err() != nil {
		return
	}
	if session.Gone(err) {
		c.onGone()
		return
	}
	c.d.metrics.storeErrors.Add(context.Background(), 1)
	c.backoff = min(max(2*c.backoff, 100*time.Millisecond), 5*time.Second)
	c.d.log.Warn("delivery paused: "+what, "client_id", c.cl.ID, "retry_in", c.backoff, "err", err)
	if c.retryAt != nil {
		c.retryAt.Stop()
	}
	c.retryAt = time.AfterFunc(c.backoff, c.KickQueued)
}

// resend writes the session's inflight messages again after a reconnect:
// PUBLISH with DUP set, or PUBREL where PUBREC was received [MQTT-4.4.0-1].
func (c *Pump) resend() error {
	var msgs []session.InflightMessage
	if c.snapshot != nil {
		msgs = *c.snapshot
	} else {
		var err error
		if msgs, err = c.d.store.Inflight(c.ctx, c.cl.ID); err != nil {
			return err
		}
	}
	c.snapshot = nil
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	// Messages handed to this connection since its CONNECT (past the
	// counter CONNECT returned) were never sent: no DUP for them.
	connected := c.lastSeq
	for _, m := range msgs {
		c.lastSeq = max(c.lastSeq, m.Seq)
		if m.Released {
			c.track(m.PacketID, outbound{state: 3})
			c.d.metrics.resent.Add(c.ctx, 1)
			c.flush(buf) // keep the order of the flows
			_ = c.cl.WritePacket(pubrel(m.PacketID))
			continue
		}
		how := sentDirect
		if m.Seq <= connected {
			how = sentAgain
		}
		if c.write(buf, m.QueuedMessage, how) {
			c.written = append(c.written, m.PacketID)
		}
	}
	c.flush(buf)
	return nil
}

func pubrel(id uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id}
}

// sendKind is how a message reaches write: its first send, handed to the
// connected session by a dispatcher (the notice, or the inflight read that
// stands in for a late one, or a message handed over since a reconnect's
// CONNECT), its first send taken from the session's queue, or a resend
// after a reconnect.
type sendKind uint8

const (
	sentDirect sendKind = iota
	sentQueued
	sentAgain
)

// flushAt is the buffered size at which write sends what it encoded.
const flushAt = 64 << 10

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// write encodes one message into buf, to be sent with the others of the
// round in as few socket writes as possible (one write(2) per PUBLISH would
// cost more than the rest of a delivery), and reports whether its delivery
// is complete without an acknowledgement: QoS 0, or a message that cannot be
// sent at all (undecodable, or larger than the client's Maximum Packet
// Size, which the server must then discard [MQTT-3.1.2-25]). A message that
// never reaches a closing connection stays in flight in the store and is
// sent again on the next connection.
func (c *Pump) write(buf *bytes.Buffer, m session.QueuedMessage, how sendKind) (done bool) {
	resend := how == sentAgain
	msg, err := handoff.DecodeMessage(m.Message)
	if err != nil {
		c.d.metrics.dropped.Add(c.ctx, 1, c.d.metrics.reasonUndecodable)
		c.d.log.Error("dropping undecodable queued message", "client_id", c.cl.ID, "err", err)
		return true
	}
	if a := c.d.authz; a != nil {
		allow, known := a.AllowRead(c.cl, msg.Topic)
		if !known {
			// The connection ended: the message stays in flight in the
			// store for the next one, which decides again.
			return false
		}
		if !allow {
			// Debug only: a narrowed rule may deny a busy subscription's
			// every message; the counter says how many.
			c.d.metrics.dropped.Add(c.ctx, 1, c.d.metrics.reasonNotAuthorized)
			if c.d.log.Enabled(c.ctx, slog.LevelDebug) {
				c.d.log.Debug("message on a topic the subscriber may no longer read discarded", "client_id", c.cl.ID, "topic", msg.Topic)
			}
			return true
		}
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: msg.QoS, Retain: msg.Retain},
		TopicName:       msg.Topic,
		Payload:         msg.Payload,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}
	// The client's limits, as mochi's WritePacket applies them.
	pk.Mods.AllowResponseInfo = true
	pk.Mods.DisallowProblemInfo = c.cl.Properties.Props.RequestProblemInfoFlag && c.cl.Properties.Props.RequestProblemInfo == 0 // [MQTT-3.1.2-29]
	if msg.QoS > 0 {
		pk.PacketID = m.PacketID
		pk.FixedHeader.Dup = resend // [MQTT-3.3.1-1]; QoS 0 never [MQTT-3.3.1-2]
	}
	p := &pk.Properties
	p.ContentType = msg.ContentType
	if msg.PayloadFormat != nil {
		p.PayloadFormat, p.PayloadFormatFlag = *msg.PayloadFormat, true
	}
	p.ResponseTopic = msg.ResponseTopic
	p.CorrelationData = msg.CorrelationData
	for _, u := range msg.UserProperties {
		p.User = append(p.User, packets.UserProperty{Key: u.Key, Val: u.Value})
	}
	for _, id := range msg.SubscriptionIdentifiers {
		p.SubscriptionIdentifier = append(p.SubscriptionIdentifier, int(id))
	}
	if !m.Expiry.IsZero() {
		// The interval left [MQTT-3.3.2-6], rounded up: 0 would mean none.
		left := (time.Until(m.Expiry) + time.Second - 1) / time.Second
		p.MessageExpiryInterval = uint32(max(left, 1))
	}
	alias, establish := c.alias(msg.Topic)
	if alias > 0 {
		p.TopicAlias, p.TopicAliasFlag = alias, true
		if !establish {
			pk.TopicName = "" // the client maps the alias it was sent with the topic
		}
	}
	n := buf.Len()
	if err := pk.PublishEncode(buf); err != nil {
		buf.Truncate(n)
		c.d.metrics.dropped.Add(c.ctx, 1, c.d.metrics.reasonUndecodable)
		c.d.log.Error("dropping queued message that does not encode", "client_id", c.cl.ID, "topic", msg.Topic, "err", err)
		return true
	}
	if lim := c.cl.Properties.Props.MaximumPacketSize; lim > 0 && uint32(buf.Len()-n) > lim {
		buf.Truncate(n)
		c.d.metrics.dropped.Add(c.ctx, 1, c.d.metrics.reasonTooLarge)
		c.d.log.Info("message larger than the client's maximum packet size discarded", "client_id", c.cl.ID, "topic", msg.Topic)
		return true
	}
	if establish {
		// Only a PUBLISH that goes out sets the mapping up.
		c.aliases[msg.Topic] = alias
		delete(c.sentOnce, msg.Topic)
	}
	if resend {
		c.d.metrics.resent.Add(c.ctx, 1)
	} else {
		c.d.metrics.observeLatency(how, msg.MessageID)
	}
	c.d.metrics.sent.AddAt(int(msg.QoS), 1)
	if buf.Len() >= flushAt {
		c.flush(buf)
	}
	if msg.QoS == 0 {
		return true
	}
	o := outbound{state: msg.QoS}
	if c.d.events.Receipts() {
		o.topic, o.messageID = msg.Topic, msg.MessageID
	}
	c.track(m.PacketID, o)
	return false
}

// track records a message written and awaiting its acknowledgement.
func (c *Pump) track(id uint16, o outbound) {
	if c.inflight == nil {
		c.inflight = map[uint16]outbound{}
	}
	c.inflight[id] = o
}

// maxSentOnce bounds the topics a pump remembers as sent once.
const maxSentOnce = 256

// alias returns the topic alias of topic on this connection, 0 for none;
// establish says this PUBLISH sets the mapping up (topic name and alias
// both sent) and the caller records it once the PUBLISH goes out. A topic
// gets the next free alias the second time it is sent, while there are
// free ones; mappings never change, and end with the connection
// [MQTT-3.3.2-7].
func (c *Pump) alias(topic string) (alias uint16, establish bool) {
	if c.aliasMax == 0 {
		return 0, false
	}
	if a, ok := c.aliases[topic]; ok {
		return a, false
	}
	if len(c.aliases) >= int(c.aliasMax) {
		return 0, false
	}
	if _, again := c.sentOnce[topic]; again {
		return uint16(len(c.aliases) + 1), true
	}
	if c.sentOnce == nil {
		c.aliases, c.sentOnce = map[string]uint16{}, map[string]struct{}{}
	}
	if len(c.sentOnce) >= maxSentOnce {
		clear(c.sentOnce)
	}
	c.sentOnce[topic] = struct{}{}
	return 0, false
}

// flush writes buf to the connection under the client's lock, the one
// mochi's WritePacket and the ingest acks take, so packets never interleave.
func (c *Pump) flush(buf *bytes.Buffer) {
	defer buf.Reset()
	cl := c.cl
	if buf.Len() == 0 || cl.Closed() || cl.Net.Conn == nil {
		return
	}
	cl.Lock()
	_, err := cl.Net.Conn.Write(buf.Bytes())
	cl.Unlock()
	if err != nil && !cl.Closed() {
		c.d.log.Debug("writing deliveries", "client_id", cl.ID, "err", err)
	}
}

// receipt emits the delivery receipt of a completed QoS 1 or 2 delivery.
func (c *Pump) receipt(id uint16, o outbound) {
	if !c.d.events.Receipts() {
		return
	}
	qos := min(o.state, 2)
	c.d.events.Emit(&events.Event{Kind: events.Delivered, ClientID: c.cl.ID, Topic: o.topic, MessageID: o.messageID, QoS: &qos, PacketID: id})
}
