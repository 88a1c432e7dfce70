package dispatch

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

// header is the value of the last header key of r.
func header(r *kgo.Record, key string) string {
	v, _ := testkit.Header(r, key)
	return v
}

// readTopic reads n records of topic from its start, failing the test if
// they do not arrive in time.
func (f *consumerFixture) readTopic(topic string, n int) []*kgo.Record {
	f.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.kafka.Addr()), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(f.t, err)
	defer cl.Close()
	ctx := f.ctx()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(f.t, ctx.Err(), "%d of %d records of %s read", len(out), n, topic)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func TestConsumerSetsAsideWhatItCanNeverRouteAndGoesOn(t *testing.T) {
	f := newConsumerFixture(t)
	// only-a's session key holds a string: every delivery to it fails with
	// WRONGTYPE, which no retry fixes. all is unaffected.
	broken := "fg:{only-a." + f.group + "}:s"
	require.NoError(t, f.rdb.Del(f.ctx(), broken).Err())
	require.NoError(t, f.rdb.Set(f.ctx(), broken, "not a hash", 0).Err())

	n := f.produce([]string{"a"}, 0, 10)
	junk := &kgo.Record{Topic: inbound, Key: []byte("junk"), Value: []byte("no headers at all"),
		Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("v")}}}
	res := f.producer.ProduceSync(f.ctx(), junk)
	require.NoError(t, res.FirstErr())
	junk = res[0].Record
	n += 1 + f.produce([]string{"a"}, 10, 10)
	f.run()

	require.Eventually(t, func() bool { return f.committed() == int64(n) }, 15*time.Second, 20*time.Millisecond,
		"every record is committed: nothing blocks its partition")
	require.Eventually(t, func() bool { return f.take("all") == 20 }, 10*time.Second, 20*time.Millisecond)
	f.checkReceived("all", []string{"a"}, 20)

	dead := f.readTopic(inbound+".dead-letter", 21)
	var rejected int
	for _, r := range dead {
		switch header(r, HeaderDeadLetterReason) {
		case ReasonUndecodable:
			assert.Equal(t, junk.Key, r.Key)
			assert.Equal(t, junk.Value, r.Value)
			assert.Equal(t, "v", header(r, "h"), "the record's own headers are kept")
			assert.Equal(t, inbound, header(r, HeaderDeadLetterTopic))
			assert.Equal(t, strconv.Itoa(int(junk.Partition)), header(r, HeaderDeadLetterPartition))
			assert.Equal(t, strconv.FormatInt(junk.Offset, 10), header(r, HeaderDeadLetterOffset))
			assert.NotEmpty(t, header(r, HeaderDeadLetterError))
			_, named := testkit.Header(r, HeaderDeadLetterClientID)
			assert.False(t, named, "the whole record failed, not one session's delivery")
		case ReasonRejected:
			rejected++
			assert.Equal(t, "only-a."+f.group, header(r, HeaderDeadLetterClientID))
			assert.Contains(t, header(r, HeaderDeadLetterError), "WRONGTYPE")
			assert.Equal(t, "a", string(r.Key))
		default:
			t.Errorf("unexpected dead letter: %v", r.Headers)
		}
	}
	assert.Equal(t, 20, rejected, "one dead letter per refused delivery")
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_dead_letters", "reason", ReasonUndecodable))
	assert.Equal(t, int64(20), counter(t, f.reader, "fleetgate_dispatch_dead_letters", "reason", ReasonRejected))
	assert.NoError(t, f.consumer.Ready())
}

// redisErr is an error reply of Redis, as go-redis returns it.
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

var _ redis.Error = redisErr("")

func TestOnlyRedisErrorRepliesThatNoRetryFixesArePermanent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		permanent bool
	}{
		{"a key of the wrong type is permanent", redisErr("WRONGTYPE Operation against a key holding the wrong kind of value script: abc, on @user_script:12."), true},
		{"a script error is permanent", redisErr("ERR user_script:3: attempt to compare nil with number script: abc"), true},
		{"a wrapped error reply is still one", fmt.Errorf("enqueueing for c: %w", redisErr("WRONGTYPE x")), true},
		{"a server loading its data set is transient", redisErr("LOADING Redis is loading the dataset in memory"), false},
		{"a cluster that is down is transient", redisErr("CLUSTERDOWN The cluster is down"), false},
		{"a slot being migrated is transient", redisErr("TRYAGAIN Multiple keys request during rehashing of slot"), false},
		{"a moved slot is transient", redisErr("MOVED 3999 127.0.0.1:6381"), false},
		{"a replica that is read-only is transient", redisErr("READONLY You can't write against a read only replica."), false},
		{"a busy script is transient", redisErr("BUSY Redis is busy running a script."), false},
		{"full memory is transient", redisErr("OOM command not allowed when used memory > 'maxmemory'."), false},
		{"too many clients is transient", redisErr("ERR max number of clients reached"), false},
		{"a refused connection is transient", errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), false},
		{"a timeout is transient", context.DeadlineExceeded, false},
		{"no error is not permanent", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.permanent, permanentStoreError(tc.err))
		})
	}
}

func TestARetainedMessageRedisRefusesForGoodIsSetAsideAndItsDeliveriesAreMade(t *testing.T) {
	f, _, p := newRetainedFixture(t, topic.Subscription{ClientID: "sub", Filter: "#", QoS: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The retained hash of the topic is a string: its update fails with
	// WRONGTYPE. The tests share the hashes, so it is moved aside and put
	// back.
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	key := retained.KeyOf(p + "/kept")
	saved := key + ".saved-" + p
	moved := rdb.Rename(ctx, key, saved).Err() == nil
	require.NoError(t, rdb.Set(ctx, key, "not a hash", 0).Err())
	t.Cleanup(func() {
		c := context.Background()
		_ = rdb.Del(c, key).Err()
		if moved {
			_ = rdb.Rename(c, saved, key).Err()
		}
	})

	plain := f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/plain", QoS: 1, Payload: []byte("x")})
	kept := f.record(kafkarecord.Message{ClientID: "pub", Topic: p + "/kept", QoS: 1, Retain: true, Payload: []byte("y")})
	dead, err := f.router.Route(ctx, []*kgo.Record{plain, kept})
	require.NoError(t, err, "a refusal no retry fixes does not fail the batch")
	require.Len(t, dead, 1)
	assert.Same(t, kept, dead[0].Record)
	assert.Equal(t, ReasonRejected, dead[0].Reason)
	assert.ErrorContains(t, dead[0].Err, "WRONGTYPE")
	assert.Len(t, f.queue.messages(t)["sub"], 2, "both records are still delivered")
}

func TestADeadLetterTooLargeForItsTopicIsSetAsideWithoutItsValue(t *testing.T) {
	const dlt = "in.dead-letter"
	k := testkit.StartKafka(t, kfake.SeedTopics(1, dlt))
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.ConsumeTopics(dlt), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The dead-letter topic takes records up to 4 KiB; the inbound record
	// fits, the dead letter with its headers does not.
	alter, err := kadm.NewClient(cl).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("4096")}}, dlt)
	require.NoError(t, err)
	require.NoError(t, alter[0].Err)

	small := &kgo.Record{Topic: "in", Partition: 0, Offset: 7, Key: []byte("k"), Value: []byte("small")}
	// Random bytes: a compressed batch would fit.
	noise := make([]byte, 3900)
	_, _ = rand.Read(noise)
	big := &kgo.Record{Topic: "in", Partition: 0, Offset: 8, Key: []byte("k"), Value: noise}
	long := errors.New(strings.Repeat("e", 900))
	require.NoError(t, NewKafkaDeadLetters(cl, dlt).SetAside(ctx, []DeadLetter{
		{Record: small, Reason: ReasonUndecodable, Err: long}, {Record: big, Reason: ReasonUndecodable, Err: long}}))

	var got []*kgo.Record
	for len(got) < 2 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err())
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	byOffset := map[string]*kgo.Record{}
	for _, r := range got {
		byOffset[header(r, HeaderDeadLetterOffset)] = r
	}
	require.Contains(t, byOffset, "7")
	require.Contains(t, byOffset, "8")
	assert.Equal(t, "small", string(byOffset["7"].Value))
	_, cut := testkit.Header(byOffset["7"], HeaderDeadLetterValueBytes)
	assert.False(t, cut)
	assert.Len(t, byOffset["8"].Value, 0)
	assert.Equal(t, "3900", header(byOffset["8"], HeaderDeadLetterValueBytes))
	assert.Equal(t, "k", string(byOffset["8"].Key))
}

func TestConsumerRetriesWhileTheDeadLetterTopicFailsAndCommitsNothingPastIt(t *testing.T) {
	f := newConsumerFixture(t)
	// A dead-letter topic that does not exist yet: setting aside fails
	// (soon, with a client that gives up on unknown topics quickly).
	const late = "late.dead-letter"
	dl, err := kgo.NewClient(kgo.SeedBrokers(f.kafka.Addr()), kgo.MetadataMinAge(10*time.Millisecond),
		kgo.UnknownTopicRetries(1), kgo.RecordDeliveryTimeout(time.Second))
	require.NoError(t, err)
	t.Cleanup(dl.Close)
	cfg := f.consumer.cfg
	cfg.DeadLetterTopic = late
	f.consumer = NewConsumer(cfg, f.consumer.kcfg, f.consumer.router, NewKafkaDeadLetters(dl, late),
		testkit.DiscardLogger(), kafka.Telemetry{})

	n := f.produce([]string{"a"}, 0, 5)
	f.run()
	require.Eventually(t, func() bool { return f.committed() == int64(n) }, 15*time.Second, 20*time.Millisecond)

	res := f.producer.ProduceSync(f.ctx(), &kgo.Record{Topic: inbound, Key: []byte("a"), Value: []byte("junk")})
	require.NoError(t, res.FirstErr())
	junk := res[0].Record
	require.Eventually(t, func() bool { return f.consumer.Ready() != nil }, 15*time.Second, 20*time.Millisecond,
		"not ready while the record cannot be set aside")
	assert.Equal(t, int64(n), f.committed(), "nothing committed past the record not set aside")
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_dead_letters", "", ""), "not counted before it is set aside")

	_, err = f.adm.CreateTopic(f.ctx(), 1, 1, nil, late)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return f.committed() == int64(n+1) }, 30*time.Second, 20*time.Millisecond,
		"committed once the dead letter is in Kafka")
	got := f.readTopic(late, 1)
	assert.Equal(t, strconv.FormatInt(junk.Offset, 10), header(got[0], HeaderDeadLetterOffset))
	assert.Equal(t, "junk", string(got[0].Value))
	assert.Equal(t, int64(1), counter(t, f.reader, "fleetgate_dispatch_dead_letters", "reason", ReasonUndecodable))
	require.Eventually(t, func() bool { return f.consumer.Ready() == nil }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, 5, f.take("all"))
}

// TestSettingAsideReturnsWhenTheContextEndsWhileKafkaHoldsTheRequest: a
// broker that took the dead letters' produce request and stopped answering
// (a frozen process) holds kgo's ProduceSync past its context; SetAside
// returns with the context's error instead, so the routing loop, and the
// dispatcher's shutdown, are not held by it. The dead letter in flight is
// written once the broker answers.
func TestSettingAsideReturnsWhenTheContextEndsWhileKafkaHoldsTheRequest(t *testing.T) {
	const dlt = "in.dead-letter"
	k := testkit.StartKafka(t, kfake.SeedTopics(1, dlt))
	// The dispatcher's own producer settings (acks=all, idempotent).
	prod, err := kafka.NewProducer(kafka.Config{Brokers: []string{k.Addr()}, ClientID: "dead-letters", Topic: "in", DialTimeout: 5 * time.Second},
		kafka.ProducerOptions{DeliveryTimeout: time.Second}, testkit.DiscardLogger(), kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	dl := NewKafkaDeadLetters(prod, dlt)
	rec := func(offset int64) DeadLetter {
		return DeadLetter{Record: &kgo.Record{Topic: "in", Partition: 0, Offset: offset, Key: []byte("k"), Value: []byte("v")},
			Reason: ReasonUndecodable, Err: errors.New("undecodable")}
	}
	require.NoError(t, dl.SetAside(context.Background(), []DeadLetter{rec(1)}), "the producer is connected")

	k.HoldProduce(true)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	returned := make(chan error, 1)
	go func() { returned <- dl.SetAside(ctx, []DeadLetter{rec(2)}) }()
	select {
	case err := <-returned:
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(30 * time.Second):
		t.Fatal("SetAside waited for a broker that does not answer")
	}
	k.HoldProduce(false)
	recs := testkit.NewReader(t, k.Addr(), dlt).Read(2, 10*time.Second)
	assert.Equal(t, "2", header(recs[1], HeaderDeadLetterOffset), "the held dead letter is written once the broker answers")
}
