package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
)

// The tests of this file hold the rule that no record acknowledged to a
// device is skipped: every partition without a committed offset — a new
// group (TestConsumerRoutesEveryRecordToTheSubscribedQueuesInOrderAndCommits
// produces before the group exists), offsets Kafka expired, partitions added
// while the group runs — is routed from its start with the default
// dispatch.start-at.

// records returns n records of publisher p numbered from first, received at
// at, in the fixture's format.
func records(p string, first, n int, at time.Time) []*kgo.Record {
	var recs []*kgo.Record
	for i := first; i < first+n; i++ {
		recs = append(recs, kafkarecord.Encode(inbound, &kafkarecord.Message{
			ClientID: p, Topic: "dev/" + p + "/t", QoS: 1, MessageID: fmt.Sprintf("%s-%d", p, i),
			Payload: []byte(fmt.Sprintf("%s-%d", p, i)), ReceivedAt: at,
		}))
	}
	return recs
}

// runUntilCommitted runs the consumer until the group committed want
// offsets in all, then stops it (the member leaves the group).
func (f *consumerFixture) runUntilCommitted(want int64) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.consumer.Run(ctx) }()
	require.Eventually(f.t, func() bool { return f.committed() == want }, 15*time.Second, 20*time.Millisecond,
		"the group commits what it routed")
	cancel()
	select {
	case err := <-done:
		require.NoError(f.t, err)
	case <-time.After(15 * time.Second):
		f.t.Fatal("Run did not return")
	}
}

func TestAGroupWhoseOffsetsExpiredRoutesFromTheStartAndSkipsNothing(t *testing.T) {
	f := newConsumerFixture(t)
	pubs := []string{"a", "b"}
	first := f.produce(pubs, 0, 20)
	f.runUntilCommitted(int64(first))

	// Kafka drops the offsets of a group that stayed empty longer than
	// offsets.retention.minutes; deleting them is the same state.
	offs, err := f.adm.FetchOffsets(f.ctx(), f.group)
	require.NoError(t, err)
	deleted, err := f.adm.DeleteOffsets(f.ctx(), f.group, offs.Partitions())
	require.NoError(t, err)
	for topic, ps := range deleted {
		for p, err := range ps {
			require.NoError(t, err, "deleting the offset of %s[%d]", topic, p)
		}
	}
	require.Zero(t, f.committed(), "the group has no committed offset left")

	second := f.produce(pubs, 20, 10)
	f.run()
	require.Eventually(t, func() bool { return f.committed() == int64(first+second) }, 15*time.Second, 20*time.Millisecond)
	f.take("all")
	repeats := f.checkReceived("all", pubs, 30)
	t.Logf("%d messages routed again after the offsets expired (at least once)", repeats)
}

func TestPartitionsAddedWhileTheGroupRunsAreRoutedFromTheirFirstRecord(t *testing.T) {
	f := newConsumerFixture(t)
	// The group finds new partitions at its next metadata refresh
	// (kafka.metadata-max-age); a second keeps the test short.
	f.consumer.kcfg.MetadataMaxAge = time.Second
	before := f.produce([]string{"a"}, 0, 10)
	f.run()
	require.Eventually(t, func() bool { return f.committed() == int64(before) }, 15*time.Second, 20*time.Millisecond)

	resp, err := f.adm.CreatePartitions(f.ctx(), 3, inbound)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	// A frontend that refreshed its metadata first writes to a new
	// partition before the group has assigned it to anyone: the records
	// are acknowledged, and the group must not start after them.
	manual, err := kgo.NewClient(kgo.SeedBrokers(f.kafka.Addr()), kgo.DefaultProduceTopic(inbound),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(manual.Close)
	var added []*kgo.Record
	for i, p := range []string{"x", "y", "z"} {
		recs := records(p, 0, 15, time.Now())
		for _, r := range recs {
			r.Partition = int32(3 + i)
		}
		added = append(added, recs...)
	}
	require.NoError(t, manual.ProduceSync(f.ctx(), added...).FirstErr())
	f.produce([]string{"a"}, 10, 5)

	require.Eventually(t, func() bool { return f.committed() == int64(before+len(added)+5) }, 30*time.Second, 50*time.Millisecond,
		"the group routes and commits the new partitions")
	f.take("all")
	f.checkReceived("all", []string{"x", "y", "z"}, 15)
	require.Equal(t, before+len(added)+5, len(f.taken["all"]), "every record once")
}

func TestAStartTimeSkipsOnlyTheRecordsBeforeIt(t *testing.T) {
	f := newConsumerFixture(t)
	// History from before a first deployment, then what devices sent
	// after the time the operator named.
	require.NoError(t, f.producer.ProduceSync(f.ctx(), records("old", 0, 20, time.Now().Add(-time.Hour))...).FirstErr())
	cut := time.Now().Add(-time.Minute)
	require.NoError(t, f.producer.ProduceSync(f.ctx(), records("a", 0, 20, time.Now())...).FirstErr())
	f.consumer.cfg.StartAt = cut.Format(time.RFC3339Nano)
	require.NoError(t, f.consumer.cfg.Validate())
	f.run()

	require.Eventually(t, func() bool { return f.take("all") >= 20 }, 15*time.Second, 20*time.Millisecond)
	f.checkReceived("all", []string{"a"}, 20)
	for _, m := range f.taken["all"] {
		assert.NotEqual(t, "dev/old/t", m.Topic, "a record from before the start time was routed")
	}
}

func TestASessionTimeoutBelowTheBrokersMinimumKeepsTheDispatcherUnreadyAndSaysWhy(t *testing.T) {
	f := newConsumerFixture(t)
	var logs testkit.SyncBuffer
	f.consumer.log = slog.New(slog.NewTextHandler(&logs, nil))
	// kfake's group.min.session.timeout.ms is Kafka's default, 6 s.
	f.consumer.cfg.SessionTimeout, f.consumer.cfg.HeartbeatInterval = 2*time.Second, 500*time.Millisecond
	f.run()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "INVALID_SESSION_TIMEOUT") }, 15*time.Second, 20*time.Millisecond,
		"the broker's refusal is logged")
	err := f.consumer.Ready()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "assignment")
}
