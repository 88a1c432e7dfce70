package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
)

// TestProduceWaitReturnsWhenTheContextEndsWhileKafkaHoldsTheRequest: a
// broker that took a produce request and does not answer (a stopped
// process) holds the change-log producer's records past their delivery
// timeout, so ProduceSync would wait for it; ProduceWait returns with
// ctx's error, and the records are written once the broker answers. With
// a broker that answers it returns what Kafka acknowledged.
func TestProduceWaitReturnsWhenTheContextEndsWhileKafkaHoldsTheRequest(t *testing.T) {
	k, cl := changesProducer(t)
	ctx := context.Background()

	acked, err := ProduceWait(ctx, cl, &kgo.Record{Topic: "changes", Key: []byte("a")}, &kgo.Record{Topic: "changes", Key: []byte("b")})
	require.NoError(t, err)
	assert.Equal(t, 2, acked)

	k.HoldProduce(true)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	returned := make(chan error, 1)
	go func() {
		_, err := ProduceWait(wctx, cl, &kgo.Record{Topic: "changes", Key: []byte("c")})
		returned <- err
	}()
	select {
	case err := <-returned:
		require.Error(t, err)
		assert.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("ProduceWait waited for a broker that does not answer")
	}
	k.HoldProduce(false)
	recs := testkit.NewReader(t, k.Addr(), "changes").Read(3, 10*time.Second)
	require.Len(t, recs, 3, "the held record is written once the broker answers")
	assert.Equal(t, "c", string(recs[2].Key))
}

// TestWithinReturnsAtItsDeadlineOrWithTheAnswer: a Ping of a broker that
// answers returns its answer; a call that the broker never answers (a
// request written to a stopped process, which franz-go waits for whatever
// its context says) is left behind at the deadline, with the deadline's
// error; a call's own error comes back as it is. The whole of it, a
// frontend's drain with Kafka stopped, is in test/cluster
// (TestWithEveryDefaultASIGTERMWhileKafkaIsStoppedAnswersEveryPublishBeforeTheNodeExits).
func TestWithinReturnsAtItsDeadlineOrWithTheAnswer(t *testing.T) {
	_, cl := changesProducer(t)
	require.NoError(t, Within(context.Background(), cl.Ping), "a broker that answers")

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	never := make(chan struct{})
	defer close(never)
	err := Within(ctx, func(context.Context) error { <-never; return nil })
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	refused := errors.New("refused")
	assert.ErrorIs(t, Within(context.Background(), func(context.Context) error { return refused }), refused)
}

// changesProducer starts a broker with the topic "changes" and returns it
// with a change-log producer of the product's defaults there.
func changesProducer(t *testing.T) (*testkit.Kafka, *kgo.Client) {
	t.Helper()
	k := testkit.StartKafka(t, kfake.SeedTopics(1, "changes"))
	cfg := defaults(t)
	cfg.Brokers = config.StringList{k.Addr()}
	cl, err := NewChangelogProducer(cfg, time.Second, testkit.DiscardLogger(), Telemetry{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return k, cl
}
