package ingest

import (
	"context"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/time/rate"
)

// clientQuota is one client's publish quota: token buckets of messages and
// of bytes per second (Config.ClientRate, ClientByteRate).
type clientQuota struct {
	msgs  *rate.Limiter // nil: no bound
	bytes *rate.Limiter // nil: no bound
}

func (h *Hook) quotaFor(cl *mqtt.Client) *clientQuota {
	if v, ok := h.quotas.Load(cl); ok {
		return v.(*clientQuota)
	}
	q := &clientQuota{}
	if h.cfg.ClientRate > 0 {
		q.msgs = rate.NewLimiter(rate.Limit(h.cfg.ClientRate), max(h.cfg.ClientBurst, 1))
	}
	if h.cfg.ClientByteRate > 0 {
		// A second's worth of burst, and at least one packet of any size.
		q.bytes = rate.NewLimiter(rate.Limit(h.cfg.ClientByteRate), int(h.cfg.ClientByteRate))
	}
	v, _ := h.quotas.LoadOrStore(cl, q)
	return v.(*clientQuota)
}

// throttle holds the client's read goroutine until its quota has room for
// one more publish of size bytes: over its quota the node stops reading
// the client's socket, so TCP slows the client down and nothing is lost.
// A publish larger than the byte burst waits for a full burst.
func (h *Hook) throttle(cl *mqtt.Client, size int) {
	if h.cfg.ClientRate <= 0 && h.cfg.ClientByteRate <= 0 {
		return
	}
	q := h.quotaFor(cl)
	now := time.Now()
	var wait time.Duration
	if q.msgs != nil {
		wait = q.msgs.ReserveN(now, 1).DelayFrom(now)
	}
	if q.bytes != nil {
		wait = max(wait, q.bytes.ReserveN(now, min(size, q.bytes.Burst())).DelayFrom(now))
	}
	if wait <= 0 {
		return
	}
	h.metrics.throttled.Add(context.Background(), 1)
	h.metrics.throttledFor.Add(context.Background(), wait.Seconds())
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-h.draining:
	}
}
