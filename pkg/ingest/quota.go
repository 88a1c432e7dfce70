package ingest

import (
	"context"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/time/rate"
)

// Quotas gives the publish quota of a client that is not the node's (the
// rules file's quotas section, by identity or group). It is asked at each
// PUBLISH, so it must be cheap; gen changes when the client's quota may
// have (a reload), and the client's buckets are made again then.
type Quotas interface {
	QuotaOf(cl *mqtt.Client) (q QuotaOverride, gen uint64, ok bool)
}

// QuotaOverride sets some of a client's quota; a nil field keeps the node's
// (Config.ClientRate, ClientBurst, ClientByteRate). 0 in Rate or ByteRate
// is no bound.
type QuotaOverride struct {
	Rate     *float64
	Burst    *int
	ByteRate *int64
}

// clientQuota is one client's publish quota: token buckets of messages and
// of bytes per second (Config.ClientRate, ClientByteRate, or its
// QuotaOverride).
type clientQuota struct {
	msgs  *rate.Limiter // nil: no bound
	bytes *rate.Limiter // nil: no bound
	gen   uint64        // of the override it was made from
}

func (h *Hook) quotaFor(cl *mqtt.Client) *clientQuota {
	var (
		o     QuotaOverride
		gen   uint64
		fresh bool
	)
	if h.quotaOf != nil {
		o, gen, _ = h.quotaOf.QuotaOf(cl)
	}
	if v, ok := h.quotas.Load(cl); ok {
		q := v.(*clientQuota)
		if q.gen == gen {
			return q
		}
		fresh = true // the rules changed: the buckets start full again
	}
	msgRate, burst, byteRate := h.cfg.ClientRate, h.cfg.ClientBurst, int64(h.cfg.ClientByteRate)
	if o.Rate != nil {
		msgRate = *o.Rate
	}
	if o.Burst != nil {
		burst = *o.Burst
	}
	if o.ByteRate != nil {
		byteRate = *o.ByteRate
	}
	q := &clientQuota{gen: gen}
	if msgRate > 0 {
		q.msgs = rate.NewLimiter(rate.Limit(msgRate), max(burst, 1))
	}
	if byteRate > 0 {
		// A second's worth of burst, and at least one packet of any size.
		q.bytes = rate.NewLimiter(rate.Limit(byteRate), int(byteRate))
	}
	if fresh {
		h.quotas.Store(cl, q)
		return q
	}
	v, _ := h.quotas.LoadOrStore(cl, q)
	return v.(*clientQuota)
}

// throttle holds the client's read goroutine until its quota has room for
// one more publish of size bytes: over its quota the node stops reading
// the client's socket, so TCP slows the client down and nothing is lost.
// A publish larger than the byte burst waits for a full burst.
func (h *Hook) throttle(cl *mqtt.Client, size int) {
	if h.quotaOf == nil && h.cfg.ClientRate <= 0 && h.cfg.ClientByteRate <= 0 {
		return
	}
	q := h.quotaFor(cl)
	if q.msgs == nil && q.bytes == nil {
		return
	}
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
