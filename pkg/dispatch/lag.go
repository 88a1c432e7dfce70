package dispatch

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// progressInterval is how often a dispatcher that is catching up logs its
// progress.
const progressInterval = 10 * time.Second

// lagTracker knows how far behind the end of each partition this member's
// routing is, from what it already has: the high watermark each fetch
// carries and the offset after the last record routed (before any, the
// first record fetched). It asks Kafka nothing, so it costs no request
// however often batches are routed. A partition shows up once a fetch
// returned records of it, and is forgotten when it is revoked or lost.
type lagTracker struct {
	// topic is the topic followed (the inbound topic; the dispatcher also
	// consumes the topic of handed-back shared messages); "" follows every
	// record as of one topic.
	topic string
	mu    sync.Mutex
	hwm   map[int32]int64 // highest high watermark seen in fetches
	next  map[int32]int64 // offset of the next record to route
	// routed counts records routed since the last progress log, and
	// behind says that log reported a lag.
	routed  int64
	lastLog time.Time
	behind  bool
}

func newLagTracker() *lagTracker {
	return &lagTracker{hwm: map[int32]int64{}, next: map[int32]int64{}, lastLog: time.Now()}
}

// fetched notes the high watermarks and first offsets of a poll.
func (l *lagTracker) fetched(fs kgo.Fetches) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Err != nil || len(p.Records) == 0 || (l.topic != "" && p.Topic != l.topic) {
			return
		}
		l.hwm[p.Partition] = max(l.hwm[p.Partition], p.HighWatermark)
		if _, ok := l.next[p.Partition]; !ok {
			l.next[p.Partition] = p.Records[0].Offset
		}
	})
}

// routedRecords notes a routed batch.
func (l *lagTracker) routedRecords(recs []*kgo.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range recs {
		if l.topic != "" && r.Topic != l.topic {
			continue
		}
		l.next[r.Partition] = max(l.next[r.Partition], r.Offset+1)
	}
	l.routed += int64(len(recs))
}

// forget drops the state of partitions this member no longer owns.
func (l *lagTracker) forget(partitions map[string][]int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for t, ps := range partitions {
		if l.topic != "" && t != l.topic {
			continue
		}
		for _, p := range ps {
			delete(l.hwm, p)
			delete(l.next, p)
		}
	}
}

// forgetAll drops every partition (membership lost).
func (l *lagTracker) forgetAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.hwm)
	clear(l.next)
}

func (l *lagTracker) lagLocked(p int32) int64 {
	return max(0, l.hwm[p]-l.next[p])
}

// total is the lag summed over the partitions known.
func (l *lagTracker) total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sum int64
	for p := range l.hwm {
		sum += l.lagLocked(p)
	}
	return sum
}

// logProgress logs, at most every progressInterval, how a dispatcher that
// is more than behind records behind catches up (records routed, lag,
// rate), and once that it caught up: after a failover, an outage of Redis
// or a restart, the operator sees the backlog shrink. (A lag of a batch or
// less is the normal state of a busy dispatcher.)
func (l *lagTracker) logProgress(log *slog.Logger, now time.Time, behind int64) {
	if now.Sub(l.lastLog) < progressInterval {
		return
	}
	lag := l.total()
	l.mu.Lock()
	routed, since := l.routed, now.Sub(l.lastLog)
	l.routed, l.lastLog = 0, now
	wasBehind := l.behind
	l.behind = lag > behind
	l.mu.Unlock()
	switch {
	case lag > behind:
		log.Info("routing catching up", "routed", routed, "lag", lag,
			"per_second", int64(float64(routed)/since.Seconds()))
	case wasBehind:
		log.Info("routing caught up", "routed", routed)
	}
}

// observe is the callback of fleetgate_dispatch_lag_records.
func (l *lagTracker) observe(g metric.Int64ObservableGauge, topic string) metric.Callback {
	return func(_ context.Context, o metric.Observer) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for p := range l.hwm {
			o.ObserveInt64(g, l.lagLocked(p), metric.WithAttributes(
				attribute.String("topic", topic), attribute.String("partition", strconv.Itoa(int(p)))))
		}
		return nil
	}
}

// registerLag reports l as fleetgate_dispatch_lag_records.
func registerLag(mp metric.MeterProvider, l *lagTracker, topic string) error {
	m := mp.Meter("github.com/fleetgate/fleetgate/pkg/dispatch")
	g, err := m.Int64ObservableGauge("fleetgate_dispatch_lag_records",
		metric.WithDescription("Records of each partition this dispatcher owns that are in Kafka and not routed yet (the high watermark of the last fetch minus the next offset to route): how far delivery is behind ingest. 0 when it keeps up."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(l.observe(g, topic), g)
	return err
}
