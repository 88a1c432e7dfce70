package dispatch

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kgo"
)

func fetchOf(partition int32, hwm int64, offsets ...int64) kgo.Fetches {
	p := kgo.FetchPartition{Partition: partition, HighWatermark: hwm}
	for _, o := range offsets {
		p.Records = append(p.Records, &kgo.Record{Topic: inbound, Partition: partition, Offset: o})
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: inbound, Partitions: []kgo.FetchPartition{p}}}}}
}

// The lag comes from the fetches' high watermarks and the records routed;
// a dispatcher more than a batch behind logs its progress, and once that it
// caught up.
func TestTheLagFollowsFetchesAndRoutingAndIsLoggedWhileCatchingUp(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	l := newLagTracker()
	now := l.lastLog

	fs := fetchOf(2, 5000, 1000, 1001, 1002)
	l.fetched(fs)
	assert.Equal(t, int64(4000), l.total(), "before anything is routed the lag counts from the first record fetched")
	l.routedRecords(fs.Records())
	assert.Equal(t, int64(3997), l.total())

	now = now.Add(progressInterval)
	l.logProgress(log, now, 100)
	assert.Contains(t, out.String(), "routing catching up")
	assert.Contains(t, out.String(), "lag=3997")
	out.Reset()

	fs = fetchOf(2, 5000, 4999)
	l.fetched(fs)
	l.routedRecords(fs.Records())
	assert.Zero(t, l.total())
	l.logProgress(log, now.Add(time.Second), 100)
	assert.Empty(t, out.String(), "at most one line per interval")
	l.logProgress(log, now.Add(progressInterval), 100)
	assert.Contains(t, out.String(), "routing caught up")
	out.Reset()
	l.logProgress(log, now.Add(2*progressInterval), 100)
	assert.Empty(t, out.String(), "nothing while it keeps up")

	l.forget(map[string][]int32{inbound: {2}})
	assert.Zero(t, l.total())
	l.fetched(fetchOf(2, 10, 5))
	assert.Equal(t, int64(5), l.total(), "a partition that comes back starts afresh")
}
