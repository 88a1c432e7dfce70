package sessions

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/session"
)

// sendTakeover tells node that clientID's session was taken over with
// epoch: it closes its connection of that client.
func (h *Hook) sendTakeover(ctx context.Context, node, clientID string, epoch uint64) error {
	payload := "takeover\x00" + clientID + "\x00" + strconv.FormatUint(epoch, 10)
	return handoff.Publish(ctx, h.o.Redis, handoff.ControlChannel(node), payload)
}

// Run listens for the dispatchers' notices (on this node's channel) and other nodes' takeover
// notices, and checks every local session's queue each poll interval (the
// safety net for lost notices), until ctx is cancelled.
func (h *Hook) Run(ctx context.Context) error {
	channel := handoff.NotifyChannel(h.o.Node)
	subs := handoff.Subscribe(ctx, h.o.Redis, channel, handoff.ControlChannel(h.o.Node))
	defer func() {
		for _, ps := range subs {
			_ = ps.Close()
		}
	}()
	// One subscription for both channels on a single Redis, one each on
	// Redis Cluster (sharded pub/sub): ctl is nil in the first case.
	msgs := subs[0].ChannelWithSubscriptions(redis.WithChannelSize(1024))
	var ctl <-chan any
	if len(subs) > 1 {
		ctl = subs[1].ChannelWithSubscriptions(redis.WithChannelSize(64))
	}
	poll := time.NewTicker(h.o.PollInterval)
	defer poll.Stop()
	for {
		var m any
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
			h.poll(ctx)
			continue
		case m, ok = <-msgs:
		case m, ok = <-ctl:
		}
		if !ok {
			return fmt.Errorf("redis subscription of %s closed", channel)
		}
		h.received(ctx, channel, m)
	}
}

// received handles what a subscription of Run delivered: a (re)subscription,
// a dispatcher's notice on channel, or another node's control message.
func (h *Hook) received(ctx context.Context, channel string, m any) {
	switch m := m.(type) {
	case *redis.Subscription:
		// (Re)subscribed: notices sent while the subscription was down
		// are lost, so look at every queue once.
		if handoff.Subscribed(m) {
			h.kickAll()
		}
	case *redis.Message:
		if m.Channel != channel {
			h.control(m.Payload)
			return
		}
		h.metrics.notices.Add(ctx, 1)
		n, err := handoff.ParseNotice(m.Payload)
		if err != nil {
			// What it named is found by the next poll.
			h.log.Warn("ignoring malformed notice", "payload_bytes", len(m.Payload), "err", err)
		}
		// The direct messages first: in a batch they come before the
		// session's queued ones (a message queues only behind a full
		// window or a queue), so the pump writes them before it takes.
		for _, d := range n.Direct {
			// Only the connection the message was handed to writes it. An
			// older one must not: the session may have started clean
			// since. A newer one finds it in the inflight hash when it
			// resends what is in flight, which it does after its
			// registration here, so after this notice was sent.
			if c := h.notified(d.ClientID); c != nil && c.epoch == d.Epoch {
				c.pump.PushDirect(session.QueuedMessage{PacketID: d.PacketID, Seq: d.Seq, Message: d.Message, Expiry: d.Expiry})
			}
		}
		for _, id := range n.ClientIDs {
			if c := h.notified(id); c != nil {
				c.pump.KickQueued()
			}
		}
	}
}

// control applies a notice of another node.
func (h *Hook) control(payload string) {
	parts := strings.Split(payload, "\x00")
	if len(parts) != 3 || parts[0] != "takeover" {
		h.log.Warn("ignoring unknown control notice", "payload_bytes", len(payload))
		return
	}
	epoch, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return
	}
	if c := h.local(parts[1]); c != nil && c.epoch < epoch {
		h.closeTakenOver(c)
	}
}

func (h *Hook) kickAll() {
	for _, c := range h.conns() {
		c.pump.KickQueued()
	}
}

// pollBatch is how many sessions one poll pipeline looks at.
const pollBatch = 512

// poll is the safety net for lost notices: it reads whether each local
// session that can get messages (conn.mayGetWork: it has or had
// subscriptions, or work when it was resumed) has queued messages or
// messages handed to it that its pump did not write (session.Store.PendingOf, two reads per session in shared
// pipelines, no script) and kicks only those pumps. An idle connection then
// costs no delivery round per poll interval. Sessions whose state cannot be
// read are kicked.
func (h *Hook) poll(ctx context.Context) {
	h.mu.Lock()
	cs := make([]*conn, 0, len(h.byID))
	for _, c := range h.byID {
		if c.mayGetWork.Load() {
			cs = append(cs, c)
		}
	}
	h.mu.Unlock()
	ids := make([]string, 0, min(len(cs), pollBatch))
	for start := 0; start < len(cs); start += pollBatch {
		batch := cs[start:min(start+pollBatch, len(cs))]
		ids = ids[:0]
		for _, c := range batch {
			ids = append(ids, c.cl.ID)
		}
		pctx, cancel := context.WithTimeout(ctx, h.o.StoreTimeout)
		states, err := h.o.Store.PendingOf(pctx, ids)
		cancel()
		if err != nil {
			h.log.Warn("poll: reading sessions' pending work; looking at each", "sessions", len(ids), "err", err)
		}
		kicked := 0
		for i, c := range batch {
			if err != nil || states[i].Queued || c.pump.Behind(states[i].Seq) {
				c.pump.KickQueued()
				kicked++
			}
		}
		h.metrics.polled.Add(ctx, int64(len(batch)))
		h.metrics.pollKicked.Add(ctx, int64(kicked))
	}
}
