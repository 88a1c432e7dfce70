package subscribe

import (
	"context"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/topic"
	"github.com/fleetgate/fleetgate/pkg/workers"
)

// Subscribe answers a SUBSCRIBE: the subscriptions are durable in the
// session store and in the change log before the SUBACK goes out, then the
// retained messages of the new subscriptions are queued [MQTT-3.3.1-9].
//
// It runs on the client's read goroutine, so the client's next packets wait
// for it: a PUBLISH sent after a SUBSCRIBE is matched against it.
func (h *Handler) Subscribe(c Conn, pk packets.Packet) {
	cl := c.Client()
	v5 := cl.Properties.ProtocolVersion >= 5
	codes := make([]byte, len(pk.Filters))
	var subs []topic.Subscription
	var at []int // index in pk.Filters of each of subs
	for i, f := range pk.Filters {
		group, filter, shared, err := topic.ParseShared(f.Filter)
		if err != nil {
			codes[i] = refusal(v5, packets.ErrTopicFilterInvalid)
			h.metrics.subscribeFailed.Add(context.Background(), 1, h.metrics.reasonInvalidFilter)
			h.log.Info("subscription refused: invalid topic filter", "client_id", cl.ID, "filter", f.Filter, "err", err)
			continue
		}
		if err := h.o.TopicLimits.Check(filter); err != nil {
			// Valid MQTT, beyond what this server takes: answered as an
			// invalid filter, 0x8F (v5) / 0x80 (v3), for this filter only.
			codes[i] = refusal(v5, packets.ErrTopicFilterInvalid)
			h.metrics.subscribeFailed.Add(context.Background(), 1, h.metrics.reasonTopicLimit)
			h.log.Info("subscription refused: topic filter over the limit", "client_id", cl.ID, "err", err)
			continue
		}
		if shared && f.NoLocal && v5 {
			// [MQTT-3.8.3-4]: No Local on a shared subscription is a
			// protocol error.
			h.metrics.subscribeFailed.Add(context.Background(), 1, h.metrics.reasonProtocol)
			_ = h.o.Server.DisconnectClient(cl, packets.ErrProtocolViolation)
			return
		}
		if h.o.Authorizer != nil && !h.o.Authorizer.AllowSubscribe(cl, filter) {
			// A shared subscription is judged on its filter. Retained
			// messages reach a client only through a granted filter.
			codes[i] = refusal(v5, packets.ErrNotAuthorized)
			h.metrics.subscribeFailed.Add(context.Background(), 1, h.metrics.reasonNotAuthorized)
			h.log.Info("subscription refused: not authorized", "client_id", cl.ID, "username", string(cl.Properties.Username), "filter", f.Filter)
			continue
		}
		s := topic.Subscription{
			ClientID: cl.ID, Filter: filter, Group: group,
			QoS:               min(f.Qos, 2),
			NoLocal:           f.NoLocal,
			RetainAsPublished: f.RetainAsPublished,
			RetainHandling:    f.RetainHandling,
			Identifier:        uint32(f.Identifier),
		}
		if !shared {
			s.Group = ""
		}
		subs = append(subs, s)
		at = append(at, i)
	}

	ctx, cancel := context.WithTimeout(context.Background(), h.o.Timeout)
	defer cancel()
	var outcomes []session.SubscribeOutcome
	var stored []topic.Subscription // in the session: to the change log, retained messages
	var existed []bool              // of each of stored
	var err error
	if len(subs) > 0 {
		ss := make([]session.Subscription, len(subs))
		for i, s := range subs {
			ss[i] = session.Subscription{
				FilterKey: session.FilterKey{Group: s.Group, Filter: s.Filter},
				QoS:       s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished,
				RetainHandling: s.RetainHandling, Identifier: s.Identifier,
			}
		}
		// The store holds the bound on the session's subscriptions, in
		// one script on any node.
		mark := h.mark()
		outcomes, err = h.o.Store.Subscribe(ctx, cl.ID, c.Epoch(), ss)
		// The replicas are asked beside the change log's Kafka write.
		replicated := h.join(err, mark, cl.ID)
		if err == nil {
			for j, o := range outcomes {
				if o.Stored() {
					stored = append(stored, subs[j])
					existed = append(existed, o == session.SubscriptionReplaced)
				}
			}
			if len(stored) > 0 {
				err = h.o.ChangeLog.Subscribe(ctx, cl.ID, stored)
				if err == nil && h.o.Settle > 0 {
					// A dispatcher may route with an index it confirmed
					// current up to Settle ago: a message published after
					// this SUBACK must reach Kafka after such a
					// confirmation of the change (subscriptions.ReuseWithin).
					time.Sleep(h.o.Settle)
				}
			}
		}
		err = h.replicated(ctx, replicated, err)
	}
	refused := 0
	for j, i := range at {
		switch {
		case err != nil:
			codes[i] = packets.ErrUnspecifiedError.Code
		case j < len(outcomes) && !outcomes[j].Stored():
			// Over session.max-subscriptions: 0x97 Quota exceeded (v5)
			// / 0x80 Failure (v3) for this filter only; the session's
			// other subscriptions are as they were.
			codes[i] = refusal(v5, packets.ErrQuotaExceeded)
			refused++
		default:
			codes[i] = subs[j].QoS // granted QoS [MQTT-3.9.3-1]
		}
	}
	if err != nil {
		h.metrics.subscribeFailed.Add(ctx, int64(len(subs)), h.metrics.reasonStore)
		h.log.Warn("subscriptions refused: not stored", "client_id", cl.ID, "count", len(subs), "err", err)
		if session.Gone(err) {
			c.Gone()
			return
		}
	} else {
		h.metrics.subscribed.Add(ctx, int64(len(stored)))
	}
	if refused > 0 {
		h.metrics.subscribeFailed.Add(ctx, int64(refused), h.metrics.reasonQuota)
		h.log.Info("subscriptions refused: the session is at its bound on subscriptions", "client_id", cl.ID, "count", refused)
	}
	_ = cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Suback},
		PacketID:    pk.PacketID, // [MQTT-3.8.4-2]
		ReasonCodes: codes,       // one per filter, in order [MQTT-3.8.4-6]
	})
	h.emitSubscriptions(cl, events.Subscribe, pk, codes)
	if err != nil || h.o.Retained == nil || len(stored) == 0 {
		return
	}
	h.streamRetained(c, stored, existed)
}

// streamRetained runs queueRetained beside the connection's reader, so
// that the subscriber's acknowledgements are read, and the delivery of
// what is queued goes on, while a wildcard's matches are still streamed
// into its queue. One stream per connection at a time: a SUBSCRIBE that
// comes while one runs waits for it, which holds its reader as before
// and bounds what a client can start.
func (h *Handler) streamRetained(c Conn, subs []topic.Subscription, existed []bool) {
	cl := c.Client()
	v, _ := h.feeds.LoadOrStore(cl, make(chan struct{}, 1))
	slot := v.(chan struct{})
	slot <- struct{}{}
	workers.Go(func() {
		defer func() {
			<-slot
			h.feeds.CompareAndDelete(cl, slot)
		}()
		h.queueRetained(c, subs, existed)
	})
}

// refusal is the SUBACK code of a refused filter: code in MQTT 5, 0x80
// (Failure) in MQTT 3.1.1, which has no other.
func refusal(v5 bool, code packets.Code) byte {
	if !v5 {
		return packets.ErrUnspecifiedError.Code
	}
	return code.Code
}

// queueRetained puts the retained messages matching new subscriptions into
// the session's queue, after the SUBACK: per Retain Handling 0 always, 1
// only for a subscription that did not exist, 2 never [MQTT-3.3.1-9..11];
// never for shared subscriptions (MQTT 5 4.8.2). They carry RETAIN=1
// [MQTT-3.3.1-8] and at most the granted QoS.
//
// The matches stream a page at a time (retained.Store.Each): each page is
// queued and the pump started before the next is read, so a wildcard over
// 100,000 retained topics holds one page in memory, and a subscriber that
// reads fast drains the queue meanwhile. The queue's bound still holds:
// once a page overflows it (messages dropped per
// session.queue-full-policy), the rest of that subscription's matches are
// not sent, and that is logged and counted.
func (h *Handler) queueRetained(c Conn, subs []topic.Subscription, existed []bool) {
	cl := c.Client()
	// A stream may take many pages: each store call has the usual bound.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	for i, s := range subs {
		if s.Group != "" || s.RetainHandling == 2 || (s.RetainHandling == 1 && i < len(existed) && existed[i]) {
			continue
		}
		var ids []uint32
		if s.Identifier != 0 {
			ids = []uint32{s.Identifier}
		}
		var ds []session.Delivery
		full := false
		err := h.o.Retained.Each(ctx, s.Filter, func(page []retained.Message) bool {
			ds = ds[:0]
			for _, r := range page {
				m, err := handoff.DecodeMessage(r.Message)
				if err != nil {
					h.log.Error("skipping undecodable retained message", "topic", r.Topic, "err", err)
					continue
				}
				shaped := m.ForSubscriber(s.QoS, true, ids)
				ds = append(ds, session.Delivery{ClientID: cl.ID, Message: handoff.EncodeMessage(&shaped), Expiry: r.Expiry})
			}
			if len(ds) == 0 {
				return true
			}
			ectx, ecancel := context.WithTimeout(ctx, h.o.Timeout)
			res, err := h.o.Store.Enqueue(ectx, ds)
			ecancel()
			if err != nil {
				h.log.Warn("retained messages not queued", "client_id", cl.ID, "filter", s.Filter, "err", err)
				return false
			}
			for _, r := range res {
				switch r.Outcome {
				case session.OutcomeQueued:
					n++
				case session.OutcomeDroppedOldest:
					n++
					full = true
				case session.OutcomeDroppedNewest:
					full = true
				}
			}
			c.Queued()
			return !full
		})
		if err != nil {
			h.log.Warn("retained messages not sent: lookup failed", "client_id", cl.ID, "filter", s.Filter, "err", err)
		}
		if full {
			h.metrics.retainedStopped.Add(ctx, 1)
			h.log.Info("retained messages stopped at the session's queue bound", "client_id", cl.ID, "filter", s.Filter)
		}
	}
	h.metrics.retainedSent.Add(ctx, int64(n))
}

// Unsubscribe answers an UNSUBSCRIBE once the subscriptions are gone from
// the session store and the change log [MQTT-3.10.4-1]. MQTT 5 gets a
// reason code per filter: 0x00, or 0x11 when there was no such
// subscription [MQTT-3.11.3-1].
func (h *Handler) Unsubscribe(c Conn, pk packets.Packet) {
	cl := c.Client()
	codes := make([]byte, len(pk.Filters))
	var keys []session.FilterKey
	var at []int
	for i, f := range pk.Filters {
		group, filter, _, err := topic.ParseShared(f.Filter)
		if err != nil {
			codes[i] = packets.ErrTopicFilterInvalid.Code
			h.metrics.unsubscribeFailed.Add(context.Background(), 1, h.metrics.reasonInvalidFilter)
			continue
		}
		if err := h.o.TopicLimits.Check(filter); err != nil {
			// No subscription can have it: 0x8F (v5); an MQTT 3.1.1
			// UNSUBACK has no codes.
			codes[i] = packets.ErrTopicFilterInvalid.Code
			h.metrics.unsubscribeFailed.Add(context.Background(), 1, h.metrics.reasonTopicLimit)
			h.log.Info("unsubscribe refused: topic filter over the limit", "client_id", cl.ID, "err", err)
			continue
		}
		keys = append(keys, session.FilterKey{Group: group, Filter: filter})
		at = append(at, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.o.Timeout)
	defer cancel()
	var existed []bool
	var err error
	if len(keys) > 0 {
		mark := h.mark()
		existed, err = h.o.Store.Unsubscribe(ctx, cl.ID, c.Epoch(), keys)
		replicated := h.join(err, mark, cl.ID)
		if err == nil {
			ck := make([]subscriptions.Key, len(keys))
			for i, k := range keys {
				ck[i] = subscriptions.Key{Group: k.Group, Filter: k.Filter}
			}
			err = h.o.ChangeLog.Unsubscribe(ctx, cl.ID, ck)
		}
		err = h.replicated(ctx, replicated, err)
	}
	for j, i := range at {
		switch {
		case err != nil:
			codes[i] = packets.ErrUnspecifiedError.Code
		case j < len(existed) && !existed[j]:
			codes[i] = packets.CodeNoSubscriptionExisted.Code
		}
	}
	if err != nil {
		h.log.Warn("unsubscribe failed", "client_id", cl.ID, "err", err)
		if session.Gone(err) {
			c.Gone()
			return
		}
	} else {
		h.metrics.unsubscribed.Add(ctx, int64(len(keys)))
	}
	out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, PacketID: pk.PacketID}
	if cl.Properties.ProtocolVersion >= 5 {
		out.ReasonCodes = codes
	}
	_ = cl.WritePacket(out)
	h.emitSubscriptions(cl, events.Unsubscribe, pk, codes)
}

// emitSubscriptions emits the event of an answered SUBSCRIBE or
// UNSUBSCRIBE: each filter with the code it was answered with (for an
// MQTT 3.1.1 UNSUBACK, which has none, the code fleetgate decided).
func (h *Handler) emitSubscriptions(cl *mqtt.Client, kind events.Kind, pk packets.Packet, codes []byte) {
	if h.o.Events == nil {
		return
	}
	subs := make([]events.Subscription, len(pk.Filters))
	for i, f := range pk.Filters {
		s := events.Subscription{Filter: f.Filter, ReasonCode: codes[i]}
		if group, filter, shared, err := topic.ParseShared(f.Filter); err == nil && shared {
			s.Group, s.Filter = group, filter
		}
		if kind == events.Subscribe {
			s.QoS, s.NoLocal, s.RetainAsPublished = f.Qos, f.NoLocal, f.RetainAsPublished
			s.RetainHandling, s.Identifier = f.RetainHandling, uint32(f.Identifier)
			if codes[i] < 0x80 {
				s.QoS = codes[i] // granted
			}
		}
		subs[i] = s
	}
	h.o.Events.Emit(&events.Event{Kind: kind, ClientID: cl.ID, Subscriptions: subs})
}

// mark notes the Redis primaries before a subscription write
// (session.Barrier.Mark).
func (h *Handler) mark() session.Mark {
	if h.o.Replicas == nil {
		return session.Mark{}
	}
	return h.o.Replicas.Mark()
}

// join asks the Redis replicas for the write just made, unless it failed;
// nil when there is nothing to wait for.
func (h *Handler) join(err error, m session.Mark, clientID string) *session.Waiter {
	if err != nil || h.o.Replicas == nil {
		return nil
	}
	return h.o.Replicas.JoinSession(m, clientID)
}

// replicated waits for w and returns err, or why the write cannot be
// taken as kept when err is nil: a primary that did not answer, or a
// failover since the write. A short wait (a replica away or slow) answers
// anyway, counted and logged.
func (h *Handler) replicated(ctx context.Context, w *session.Waiter, err error) error {
	if werr := h.metrics.replicas.Wait(ctx, w); err == nil {
		err = werr
	}
	return err
}
