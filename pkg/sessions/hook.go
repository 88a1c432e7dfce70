package sessions

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"

	"github.com/fleetgate/fleetgate/pkg/delivery"
	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/exactlyonce"
	"github.com/fleetgate/fleetgate/pkg/handback"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscribe"
	"github.com/fleetgate/fleetgate/pkg/wills"
)

// Options are the hook's dependencies.
type Options struct {
	// Node is this node's id, the owner written into sessions.
	Node string
	// Server is the mochi server the hook is added to.
	Server *mqtt.Server
	// Store is the session store; Redis is its client, for notices.
	Store *session.Store
	Redis redis.UniversalClient
	// Delivery opens the outbound pump of each connection.
	Delivery *delivery.Deliverer
	// Subscribe answers SUBSCRIBE and UNSUBSCRIBE.
	Subscribe *subscribe.Handler
	// ExactlyOnce answers PUBRELs of inbound QoS 2 messages received
	// before a reconnect.
	ExactlyOnce *exactlyonce.Tracker
	// StoreTimeout bounds the session store writes behind a CONNACK.
	StoreTimeout time.Duration
	// PollInterval is how often every local session's queue is checked
	// without a notice.
	PollInterval time.Duration
	// Wills publishes the wills of this node's clients, at once or after
	// their delay; nil drops them (tests).
	Wills *wills.Scheduler
	// Events receives session events and delivery receipts; nil emits
	// none.
	Events *events.Emitter
	// HandBack gives the shared subscriptions' messages an ended session
	// held undelivered back to the dispatchers, for another member; nil
	// drops them (tests).
	HandBack *handback.HandBack
	// Replicas holds the CONNACK of a CONNECT that gave its session an
	// owner (session.ConnectResult.Claimed) until the Redis replicas hold
	// the session: a replica promoted after its primary died then knows
	// whose the client id is. Nil waits for none.
	Replicas *session.Barrier
}

// Hook is the mochi hook. Create it with New, add it to the mochi server
// after the ingest hook, and Run it.
type Hook struct {
	mqtt.HookBase

	o       Options
	log     *slog.Logger
	metrics *metrics

	byConn sync.Map // *mqtt.Client → *conn

	mu   sync.Mutex
	byID map[string]*conn // the current connection of each client id; guarded by mu
	// connecting counts, per client id, the CONNECTs between their session
	// store write and their registration in byID; noticed marks the ids a
	// notice named meanwhile (a message handed to the new epoch, or
	// queued, after the store answered). Guarded by mu.
	connecting map[string]int
	noticed    map[string]bool

	closed atomic.Bool
}

// New returns the hook. It does no I/O.
func New(o Options, log *slog.Logger, mp metric.MeterProvider) (*Hook, error) {
	h := &Hook{
		o:    o,
		log:  log.With("component", "sessions"),
		byID: map[string]*conn{},

		connecting: map[string]int{},
		noticed:    map[string]bool{},
	}
	m, err := newMetrics(mp, h.connected, h.log)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	if h.o.Wills == nil {
		if h.o.Wills, err = wills.NewScheduler(o.Store, nil, "", o.Node, o.StoreTimeout, log, mp); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "fleetgate-sessions" }

// Provides implements mqtt.Hook.
func (h *Hook) Provides(b byte) bool {
	switch b { // mochi asks for every event of every connection
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnPacketEncode, mqtt.OnPacketRead, mqtt.OnWill, mqtt.OnDisconnect:
		return true
	}
	return false
}

func (h *Hook) connected() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return int64(len(h.byID))
}

// Clients returns the clients connected on this node with a registered
// session: the node's registry of connections (mochi's Server.Clients is
// empty with mqtt.serve=lean).
func (h *Hook) Clients() []*mqtt.Client {
	cs := h.conns()
	cls := make([]*mqtt.Client, len(cs))
	for i, c := range cs {
		cls[i] = c.cl
	}
	return cls
}

// conns returns the node's registered connections, a snapshot.
func (h *Hook) conns() []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := make([]*conn, 0, len(h.byID))
	for _, c := range h.byID {
		cs = append(cs, c)
	}
	return cs
}

func (h *Hook) lookup(cl *mqtt.Client) *conn {
	if v, ok := h.byConn.Load(cl); ok {
		return v.(*conn)
	}
	return nil
}

func (h *Hook) local(clientID string) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byID[clientID]
}

// notified returns the connection of clientID for a notice that names it,
// and marks a CONNECT of it still being registered as noticed.
func (h *Hook) notified(clientID string) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.connecting[clientID] > 0 {
		h.noticed[clientID] = true
	}
	return h.byID[clientID]
}

// connected1 ends one CONNECT's registration window for clientID and
// reports whether a notice named it meanwhile. h.mu is held.
func (h *Hook) connected1(clientID string) bool {
	noticed := h.noticed[clientID]
	if h.connecting[clientID]--; h.connecting[clientID] <= 0 {
		delete(h.connecting, clientID)
		delete(h.noticed, clientID)
	}
	return noticed
}

// expiryOf is the Session Expiry Interval the session of cl's connection
// uses, as the store's configuration caps it (session.Config.Expiry): MQTT 5
// sends it (0 when absent) and may change it in DISCONNECT
// [MQTT-3.14.2-2]; MQTT 3.1.1 has clean sessions (0) and persistent ones
// (session.mqtt3-expiry). The session's record, its end and its will's
// delay all use this value.
func (h *Hook) expiryOf(cl *mqtt.Client) uint32 {
	return h.o.Store.Expiry(cl.Properties.ProtocolVersion, cl.Properties.Clean, cl.Properties.Props.SessionExpiryInterval)
}

func (h *Hook) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.o.StoreTimeout)
}

// OnSessionEstablish registers the session in the store before mochi
// answers the CONNECT: the CONNACK carries the store's Session Present
// (OnPacketEncode), or Server Unavailable when the store failed.
func (h *Hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if old := h.local(cl.ID); old != nil && old.cl != cl && old.cl.Properties.ProtocolVersion < 5 {
		// An MQTT 3.1.1 connection taken over is closed at once, before
		// the store: it gets no DISCONNECT packet [MQTT-3.1.4-2].
		h.takeOver(old)
	}
	c := &conn{h: h, cl: cl}
	c.pump = h.o.Delivery.Open(cl, func() { h.closeTakenOver(c) })
	h.byConn.Store(cl, c)
	req := session.ConnectRequest{
		ClientID:      cl.ID,
		Node:          h.o.Node,
		CleanStart:    pk.Connect.Clean,
		ExpirySeconds: h.expiryOf(cl),
		Protocol:      cl.Properties.ProtocolVersion,
		Window:        c.pump.Window(),
		// The frontend's authentication leaves only an authenticated
		// identity in Username ("" for anonymous).
		Owner: string(cl.Properties.Username),
	}
	if pk.Connect.WillFlag {
		c.will = willOf(cl, pk)
		req.Will = c.will
	}
	// A clean start discards the subscriptions of the previous session
	// [MQTT-3.1.2-4], and so does any CONNECT that finds the session expired
	// (held only for its will): the dispatchers hear of it before the
	// session is reset, so none of their routing lands in the new session.
	// Never for a session of another identity: the store checks the owner
	// first.
	req.Tombstone = func(ctx context.Context, subs []session.Subscription) error {
		return h.o.Subscribe.Tombstone(ctx, cl.ID, subs)
	}
	req.HandBack = func(ctx context.Context, shared []session.SharedMessage) error {
		// Until they are in Kafka the clean start keeps them: Try.
		return h.o.HandBack.Try(ctx, cl.ID, shared)
	}
	ctx, cancel := h.storeCtx()
	defer cancel()
	var mark session.Mark
	if h.o.Replicas != nil {
		mark = h.o.Replicas.Mark()
	}
	h.mu.Lock()
	h.connecting[cl.ID]++
	h.mu.Unlock()
	res, err := h.o.Store.Connect(ctx, req)
	if err != nil {
		h.mu.Lock()
		h.connected1(cl.ID)
		h.mu.Unlock()
		h.refuse(ctx, c, err, "session store failed")
		return
	}
	var claim *session.Waiter
	if res.Claimed && h.o.Replicas != nil {
		// The round starts now and runs beside the rest of the
		// registration; the CONNACK waits for it below.
		claim = h.o.Replicas.JoinSession(mark, cl.ID)
	}
	c.epoch = res.Epoch
	// What is in flight now is resent (c.pump.Begin); what is handed over
	// from now on comes after it.
	c.lastSeq = res.Seq
	c.present = res.SessionPresent
	if w := res.TakenOverWill; w != nil && (w.DelaySeconds == 0 || req.CleanStart) {
		// The connection taken over ends without DISCONNECT: its will is
		// due unless it has a delay and this connection resumes the
		// session within it [MQTT-3.1.3-9]. The CONNACK does not wait
		// for Kafka: the will is in the producer before anything this
		// connection publishes (wills.Scheduler.PublishNoWait).
		h.o.Wills.PublishNoWait(ctx, cl.ID, cl.Properties.ProtocolVersion, w)
	}
	if w := res.EndedWill; w != nil {
		// The session expired before its will's delay ended, and this
		// CONNECT fenced the claim scheduled for it: the will is due
		// [MQTT-3.1.3-9].
		h.o.Wills.PublishNoWait(ctx, cl.ID, cl.Properties.ProtocolVersion, w)
	}
	c.inflight, c.queued = res.Inflight, res.Queued
	if res.Subscribed || res.Queued || len(res.Inflight) > 0 {
		c.mayGetWork.Store(true)
	}
	h.o.Wills.Cancel(cl.ID)
	h.mu.Lock()
	c.noticed = h.connected1(cl.ID)
	prev := h.byID[cl.ID]
	h.byID[cl.ID] = c
	h.mu.Unlock()
	if prev != nil && prev != c {
		// The previous local connection of the client id: its writes are
		// fenced from now on, and it is closed (DISCONNECT 0x8E on MQTT 5).
		// mochi's own takeover (mqtt.serve=mochi, inheritClientSession)
		// then finds it closed already.
		h.takeOver(prev)
	}
	if res.WasConnected && res.PreviousNode != "" && res.PreviousNode != h.o.Node {
		h.metrics.takeovers.Add(ctx, 1)
		if err := h.sendTakeover(ctx, res.PreviousNode, cl.ID, res.Epoch); err != nil {
			// The old node finds out at its next store write, which is
			// fenced: it then closes the connection too.
			h.log.Warn("takeover notice not sent", "client_id", cl.ID, "node", res.PreviousNode, "err", err)
		}
	}
	if h.log.Enabled(ctx, slog.LevelDebug) { // the arguments are boxed (allocated) even when not logged
		h.log.Debug("session registered", "client_id", cl.ID, "epoch", res.Epoch, "present", res.SessionPresent,
			"previous_node", res.PreviousNode, "takeover", res.WasConnected)
	}
	if err := h.metrics.claims.Wait(ctx, claim); err != nil {
		// The session may be gone with a primary that died (or the
		// primary did not answer): the device is not told it has one. Its
		// end is recorded as any connection's, fenced by the epoch.
		c.registered = true
		h.refuse(ctx, c, err, "the session's owner not confirmed by the redis replicas")
	}
}

// Refuses returns session.ErrNotOwner when cl's client id is connected on
// this node by another identity (Username, as authentication left it). The
// authentication hook asks it: once the CONNECT is authenticated, the
// session takes over a local connection of the same client id before any
// other hook can refuse. Sessions held elsewhere are checked by the store.
func (h *Hook) Refuses(cl *mqtt.Client) error {
	if old := h.local(cl.ID); old != nil && old.cl != cl && !bytes.Equal(old.cl.Properties.Username, cl.Properties.Username) {
		return session.ErrNotOwner
	}
	return nil
}

// refuse fails the CONNECT of c: its CONNACK says why (OnPacketEncode).
func (h *Hook) refuse(ctx context.Context, c *conn, err error, why string) {
	c.failed = err
	if errors.Is(err, session.ErrNotOwner) {
		h.metrics.connectFailed.Add(ctx, 1, h.metrics.reasonNotOwner)
		h.log.Info("connect refused: the session belongs to another identity", "client_id", c.cl.ID,
			"username", string(c.cl.Properties.Username), "remote", c.cl.Net.Remote)
		return
	}
	h.metrics.connectFailed.Add(ctx, 1, h.metrics.reasonStore)
	h.log.Warn("connect refused: "+why, "client_id", c.cl.ID, "err", err)
}

// willOf copies the will of a CONNECT, with its MQTT 5 properties.
func willOf(cl *mqtt.Client, pk packets.Packet) *session.Will {
	p := &pk.Connect.WillProperties
	w := &session.Will{
		// Copies: the packet's strings and bytes are over its buffer,
		// which the connection would otherwise keep whole.
		Topic:                strings.Clone(pk.Connect.WillTopic),
		Payload:              bytes.Clone(pk.Connect.WillPayload),
		QoS:                  pk.Connect.WillQos,
		Retain:               pk.Connect.WillRetain,
		DelaySeconds:         p.WillDelayInterval,
		ContentType:          strings.Clone(p.ContentType),
		ResponseTopic:        strings.Clone(p.ResponseTopic),
		CorrelationData:      bytes.Clone(p.CorrelationData),
		MessageExpirySeconds: p.MessageExpiryInterval,
		HasMessageExpiry:     p.MessageExpiryInterval > 0,
	}
	if p.PayloadFormatFlag {
		w.PayloadFormat = p.PayloadFormat
	}
	for _, u := range p.User {
		w.UserProperties = append(w.UserProperties, session.UserProperty{Key: strings.Clone(u.Key), Value: strings.Clone(u.Val)})
	}
	w.Username = string(cl.Properties.Username)
	return w
}

// OnPacketEncode sets the CONNACK's Session Present from the session store,
// or turns it into Server Unavailable when the store could not register the
// session [MQTT-3.2.2-2] [MQTT-3.2.2-3].
func (h *Hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return pk
	}
	c := h.lookup(cl)
	if c == nil {
		return pk
	}
	if c.failed != nil {
		pk.SessionPresent = false
		switch {
		case errors.Is(c.failed, session.ErrNotOwner):
			// Another identity's session: Not Authorized.
			pk.ReasonCode = packets.ErrNotAuthorized.Code
			if cl.Properties.ProtocolVersion < 5 {
				pk.ReasonCode = packets.Err3NotAuthorized.Code
			}
		default:
			pk.ReasonCode = packets.ErrServerUnavailable.Code
			pk.Properties.ReasonString = "session store unavailable"
			if cl.Properties.ProtocolVersion < 5 {
				pk.ReasonCode = packets.Err3ServerUnavailable.Code
			}
		}
		return pk
	}
	pk.SessionPresent = c.present
	if cl.Properties.ProtocolVersion >= 5 {
		// mochi resolves inbound topic aliases up to its maximum but does
		// not announce it; without it a client may use none
		// [MQTT-3.2.2-17] [MQTT-3.3.2-9].
		pk.Properties.TopicAliasMaximum = h.o.Server.Options.Capabilities.TopicAliasMaximum
		// A Session Expiry Interval above session.max-expiry (never
		// included) is capped: the CONNACK says which one the server
		// uses (MQTT 5 section 3.2.2.3.2).
		if asked, used := cl.Properties.Props.SessionExpiryInterval, h.expiryOf(cl); used != asked {
			pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = used, true
			h.metrics.expiryCapped.Add(context.Background(), 1)
		}
	}
	return pk
}

// OnSessionEstablished starts delivering: inflight messages first, with
// DUP, then the queue. A connection the store refused is closed here, after
// its CONNACK, without its will.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	c := h.lookup(cl)
	if c == nil {
		return
	}
	if c.failed != nil {
		atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
		if errors.Is(c.failed, session.ErrNotOwner) {
			cl.Stop(packets.ErrNotAuthorized)
			return
		}
		cl.Stop(packets.ErrServerUnavailable)
		return
	}
	if c.noticed {
		// A notice named the client while its session was being
		// registered: what the store said then may be stale already.
		c.pump.Begin(c.epoch, c.lastSeq)
	} else {
		c.pump.BeginFrom(c.epoch, c.lastSeq, c.inflight, c.queued)
	}
	c.inflight = nil
	if h.o.Events != nil {
		clean, expiry, present := pk.Connect.Clean, h.expiryOf(cl), c.present
		h.o.Events.Emit(&events.Event{
			Kind: events.Connect, ClientID: cl.ID, Protocol: cl.Properties.ProtocolVersion,
			Username: string(cl.Properties.Username), Remote: cl.Net.Remote,
			CleanStart: &clean, SessionExpiry: &expiry, SessionPresent: &present,
		})
	}
}

// OnWill notes that the client's will is due: the connection ended without
// a normal DISCONNECT [MQTT-3.1.2-8]. The will is published from the
// session store in OnDisconnect, after its delay; mochi gets it back without
// the retain flag, so that it keeps no local copy.
func (h *Hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if c := h.lookup(cl); c != nil && c.failed == nil {
		c.willDue.Store(true)
	}
	will.Retain = false
	return will, nil
}

// OnDisconnect ends the connection's part of the session: the session is
// marked disconnected with its expiry (or deleted), the will is published,
// scheduled or discarded, and mochi forgets the client (the store holds the
// session).
func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	c := h.lookup(cl)
	if c == nil {
		return
	}
	h.byConn.Delete(cl)
	c.pump.Stop()
	h.mu.Lock()
	if h.byID[cl.ID] == c {
		delete(h.byID, cl.ID)
	}
	h.mu.Unlock()
	if cur, ok := h.o.Server.Clients.Get(cl.ID); ok && cur == cl {
		h.o.Server.Clients.Delete(cl.ID)
	}
	if c.failed != nil {
		if c.registered {
			h.endSession(c, h.expiryOf(cl))
		}
		return
	}
	h.emitDisconnect(c, err)
	// Acknowledgements read before the close complete their messages even
	// if a new connection has taken the session over meanwhile.
	c.pump.Close(h.storeCtx)
	if c.takenOver.Load() {
		return
	}
	h.endSession(c, h.expiryOf(cl))
}

// emitDisconnect emits the disconnect event of c, which ended with err
// (nil after the client's DISCONNECT).
func (h *Hook) emitDisconnect(c *conn, err error) {
	if h.o.Events == nil {
		return
	}
	ev := &events.Event{Kind: events.Disconnect, ClientID: c.cl.ID}
	var code packets.Code
	switch {
	case c.takenOver.Load():
		ev.Reason = events.ReasonTakenOver
		b := packets.ErrSessionTakenOver.Code
		ev.ReasonCode = &b
	case err == nil:
		ev.Reason = events.ReasonClient
		b := byte(c.disconnectCode.Load())
		ev.ReasonCode = &b
	case errors.Is(err, packets.ErrServerShuttingDown):
		ev.Reason = events.ReasonServerShutdown
		b := packets.ErrServerShuttingDown.Code
		ev.ReasonCode = &b
	case errors.Is(err, packets.CodeDisconnectWillMessage):
		ev.Reason = events.ReasonClient // DISCONNECT 0x04: the client asks for its will
		b := packets.CodeDisconnectWillMessage.Code
		ev.ReasonCode = &b
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		ev.Reason = events.ReasonConnectionLost
	case errors.As(err, &code):
		ev.Reason = events.ReasonError
		b := code.Code
		ev.ReasonCode = &b
		ev.Error = code.Error()
	default:
		ev.Reason = events.ReasonError
		ev.Error = err.Error()
	}
	h.o.Events.Emit(ev)
}

func (h *Hook) endSession(c *conn, expiry uint32) {
	ctx, cancel := h.storeCtx()
	defer cancel()
	id := c.cl.ID
	if c.will != nil {
		switch {
		case !c.willDue.Load():
			// Normal disconnect: the will is discarded [MQTT-3.1.2-10].
			if _, err := h.o.Store.ClaimWill(ctx, id, c.epoch); err != nil && !session.Gone(err) {
				h.log.Warn("discarding will", "client_id", id, "err", err)
			}
		case c.will.DelaySeconds == 0 || expiry == 0:
			// Due now: no delay, or the session ends now, which ends the
			// delay [MQTT-3.1.3-9].
			h.o.Wills.ClaimAndPublish(ctx, id, c.epoch, c.cl.Properties.ProtocolVersion)
		}
	}
	// A will is due at the smaller of its delay and the session's expiry
	// [MQTT-3.1.3-9]. When the expiry is the smaller, the session's keys
	// are held past it for the will, and the will's claim at the expiry
	// ends the session. When the delay is, the keys are kept long enough
	// past it for the wills sweeper to publish the will should this node
	// die first.
	pending := c.will != nil && c.willDue.Load() && c.will.DelaySeconds > 0 && expiry != 0 && expiry != math.MaxUint32
	endsFirst := pending && expiry <= c.will.DelaySeconds
	end := h.o.Store.End
	switch {
	case c.will == nil:
		// No will: the session leaves this node's index in the script's
		// round trip.
		end = func(ctx context.Context, id string, epoch uint64, expiry uint32) (session.Ended, error) {
			return h.o.Store.EndWithoutWill(ctx, h.o.Node, id, epoch, expiry)
		}
	case endsFirst:
		end = h.o.Store.EndHoldingWill
	case pending:
		delay := c.will.DelaySeconds
		end = func(ctx context.Context, id string, epoch uint64, expiry uint32) (session.Ended, error) {
			return h.o.Store.EndKeepingWill(ctx, id, epoch, expiry, delay)
		}
	}
	// A session that ends now comes back with its subscriptions, for
	// their tombstones, and its shared subscriptions' undelivered
	// messages, for another member: the store keeps those until they are
	// handed back (Settle), or else the dispatchers' expiry sweep hands
	// them back.
	ended, err := end(ctx, id, c.epoch, expiry)
	if err == nil {
		// Before the tombstones, so that the messages go to another
		// member as soon as they can: with Kafka away the tombstones'
		// write waits its own delivery.store-timeout first.
		h.o.HandBack.Settle(ctx, id, ended, h.discard(id))
	}
	if err != nil {
		if session.Gone(err) {
			return // the session moved on: another connection owns it
		}
		h.log.Warn("recording disconnect", "client_id", id, "err", err)
	}
	if len(ended.Subscriptions) > 0 {
		if err := h.o.Subscribe.Tombstone(ctx, id, ended.Subscriptions); err != nil {
			h.log.Warn("subscriptions of an ended session stay in the change log", "client_id", id, "err", err)
		}
	}
	switch {
	case endsFirst:
		h.o.Wills.Schedule(id, c.epoch, c.cl.Properties.ProtocolVersion, time.Duration(expiry)*time.Second,
			func(ctx context.Context, e session.Ended) {
				if len(e.Subscriptions) > 0 {
					if err := h.o.Subscribe.Tombstone(ctx, id, e.Subscriptions); err != nil {
						h.log.Warn("subscriptions of an expired session stay in the change log until the dispatchers' expiry sweep",
							"client_id", id, "err", err)
					}
				}
				h.o.HandBack.Settle(ctx, id, e, h.discard(id))
			})
	case c.will != nil && c.willDue.Load() && c.will.DelaySeconds > 0 && expiry != 0:
		h.o.Wills.Schedule(id, c.epoch, c.cl.Properties.ProtocolVersion, time.Duration(c.will.DelaySeconds)*time.Second, nil)
	}
}

// discard deletes what the ended session of id kept once its shared
// messages are handed back (handback.HandBack.Settle).
func (h *Hook) discard(id string) func(context.Context) error {
	return func(ctx context.Context) error { return h.o.Store.DiscardExpired(ctx, id) }
}

// Close stops scheduling wills; those pending stay in the session store for
// the wills sweeper, which publishes them once this node's liveness lapses.
func (h *Hook) Close() { h.o.Wills.Close() }

// OnPacketRead takes the packets of the session layer away from mochi:
// acknowledgements of outbound messages, PUBREL of inbound QoS 2 messages
// received on another node, SUBSCRIBE and UNSUBSCRIBE.
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		if pk.PacketID == 0 {
			return pk, nil // our own no-op, or invalid: mochi ignores it
		}
		if c := h.lookup(cl); c != nil {
			c.pump.PushAck(pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
		}
		return ignored(pk.ProtocolVersion), nil
	case packets.Pubrel:
		if h.o.ExactlyOnce.Release(cl, pk) {
			return ignored(pk.ProtocolVersion), nil
		}
		return pk, nil
	case packets.Disconnect:
		// Record the acknowledgements read before the DISCONNECT while the
		// session is still this connection's: once mochi closes the socket
		// the client may connect again, and the new connection would send
		// the acknowledged messages again [MQTT-4.4.0-1].
		if c := h.lookup(cl); c != nil && c.failed == nil {
			c.disconnectCode.Store(uint32(pk.ReasonCode))
			c.pump.Finish(h.storeCtx)
		}
	case packets.Subscribe:
		if pk.SubscribeValidate() != packets.CodeSuccess {
			return pk, nil // mochi refuses it
		}
		if c := h.lookup(cl); c != nil {
			// Before the subscriptions reach the store, so that the
			// poll looks at the session from the first message a
			// dispatcher can queue for it.
			c.mayGetWork.Store(true)
			h.o.Subscribe.Subscribe(c, pk)
			return ignored(pk.ProtocolVersion), nil
		}
	case packets.Unsubscribe:
		if pk.UnsubscribeValidate() != packets.CodeSuccess {
			return pk, nil
		}
		if c := h.lookup(cl); c != nil {
			h.o.Subscribe.Unsubscribe(c, pk)
			return ignored(pk.ProtocolVersion), nil
		}
	}
	return pk, nil
}

// ignored is a packet mochi processes as a no-op (a PUBACK for packet id 0,
// which matches no inflight message): OnPacketRead returns it for a packet
// the hook answered itself. pkg/ingest has its own; neither imports the
// other.
func ignored(version byte) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: version}
}

// Epoch is the session epoch of cl's connection, which fences its store
// writes; false when cl has no session here (exactlyonce.Epochs).
func (h *Hook) Epoch(cl *mqtt.Client) (uint64, bool) {
	c := h.lookup(cl)
	if c == nil {
		return 0, false
	}
	return c.epoch, true
}
