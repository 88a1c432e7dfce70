package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
)

func TestNewGroupConsumerRefusesAnEmptyGroup(t *testing.T) {
	_, err := NewGroupConsumer(defaults(t), GroupConsumerOptions{}, testkit.DiscardLogger(), Telemetry{})
	require.ErrorContains(t, err, "empty group")
}

func TestTheGroupConsumerCommitsOnlyWhatTheCallerCommits(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cfg := defaults(t)
	cfg.Brokers = config.StringList{cluster.ListenAddrs()[0]}
	cfg.Topic = "in"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	prod, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.DefaultProduceTopic("in"))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	for _, v := range []string{"1", "2", "3", "4"} {
		require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr())
	}

	cl, err := NewGroupConsumer(cfg, GroupConsumerOptions{Group: "g"}, testkit.DiscardLogger(), Telemetry{})
	require.NoError(t, err)
	var recs []*kgo.Record
	for len(recs) < 4 {
		fs := cl.PollRecords(ctx, 10)
		require.NoError(t, ctx.Err())
		recs = append(recs, fs.Records()...)
		if len(recs) < 4 {
			cl.AllowRebalance()
		}
	}
	assert.Equal(t, "1", string(recs[0].Value), "a new group starts at the beginning by default")
	require.NoError(t, cl.CommitRecords(ctx, recs[:2]...))
	cl.CloseAllowingRebalance()

	offs, err := kadm.NewClient(prod).FetchOffsets(ctx, "g")
	require.NoError(t, err)
	o, ok := offs.Lookup("in", 0)
	require.True(t, ok)
	assert.Equal(t, int64(2), o.At, "polled but uncommitted records are not committed, also not on close")
}
