package dispatch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

const inbound = "mqtt.inbound"

// consumerFixture is a dispatcher over kfake and the real redis-server,
// with two persistent sessions: "all" subscribed to dev/# and "only-a" to
// dev/a/#.
type consumerFixture struct {
	t        *testing.T
	kafka    *testkit.Kafka
	producer *kgo.Client
	adm      *kadm.Client
	store    *session.Store
	rdb      *redis.Client
	reader   *sdkmetric.ManualReader
	consumer *Consumer
	group    string
	epochs   map[string]uint64
	// taken accumulates the messages taken from each session's queue.
	taken map[string][]*handoff.Message
}

func newConsumerFixture(t *testing.T) *consumerFixture {
	t.Helper()
	testRedis.Require(t)
	f := &consumerFixture{t: t, kafka: testkit.StartKafka(t, kfake.SeedTopics(3, inbound, inbound+".dead-letter")),
		group: fmt.Sprintf("dispatch-test-%d", time.Now().UnixNano()), epochs: map[string]uint64{},
		taken: map[string][]*handoff.Message{}, reader: sdkmetric.NewManualReader()}
	log := testkit.DiscardLogger()
	var err error
	f.producer, err = kgo.NewClient(kgo.SeedBrokers(f.kafka.Addr()), kgo.DefaultProduceTopic(inbound))
	require.NoError(t, err)
	t.Cleanup(f.producer.Close)
	f.adm = kadm.NewClient(f.producer)

	// Short timeouts, so a request to the stopped server fails fast.
	f.rdb = redis.NewClient(&redis.Options{Addr: testRedis.Addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { _ = f.rdb.Close() })
	f.store = session.New(f.rdb, session.Config{
		Redis:             session.RedisConfig{Addrs: []string{testRedis.Addr}},
		MaxQueuedMessages: 100_000, MaxQueuedBytes: 1 << 26, QueueFullPolicy: session.DropOldest,
		HeartbeatInterval: time.Second, LivenessTTL: 5 * time.Second,
	}, session.WithLogger(log))

	ix := &topic.Index{}
	for cid, filter := range map[string]string{"all": "dev/#", "only-a": "dev/a/#"} {
		id := cid + "." + f.group
		res, err := f.store.Connect(f.ctx(), session.ConnectRequest{ClientID: id, Node: "n1", ExpirySeconds: 3600, Protocol: 5})
		require.NoError(t, err)
		f.epochs[cid] = res.Epoch
		_, err = f.store.Subscribe(f.ctx(), id, res.Epoch, []session.Subscription{{FilterKey: session.FilterKey{Filter: filter}, QoS: 1}})
		require.NoError(t, err)
		_, err = ix.Add(topic.Subscription{ClientID: id, Filter: filter, QoS: 1})
		require.NoError(t, err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader))
	router, err := NewRouter(ix, f.store, log, mp, WithNotifier(NewRedisNotifier(f.rdb)))
	require.NoError(t, err)

	var kcfg kafka.Config
	kcfg.RegisterFlags(flagSet())
	kcfg.Brokers = config.StringList{f.kafka.Addr()}
	kcfg.Topic = inbound
	// The defaults (where a new group starts, session timeout) with a
	// small batch and short backoffs and commit interval.
	cfg := defaultConfig(t)
	cfg.Group, cfg.MaxPollRecords = f.group, 25
	cfg.RetryMinBackoff, cfg.RetryMaxBackoff, cfg.CommitInterval = 20*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	require.NoError(t, cfg.Validate())
	f.consumer = NewConsumer(cfg, kcfg, router, NewKafkaDeadLetters(f.producer, cfg.DeadLetterTopicName(inbound)), log, kafka.Telemetry{})
	require.NoError(t, registerLag(mp, f.consumer.lag, inbound))
	return f
}

// lag returns fleetgate_dispatch_lag_records summed over partitions, and
// how many partitions it reports.
func (f *consumerFixture) lag() (sum int64, partitions int) {
	f.t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(f.t, f.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "fleetgate_dispatch_lag_records" {
				for _, dp := range g.DataPoints {
					sum += dp.Value
					partitions++
				}
			}
		}
	}
	return sum, partitions
}

func (f *consumerFixture) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	f.t.Cleanup(cancel)
	return ctx
}

// run starts the consumer; it is stopped at the end of the test and must
// return nil.
func (f *consumerFixture) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.consumer.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(f.t, err, "Run returns nil when cancelled")
		case <-time.After(15 * time.Second):
			f.t.Error("Run did not return after cancel")
		}
		assert.Error(f.t, f.consumer.Ready())
	})
}

// produce writes n messages of each publisher, numbered from first, on
// topic dev/<publisher>/t, and returns how many records it wrote.
func (f *consumerFixture) produce(publishers []string, first, n int) int {
	f.t.Helper()
	var recs []*kgo.Record
	for i := first; i < first+n; i++ {
		for _, p := range publishers {
			recs = append(recs, kafkarecord.Encode(inbound, &kafkarecord.Message{
				ClientID: p, Topic: "dev/" + p + "/t", QoS: 1, MessageID: fmt.Sprintf("%s-%d", p, i),
				Payload: []byte(fmt.Sprintf("%s-%d", p, i)), ReceivedAt: time.Now(),
			}))
		}
	}
	require.NoError(f.t, f.producer.ProduceSync(f.ctx(), recs...).FirstErr())
	return len(recs)
}

// committed is the sum of the group's committed offsets.
func (f *consumerFixture) committed() int64 {
	offs, err := f.adm.FetchOffsets(f.ctx(), f.group)
	if err != nil {
		return -1
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

// take moves whatever is queued for cid into f.taken and returns the
// count taken so far.
func (f *consumerFixture) take(cid string) int {
	f.t.Helper()
	var acks []uint16
	for {
		// Free the inflight slots of the last messages taken, as the
		// frontend does on PUBACK, and take what is queued.
		r := session.Round{ClientID: cid + "." + f.group, Epoch: f.epochs[cid], Acks: acks, Take: 1000}
		f.store.RunRounds(f.ctx(), []*session.Round{&r})
		require.NoError(f.t, r.Err)
		if len(r.Taken) == 0 {
			return len(f.taken[cid])
		}
		acks = acks[:0]
		for _, qm := range r.Taken {
			m, err := handoff.DecodeMessage(qm.Message)
			require.NoError(f.t, err)
			f.taken[cid] = append(f.taken[cid], m)
			acks = append(acks, qm.PacketID)
		}
	}
}

// checkReceived checks that cid received every message of publishers numbered
// 0..n-1, each publisher's in order when repeats (at-least-once) are
// ignored, and returns how many repeats it saw.
func (f *consumerFixture) checkReceived(cid string, publishers []string, n int) (repeats int) {
	f.t.Helper()
	seen := map[string]bool{}
	next := map[string]int{}
	for _, m := range f.taken[cid] {
		if seen[string(m.Payload)] {
			repeats++
			continue
		}
		seen[string(m.Payload)] = true
		p, num, ok := strings.Cut(string(m.Payload), "-")
		require.True(f.t, ok)
		i, err := strconv.Atoi(num)
		require.NoError(f.t, err)
		require.Equal(f.t, next[p], i, "%s got %s's messages in order", cid, p)
		next[p]++
		require.Equal(f.t, "dev/"+p+"/t", m.Topic)
		require.Equal(f.t, byte(1), m.QoS)
	}
	for _, p := range publishers {
		require.Equal(f.t, n, next[p], "%s got every message of %s", cid, p)
	}
	return repeats
}

func flagSet() *flag.FlagSet { return flag.NewFlagSet("t", flag.PanicOnError) }

func TestConsumerRoutesEveryRecordToTheSubscribedQueuesInOrderAndCommits(t *testing.T) {
	f := newConsumerFixture(t)
	notices := f.rdb.Subscribe(f.ctx(), handoff.NotifyChannel("n1"))
	t.Cleanup(func() { _ = notices.Close() })
	_, err := notices.Receive(f.ctx())
	require.NoError(t, err)

	pubs := []string{"a", "b", "c"}
	total := f.produce(pubs, 0, 40)
	f.run()

	require.Eventually(t, func() bool { return f.committed() == int64(total) }, 15*time.Second, 20*time.Millisecond,
		"offsets are committed once the records are routed")
	require.Equal(t, 3*40, f.take("all"))
	require.Equal(t, 40, f.take("only-a"))
	assert.Zero(t, f.checkReceived("all", pubs, 40))
	assert.Zero(t, f.checkReceived("only-a", []string{"a"}, 40))
	assert.NoError(t, f.consumer.Ready())
	assert.Equal(t, int64(total), counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))

	select {
	case msg := <-notices.Channel():
		n, err := handoff.ParseNotice(msg.Payload)
		require.NoError(t, err)
		assert.Contains(t, n.ClientIDs, "all."+f.group, "frontends are told which sessions got messages")
	case <-time.After(5 * time.Second):
		t.Fatal("no notice on " + handoff.NotifyChannel("n1"))
	}
}

// With dispatch.batch-wait, records that come one by one are routed in
// batches of several, each publisher's still in order, and all committed.
// (The test above routes at the default, no wait.)
func TestConsumerWithBatchWaitGathersRecordsThatComeOneByOne(t *testing.T) {
	f := newConsumerFixture(t)
	f.consumer.cfg.BatchWait = time.Second
	require.NoError(t, f.consumer.cfg.Validate())
	f.run()
	pubs := []string{"a", "b"}
	total := 0
	for i := range 15 {
		total += f.produce(pubs, i, 1) // one produce request per round
		time.Sleep(5 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return f.committed() == int64(total) }, 15*time.Second, 20*time.Millisecond,
		"offsets are committed once the records are routed")
	require.Equal(t, total, f.take("all"))
	assert.Zero(t, f.checkReceived("all", pubs, 15))
	assert.Equal(t, int64(total), counter(t, f.reader, "fleetgate_dispatch_records_routed", "", ""))
	batches := counter(t, f.reader, "fleetgate_dispatch_batches", "", "")
	assert.Positive(t, batches)
	// 15 produce requests within about 0.1 s and a 1 s wait: without
	// gathering each would be a batch of its own; max-poll-records (25)
	// makes at least two.
	assert.Less(t, batches, int64(8), "records that came one by one were gathered into few batches")
}

// produceOn writes one message of publisher p on topic t.
func (f *consumerFixture) produceOn(p, t string, i int) {
	f.t.Helper()
	require.NoError(f.t, f.producer.ProduceSync(f.ctx(), kafkarecord.Encode(inbound, &kafkarecord.Message{
		ClientID: p, Topic: t, QoS: 1, MessageID: fmt.Sprintf("%s-%d", p, i),
		Payload: []byte(fmt.Sprintf("%s-%d", p, i)), ReceivedAt: time.Now(),
	})).FirstErr())
}

// After a batch that gave no session a message, the next gathers for
// dispatch.quiet-wait: records no one subscribed to that come one by one
// are routed in few batches. A batch that delivers keeps routing at once
// (dispatch.batch-wait, 0 by default): a subscriber's messages that come
// one by one are each a batch of their own, and the first of them after
// the quiet ones gathered with them waits no more than the quiet wait.
func TestConsumerGathersOnlyAfterBatchesThatDeliveredNothing(t *testing.T) {
	f := newConsumerFixture(t)
	require.Zero(t, f.consumer.cfg.BatchWait, "the default batch wait")
	f.consumer.cfg.QuietWait = time.Second // long, so that the batches are told apart by count
	require.NoError(t, f.consumer.cfg.Validate())
	f.run()
	routed := func() int64 { return counter(t, f.reader, "fleetgate_dispatch_records_routed", "", "") }
	batches := func() int64 { return counter(t, f.reader, "fleetgate_dispatch_batches", "", "") }

	// A stream no subscription matches ("dev/#" and "dev/a/#" are the
	// fixture's filters).
	f.produceOn("q", "telemetry/q", 0)
	require.Eventually(t, func() bool { return routed() == 1 }, 15*time.Second, 10*time.Millisecond)
	before := batches()
	for i := 1; i <= 15; i++ {
		f.produceOn("q", "telemetry/q", i)
		time.Sleep(5 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return routed() == 16 }, 15*time.Second, 10*time.Millisecond)
	assert.Less(t, batches()-before, int64(5), "15 records no one subscribed to, 5 ms apart, gathered for a 1 s quiet wait")
	assert.Positive(t, f.consumer.quietWaits.Load())

	// A subscriber's stream: the first record comes after a quiet batch
	// and is gathered; from then on every batch delivers and none waits.
	f.produceOn("a", "dev/a/t", 0)
	require.Eventually(t, func() bool { return routed() == 17 }, 15*time.Second, 10*time.Millisecond)
	waits := f.consumer.quietWaits.Load()
	before = batches()
	for i := 1; i <= 15; i++ {
		f.produceOn("a", "dev/a/t", i)
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return routed() == 32 }, 15*time.Second, 10*time.Millisecond)
	assert.Equal(t, waits, f.consumer.quietWaits.Load(), "no batch waited while each delivered")
	assert.Greater(t, batches()-before, int64(10), "records 20 ms apart for a subscriber were routed as they came")
	require.Eventually(t, func() bool { return f.take("all") == 16 }, 5*time.Second, 10*time.Millisecond)
}

// Offsets are committed in the background; a dispatcher that stops (leaves
// the group) commits what it routed before its partitions move, so the next
// owner does not route it again.
func TestConsumerCommitsWhatItRoutedWhenItLeavesTheGroup(t *testing.T) {
	f := newConsumerFixture(t)
	f.consumer.cfg.CommitInterval = time.Hour // no periodic commit in this test
	total := f.produce([]string{"a"}, 0, 30)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.consumer.Run(ctx) }()
	require.Eventually(t, func() bool {
		return counter(t, f.reader, "fleetgate_dispatch_records_routed", "", "") == int64(total)
	}, 15*time.Second, 20*time.Millisecond)
	assert.Zero(t, f.committed(), "nothing is committed before the interval or a rebalance")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	assert.Equal(t, int64(total), f.committed(), "the routed records are committed when the member leaves")
}

func TestConsumerDoesNotCommitPastRecordsItCouldNotRouteAndLosesNothing(t *testing.T) {
	f := newConsumerFixture(t)
	pubs := []string{"a", "b"}
	first := f.produce(pubs, 0, 20)
	f.run()
	require.Eventually(t, func() bool { return f.committed() == int64(first) }, 15*time.Second, 20*time.Millisecond)

	require.NoError(t, testRedis.Shutdown())
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			require.NoError(t, testRedis.Restart())
		}
	})
	second := f.produce(pubs, 20, 30)
	require.Eventually(t, func() bool {
		return counter(t, f.reader, "fleetgate_dispatch_route_errors", "", "") >= 2 && f.consumer.Ready() != nil
	}, 15*time.Second, 20*time.Millisecond, "routing fails and readiness drops while Redis is down")
	assert.Equal(t, int64(first), f.committed(), "no offset is committed past an unrouted record")
	lag, _ := f.lag()
	assert.Positive(t, lag, "fleetgate_dispatch_lag_records shows what is fetched and not routed")
	assert.LessOrEqual(t, lag, int64(second))

	require.NoError(t, testRedis.Restart())
	restarted = true
	require.Eventually(t, func() bool { return f.committed() == int64(first+second) }, 15*time.Second, 20*time.Millisecond,
		"everything is routed and committed after Redis returns")
	lag, partitions := f.lag()
	assert.Zero(t, lag, "caught up")
	assert.Positive(t, partitions)
	require.Eventually(t, func() bool { return f.consumer.Ready() == nil }, 5*time.Second, 20*time.Millisecond)
	assert.Zero(t, counter(t, f.reader, "fleetgate_dispatch_dead_letters", "", ""), "an outage sets nothing aside")

	f.take("all")
	f.take("only-a")
	repeats := f.checkReceived("all", pubs, 50) + f.checkReceived("only-a", []string{"a"}, 50)
	t.Logf("repeated deliveries: %d received, %d counted by the router", repeats,
		counter(t, f.reader, "fleetgate_dispatch_deliveries_repeated", "", ""))
	assert.LessOrEqual(t, int64(repeats), counter(t, f.reader, "fleetgate_dispatch_deliveries_repeated", "", ""),
		"every repeat is counted")
}

func TestConsumerStopsCleanlyWhileRoutingFailsAndCommitsNothing(t *testing.T) {
	k := testkit.StartKafka(t, kfake.SeedTopics(1, inbound))
	prod, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.DefaultProduceTopic(inbound))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, prod.ProduceSync(ctx, kafkarecord.Encode(inbound, &kafkarecord.Message{ClientID: "p", Topic: "a", QoS: 1})).FirstErr())

	ix := &topic.Index{}
	_, err = ix.Add(topic.Subscription{ClientID: "s", Filter: "a", QoS: 1})
	require.NoError(t, err)
	queue := &fakeQueue{fail: errors.New("redis down")}
	reader := sdkmetric.NewManualReader()
	log := testkit.DiscardLogger()
	router, err := NewRouter(ix, queue, log, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	require.NoError(t, err)
	var kcfg kafka.Config
	kcfg.RegisterFlags(flagSet())
	kcfg.Brokers, kcfg.Topic = config.StringList{k.Addr()}, inbound
	cfg := defaultConfig(t)
	cfg.Group, cfg.MaxPollRecords = "g", 10
	cfg.RetryMinBackoff, cfg.RetryMaxBackoff, cfg.CommitInterval = 10*time.Millisecond, 50*time.Millisecond, 100*time.Millisecond
	c := NewConsumer(cfg, kcfg, router, NewKafkaDeadLetters(prod, cfg.DeadLetterTopicName(inbound)), log, kafka.Telemetry{})

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	require.Eventually(t, func() bool {
		return counter(t, reader, "fleetgate_dispatch_route_errors", "", "") >= 3 && c.Ready() != nil
	}, 15*time.Second, 10*time.Millisecond, "the batch is retried while it fails")
	stop()
	select {
	case err := <-done:
		require.NoError(t, err, "Run returns nil when cancelled, also while a batch fails")
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	offs, err := kadm.NewClient(prod).FetchOffsets(ctx, "g")
	require.NoError(t, err)
	o, ok := offs.Lookup(inbound, 0)
	assert.True(t, !ok || o.At <= 0, "nothing is committed: %+v", o)
}

// fetchesOf records the MinBytes and MaxWaitMillis of every fetch request
// k receives (in the consumer fixture only the dispatcher's consumer
// fetches; recent fetch versions name topics by id).
func fetchesOf(k *testkit.Kafka) func() (minBytes, maxWait []int32) {
	var mu sync.Mutex
	var mins, waits []int32
	k.Cluster.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		fr := req.(*kmsg.FetchRequest)
		mu.Lock()
		mins, waits = append(mins, fr.MinBytes), append(waits, fr.MaxWaitMillis)
		mu.Unlock()
		return nil, nil, false
	})
	return func() ([]int32, []int32) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(mins), slices.Clone(waits)
	}
}

// dispatch.fetch-min-bytes reaches Kafka's fetch requests (with
// dispatch.fetch-max-wait), and records routed that way are all routed and
// committed, in order; by default a fetch asks for a single byte, Kafka's
// default, answered as soon as a record is there.
func TestConsumerFetchesAskKafkaToGatherRecordsOnlyWithFetchMinBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		minBytes int64
		wait     time.Duration
		wantMin  int32
	}{
		{"the default: a fetch is answered as soon as a record is there", 1, 0, 1},
		{"dispatch.fetch-min-bytes 4KiB, dispatch.fetch-max-wait 20ms", 4 << 10, 20 * time.Millisecond, 4 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newConsumerFixture(t)
			fetches := fetchesOf(f.kafka)
			if tc.wait > 0 {
				f.consumer.cfg.FetchMinBytes, f.consumer.cfg.FetchMaxWait = config.ByteSize(tc.minBytes), tc.wait
			}
			require.NoError(t, f.consumer.cfg.Validate())
			f.run()
			pubs := []string{"a", "b"}
			total := 0
			for i := range 10 {
				total += f.produce(pubs, i, 1) // one produce request per round, far below 4KiB
				time.Sleep(5 * time.Millisecond)
			}
			require.Eventually(t, func() bool { return f.committed() == int64(total) }, 15*time.Second, 20*time.Millisecond,
				"offsets are committed once the records are routed")
			require.Equal(t, total, f.take("all"))
			assert.Zero(t, f.checkReceived("all", pubs, 10))

			mins, waits := fetches()
			require.NotEmpty(t, mins, "the consumer fetched the inbound topic")
			for i := range mins {
				assert.Equal(t, tc.wantMin, mins[i], "fetch.min.bytes of fetch %d", i)
				if tc.wait > 0 {
					assert.Equal(t, int32(tc.wait/time.Millisecond), waits[i], "fetch.max.wait.ms of fetch %d", i)
				}
			}
		})
	}
}
