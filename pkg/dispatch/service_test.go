package dispatch

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
	"github.com/fleetgate/fleetgate/pkg/topic"
)

func TestTheServiceRoutesARecordToASubscriberFoundInTheChangeLog(t *testing.T) {
	testRedis.Require(t)
	k := testkit.StartKafka(t)
	cfg := serviceConfig(k.Addr())
	cfg.Kafka.Partitions = 3
	cfg.Subscriptions.Partitions = 3
	cfg.Dispatch.Group = "service-test"
	cfg.HTTP.Addr = "127.0.0.1:0"
	require.NoError(t, cfg.Validate())
	log := testkit.DiscardLogger()
	ctx := context.Background()

	// The subscriber's session and subscription exist before the
	// dispatcher starts: it must find them in the change log.
	rdb := cfg.Session.Redis.NewClient()
	t.Cleanup(func() { rdb.Close() })
	store := session.New(rdb, cfg.Session)
	conn, err := store.Connect(ctx, session.ConnectRequest{ClientID: "svc-sub", Node: "n1", CleanStart: true, ExpirySeconds: 300, Protocol: 5})
	require.NoError(t, err)
	_, err = store.Subscribe(ctx, "svc-sub", conn.Epoch, []session.Subscription{{FilterKey: session.FilterKey{Filter: "fleet/+/temp"}, QoS: 1}})
	require.NoError(t, err)
	adm, err := kafka.NewAdmin(cfg.Kafka, log)
	require.NoError(t, err)
	t.Cleanup(adm.Close)
	require.NoError(t, kafka.EnsureCompactedTopic(ctx, adm, cfg.Subscriptions.Topic, 3, -1))
	require.NoError(t, kafka.EnsureTopic(ctx, adm, cfg.Kafka))
	prod, err := kafka.NewChangelogProducer(cfg.Kafka, 5*time.Second, log, kafka.Telemetry{})
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	require.NoError(t, subscriptions.NewWriter(prod, cfg.Subscriptions.Topic).Subscribe(ctx, "svc-sub",
		[]topic.Subscription{{ClientID: "svc-sub", Filter: "fleet/+/temp", QoS: 1}}))

	svc := runService(t, cfg)
	require.Eventually(t, func() bool {
		if svc.OpsAddr() == "" {
			return false
		}
		resp, err := http.Get("http://" + svc.OpsAddr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "dispatcher never became ready")

	inbound, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()))
	require.NoError(t, err)
	t.Cleanup(inbound.Close)
	rec := kafkarecord.Encode(cfg.Kafka.Topic, &kafkarecord.Message{ClientID: "sensor-9", Topic: "fleet/9/temp",
		Payload: []byte("21.5"), QoS: 1, MessageID: "m-1", ReceivedAt: time.Now()})
	require.NoError(t, inbound.ProduceSync(ctx, rec).FirstErr())
	rec = kafkarecord.Encode(cfg.Kafka.Topic, &kafkarecord.Message{ClientID: "sensor-9", Topic: "fleet/9/humidity",
		Payload: []byte("40"), QoS: 1, MessageID: "m-2", ReceivedAt: time.Now()})
	require.NoError(t, inbound.ProduceSync(ctx, rec).FirstErr())

	var got []session.QueuedMessage
	require.Eventually(t, func() bool {
		r := session.Round{ClientID: "svc-sub", Epoch: conn.Epoch, Take: 10}
		store.RunRounds(ctx, []*session.Round{&r})
		require.NoError(t, r.Err)
		got = append(got, r.Taken...)
		return len(got) >= 1
	}, 20*time.Second, 50*time.Millisecond, "the matching record never reached the subscriber's queue")
	require.Len(t, got, 1, "only the matching topic is delivered")
	m, err := handoff.DecodeMessage(got[0].Message)
	require.NoError(t, err)
	assert.Equal(t, "fleet/9/temp", m.Topic)
	assert.Equal(t, []byte("21.5"), m.Payload)

	// A record that never will route goes to the dead-letter topic the
	// service created (mqtt.inbound.dead-letter by default), and the
	// partition goes on.
	junk := &kgo.Record{Topic: cfg.Kafka.Topic, Key: []byte("sensor-9"), Value: []byte("junk")}
	require.NoError(t, inbound.ProduceSync(ctx, junk).FirstErr())
	rec = kafkarecord.Encode(cfg.Kafka.Topic, &kafkarecord.Message{ClientID: "sensor-9", Topic: "fleet/9/temp",
		Payload: []byte("22"), QoS: 1, MessageID: "m-3", ReceivedAt: time.Now()})
	require.NoError(t, inbound.ProduceSync(ctx, rec).FirstErr())
	require.Eventually(t, func() bool {
		r := session.Round{ClientID: "svc-sub", Epoch: conn.Epoch, Take: 10}
		store.RunRounds(ctx, []*session.Round{&r})
		require.NoError(t, r.Err)
		got = append(got, r.Taken...)
		return len(got) >= 2
	}, 20*time.Second, 50*time.Millisecond, "the record after the dead letter never reached the subscriber")
	dl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.ConsumeTopics("mqtt.inbound.dead-letter"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(dl.Close)
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	var dead []*kgo.Record
	for len(dead) == 0 {
		fs := dl.PollFetches(pctx)
		require.NoError(t, pctx.Err(), "no dead letter")
		dead = append(dead, fs.Records()...)
	}
	assert.Equal(t, "junk", string(dead[0].Value))
	assert.Equal(t, ReasonUndecodable, header(dead[0], HeaderDeadLetterReason))
}

func TestTheServicePublishesTheWillsOfADeadFrontendsClients(t *testing.T) {
	testRedis.Require(t)
	k := testkit.StartKafka(t)
	cfg := serviceConfig(k.Addr())
	cfg.Kafka.Partitions = 1
	cfg.Subscriptions.Partitions = 1
	cfg.Session.HeartbeatInterval = 20 * time.Millisecond
	cfg.Session.LivenessTTL = 200 * time.Millisecond
	cfg.Dispatch.Group = "service-wills-test"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Wills.SweepInterval = 20 * time.Millisecond
	require.NoError(t, cfg.Validate())
	ctx := context.Background()

	// A frontend sends one heartbeat, registers a client with a will and
	// dies.
	rdb := cfg.Session.Redis.NewClient()
	t.Cleanup(func() { rdb.Close() })
	store := session.New(rdb, cfg.Session)
	node := fmt.Sprintf("frontend-%d", time.Now().UnixNano())
	require.NoError(t, store.Heartbeat(ctx, node))
	_, err := store.Connect(ctx, session.ConnectRequest{ClientID: "svc-will", Node: node, ExpirySeconds: 300, Protocol: 5,
		Will: &session.Will{Topic: "fleet/svc-will/status", Payload: []byte("offline"), QoS: 1, Username: "dev"}})
	require.NoError(t, err)

	runService(t, cfg)

	recs := testkit.NewReader(t, k.Addr(), cfg.Kafka.Topic).Read(1, 30*time.Second)
	m, err := kafkarecord.Decode(recs[0])
	require.NoError(t, err)
	assert.Equal(t, "svc-will", m.ClientID)
	assert.Equal(t, kafkarecord.KindWill, m.Kind)
	assert.Equal(t, node, m.Node)
	assert.Equal(t, "fleet/svc-will/status", m.Topic)
	assert.Equal(t, []byte("offline"), m.Payload)
	assert.Equal(t, "dev", m.Username)
	info, err := store.Session(ctx, "svc-will")
	require.NoError(t, err)
	assert.False(t, info.Connected, "the dead frontend's session is disconnected")
	assert.False(t, info.HasWill)
}

func TestServiceConfigValidateNamesTheWillsSweepInterval(t *testing.T) {
	var cfg ServiceConfig
	fs := flag.NewFlagSet("t", flag.PanicOnError)
	cfg.RegisterFlags(fs)
	assert.Equal(t, time.Second, cfg.Wills.SweepInterval, "default")
	require.NoError(t, fs.Parse([]string{"-wills.sweep-interval=0s"}))
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wills.sweep-interval")
}

// serviceConfig is the dispatcher's default configuration against the
// Kafka at brokers and the test Redis.
func serviceConfig(brokers string) ServiceConfig {
	var cfg ServiceConfig
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	cfg.Kafka.Brokers = config.StringList{brokers}
	cfg.Session.Redis.Addrs = config.StringList{testRedis.Addr}
	return cfg
}

// runService runs a dispatcher with cfg until the end of the test.
func runService(t *testing.T, cfg ServiceConfig) *Service {
	t.Helper()
	tel, err := telemetry.NewMetrics()
	require.NoError(t, err)
	svc := NewService(cfg, testkit.DiscardLogger(), tel)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done, "a cancelled dispatcher returns nil")
	})
	return svc
}

func TestTheServiceMovesTheRetainedMessagesOfAnEarlierBuildIntoTheirBuckets(t *testing.T) {
	testRedis.Require(t)
	k := testkit.StartKafka(t)
	cfg := serviceConfig(k.Addr())
	cfg.Dispatch.Group = "service-retained-test"
	cfg.HTTP.Addr = "127.0.0.1:0"
	require.NoError(t, cfg.Validate())
	ctx := t.Context()
	rdb := cfg.Session.Redis.NewClient()
	t.Cleanup(func() { rdb.Close() })

	// An earlier build kept every retained message in one hash, in the
	// format the buckets use: one is made by storing it and renaming its
	// bucket.
	rets := retained.New(rdb, testkit.DiscardLogger())
	name := fmt.Sprintf("fleet/svc-%d/status", time.Now().UnixNano())
	require.NoError(t, rdb.Del(ctx, retained.LegacyKey, retained.KeyOf(name)).Err())
	require.NoError(t, rets.Apply(ctx, retained.Message{Topic: name, Message: []byte("online")}, retained.Version{TimeMs: 1, ID: "m-1"}, false))
	require.NoError(t, rdb.Rename(ctx, retained.KeyOf(name), retained.LegacyKey).Err())
	got, err := rets.Match(ctx, "fleet/+/status")
	require.NoError(t, err)
	require.Len(t, got, 1, "the earlier build's hash is read")

	runService(t, cfg)
	require.Eventually(t, func() bool {
		n, err := rdb.Exists(ctx, retained.LegacyKey).Result()
		return err == nil && n == 0
	}, 30*time.Second, 50*time.Millisecond, "the dispatcher never emptied the earlier build's hash")
	ok, err := rdb.HExists(ctx, retained.KeyOf(name), name).Result()
	require.NoError(t, err)
	assert.True(t, ok, "the message is in its bucket")
	got, err = rets.Match(ctx, name)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "online", string(got[0].Message))
}
