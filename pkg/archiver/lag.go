package archiver

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// progressInterval is how often a consumer that is catching up logs its
// progress.
const progressInterval = 10 * time.Second

type topicPartition struct {
	topic     string
	partition int32
}

// partitionState is what Kafka said of an owned partition at the last lag
// computation.
type partitionState struct {
	start, end, commit int64 // commit is -1 without a committed offset
}

// lagTracker computes the lag of the partitions a consumer owns: the end
// offset minus the next offset to write. It combines what Kafka says every
// archiver.lag-interval (ownership, end and committed offsets, from
// kadm.Client.Lag) with what the consumer sees between those times (high
// watermarks of fetches, offsets written), so the gauge follows both new
// records and written batches at once. Safe for concurrent use.
type lagTracker struct {
	mu    sync.Mutex
	owned map[topicPartition]partitionState
	hwm   map[topicPartition]int64 // highest high watermark seen in fetches
	next  map[topicPartition]int64 // offset after the last written record
	// writtenSince counts records written since the last progress log.
	writtenSince int64
}

func newLagTracker() *lagTracker {
	return &lagTracker{owned: map[topicPartition]partitionState{},
		hwm: map[topicPartition]int64{}, next: map[topicPartition]int64{}}
}

// fetched notes the high watermarks of a poll.
func (l *lagTracker) fetched(fs kgo.Fetches) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Err != nil {
			return
		}
		k := topicPartition{p.Topic, p.Partition}
		l.hwm[k] = max(l.hwm[k], p.HighWatermark)
	})
}

// written notes a written batch.
func (l *lagTracker) written(recs []*kgo.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range recs {
		k := topicPartition{r.Topic, r.Partition}
		l.next[k] = max(l.next[k], r.Offset+1)
	}
	l.writtenSince += int64(len(recs))
}

// update replaces the owned partitions with what Kafka said.
func (l *lagTracker) update(owned map[topicPartition]partitionState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.owned = owned
	// Partitions that moved to another member keep no state here: when
	// they come back, their committed offset is where the lag starts.
	for k := range l.hwm {
		if _, ok := owned[k]; !ok {
			delete(l.hwm, k)
			delete(l.next, k)
		}
	}
}

// lagLocked is the lag of one owned partition. l.mu must be held.
func (l *lagTracker) lagLocked(k topicPartition, s partitionState) int64 {
	end := max(s.end, l.hwm[k])
	pos := s.commit
	if n, ok := l.next[k]; ok {
		pos = max(pos, n)
	}
	if pos < 0 {
		// Without a commit the group starts at the start (or, with an
		// archive.start-at time, somewhere after it: the lag is then an
		// upper bound until the first commit).
		pos = s.start
	}
	return max(0, end-pos)
}

// total is the lag summed over the owned partitions.
func (l *lagTracker) total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sum int64
	for k, s := range l.owned {
		sum += l.lagLocked(k, s)
	}
	return sum
}

// takeWritten returns the records written since the last call.
func (l *lagTracker) takeWritten() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.writtenSince
	l.writtenSince = 0
	return n
}

// observe is the callback of fleetgate_archive_lag_records.
func (l *lagTracker) observe(g metric.Int64ObservableGauge) metric.Callback {
	return func(_ context.Context, o metric.Observer) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for k, s := range l.owned {
			o.ObserveInt64(g, l.lagLocked(k, s), metric.WithAttributes(
				attribute.String("topic", k.topic), attribute.String("partition", strconv.Itoa(int(k.partition)))))
		}
		return nil
	}
}

// runLag computes the lag every archiver.lag-interval until ctx is done,
// and logs progress while the consumer catches up.
func (c *Consumer) runLag(ctx context.Context, cl *kgo.Client, adm *kadm.Client) {
	t := time.NewTicker(c.cfg.LagInterval)
	defer t.Stop()
	lastLog := time.Now()
	catchingUp := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.refreshLag(ctx, cl, adm); err != nil {
			if ctx.Err() == nil {
				c.log.Debug("computing consumer lag failed", "err", err)
			}
			continue
		}
		lag := c.lag.total()
		switch {
		case lag == 0 && catchingUp:
			catchingUp = false
			c.log.Info("archive caught up", "written", c.lag.takeWritten())
			lastLog = time.Now()
		case time.Since(lastLog) >= progressInterval:
			written := c.lag.takeWritten()
			if lag > 0 && written > 0 {
				catchingUp = true
				c.log.Info("archive catching up", "written", written, "lag", lag,
					"per_second", int64(float64(written)/time.Since(lastLog).Seconds()))
			}
			lastLog = time.Now()
		}
	}
}

// refreshLag asks Kafka which partitions this member owns, their end and
// committed offsets.
func (c *Consumer) refreshLag(ctx context.Context, cl *kgo.Client, adm *kadm.Client) error {
	ctx, cancel := context.WithTimeout(ctx, max(c.cfg.LagInterval, 5*time.Second))
	defer cancel()
	lags, err := adm.Lag(ctx, c.acfg.Group)
	if err != nil {
		return err
	}
	dl := lags[c.acfg.Group]
	if err := dl.Error(); err != nil {
		return err
	}
	member, _ := cl.GroupMetadata()
	owned := map[topicPartition]partitionState{}
	for _, l := range dl.Lag.Sorted() {
		if l.Member == nil || l.Member.MemberID != member || l.End.Err != nil {
			continue
		}
		s := partitionState{start: l.Start.Offset, end: l.End.Offset, commit: -1}
		if l.Start.Err != nil {
			s.start = 0
		}
		if l.Commit.At >= 0 {
			s.commit = l.Commit.At
		}
		owned[topicPartition{l.Topic, l.Partition}] = s
	}
	c.lag.update(owned)
	return nil
}
