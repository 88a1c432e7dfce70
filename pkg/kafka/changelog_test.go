package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
)

func TestChangelogPartitionerHashesTheClientIDLikeKafkasDefaultPartitioner(t *testing.T) {
	kafkaDefault := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	ours := ChangelogPartitioner().ForTopic("t")
	for i := range 200 {
		cid := fmt.Sprintf("device-%d", i)
		for _, n := range []int{1, 3, 12, 64} {
			want := kafkaDefault.Partition(&kgo.Record{Key: []byte(cid)}, n)
			assert.Equal(t, want, ours.Partition(&kgo.Record{Key: []byte(cid + "\x00g\x00a/b")}, n), "%s with %d partitions", cid, n)
			assert.Equal(t, want, ours.Partition(&kgo.Record{Key: []byte(cid)}, n), "%s without a separator", cid)
		}
	}
}

func TestEnsureCompactedTopicCreatesACompactedTopicOnce(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cfg := defaults(t)
	cfg.Brokers = config.StringList{cluster.ListenAddrs()[0]}
	adm, err := NewAdmin(cfg, testkit.DiscardLogger())
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	require.NoError(t, EnsureCompactedTopic(ctx, adm, "changes", 7, -1))
	require.NoError(t, EnsureCompactedTopic(ctx, adm, "changes", 7, -1), "an existing topic is fine")

	td, err := adm.ListTopics(ctx, "changes")
	require.NoError(t, err)
	assert.Len(t, td["changes"].Partitions, 7)
	rcs, err := adm.DescribeTopicConfigs(ctx, "changes")
	require.NoError(t, err)
	rc, err := rcs.On("changes", nil)
	require.NoError(t, err)
	var policy string
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	assert.Equal(t, "compact", policy)
}
