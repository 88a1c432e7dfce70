package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// TopicDurability is what a Kafka cluster does to keep the records of a
// topic it acknowledged. The producer asks for acks=all: the leader answers
// once every in-sync replica has the record, and refuses it (NOT_ENOUGH_
// REPLICAS) while fewer than min.insync.replicas are in sync. So a record a
// device got its PUBACK for is on at least min.insync.replicas brokers.
type TopicDurability struct {
	Topic string
	// Brokers in the cluster.
	Brokers int
	// Replicas is the fewest replicas of any partition of the topic.
	Replicas int
	// MinInsync is min.insync.replicas in force for the topic (its own or
	// the brokers' default); 0 when the cluster did not say.
	MinInsync int
}

// Advice says what the settings mean for acknowledged records: a warning
// when a single failure can lose one or stop every publish, information
// otherwise.
func (d TopicDurability) Advice() (slog.Level, string) {
	switch {
	case d.Brokers == 1:
		return slog.LevelInfo, "one Kafka broker: a record it acknowledged is as safe as that broker's disk; in production run three brokers, replication factor 3, min.insync.replicas 2"
	case d.Replicas == 1:
		return slog.LevelWarn, "replication factor 1: a record Kafka acknowledged is lost with the disk of the one broker that has it; recreate the topic with replication factor 3 (kafka.replication-factor) and min.insync.replicas 2"
	case d.MinInsync == 1:
		return slog.LevelWarn, "min.insync.replicas 1: Kafka may acknowledge a record only its leader has, and a failover to a follower then loses it; set min.insync.replicas 2 on the topic"
	case d.MinInsync >= d.Replicas:
		return slog.LevelWarn, "min.insync.replicas is the replication factor: with one replica's broker down Kafka refuses every record of its partitions and publishes get errors; set it below the replication factor (3 and 2)"
	case d.MinInsync == 0:
		return slog.LevelInfo, "min.insync.replicas could not be read; with replication factor " + strconv.Itoa(d.Replicas) + " make it at least 2"
	}
	return slog.LevelInfo, "acknowledged records are on at least " + strconv.Itoa(d.MinInsync) + " brokers"
}

// CheckTopicDurability reads the topic's replicas, min.insync.replicas and
// the cluster's brokers.
func CheckTopicDurability(ctx context.Context, adm *kadm.Client, topic string) (TopicDurability, error) {
	d := TopicDurability{Topic: topic}
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return d, fmt.Errorf("listing the brokers: %w", err)
	}
	d.Brokers = len(brokers)
	topics, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return d, fmt.Errorf("describing topic %s: %w", topic, err)
	}
	td, ok := topics[topic]
	switch {
	case !ok:
		return d, fmt.Errorf("topic %s does not exist", topic)
	case td.Err != nil:
		return d, fmt.Errorf("describing topic %s: %w", topic, td.Err)
	}
	for _, p := range td.Partitions {
		if n := len(p.Replicas); d.Replicas == 0 || n < d.Replicas {
			d.Replicas = n
		}
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err == nil {
		var rc kadm.ResourceConfig
		if rc, err = rcs.On(topic, nil); err == nil {
			err = rc.Err
		}
		for _, c := range rc.Configs {
			if c.Key == "min.insync.replicas" && c.Value != nil {
				d.MinInsync, _ = strconv.Atoi(*c.Value)
			}
		}
	}
	if err != nil {
		// Reading configs may be refused (ACLs) where metadata is not.
		return d, fmt.Errorf("reading the configs of topic %s: %w", topic, err)
	}
	return d, nil
}

// DurabilityWatch checks a topic's durability (at most every interval),
// logs its advice when it changes and reports it as gauges.
type DurabilityWatch struct {
	adm      *kadm.Client
	topic    string
	log      *slog.Logger
	interval time.Duration

	mu       sync.Mutex
	checked  time.Time
	last     *TopicDurability
	failures int // checks failed in a row
}

// durabilityRetry is how soon a failed durability check is repeated.
const durabilityRetry = 10 * time.Second

// NewDurabilityWatch registers fleetgate_kafka_topic_replicas,
// fleetgate_kafka_topic_min_insync_replicas and fleetgate_kafka_brokers.
func NewDurabilityWatch(adm *kadm.Client, topic string, log *slog.Logger, mp metric.MeterProvider, interval time.Duration) (*DurabilityWatch, error) {
	w := &DurabilityWatch{adm: adm, topic: topic, log: log, interval: interval}
	m := mp.Meter(meterScope)
	observe := func(field func(TopicDurability) int, topical bool) metric.Int64Callback {
		return func(_ context.Context, o metric.Int64Observer) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.last == nil {
				return nil
			}
			if topical {
				o.Observe(int64(field(*w.last)), metric.WithAttributes(attribute.String("topic", w.topic)))
			} else {
				o.Observe(int64(field(*w.last)))
			}
			return nil
		}
	}
	_, err1 := m.Int64ObservableGauge("fleetgate_kafka_topic_replicas",
		metric.WithDescription("Fewest replicas of any partition of the inbound topic (its replication factor). Checked at start and every 5 minutes."),
		metric.WithInt64Callback(observe(func(d TopicDurability) int { return d.Replicas }, true)))
	_, err2 := m.Int64ObservableGauge("fleetgate_kafka_topic_min_insync_replicas",
		metric.WithDescription("min.insync.replicas in force for the inbound topic: the brokers that have every record Kafka acknowledged (acks=all). 0 when the cluster did not say."),
		metric.WithInt64Callback(observe(func(d TopicDurability) int { return d.MinInsync }, true)))
	_, err3 := m.Int64ObservableGauge("fleetgate_kafka_brokers",
		metric.WithDescription("Brokers in the Kafka cluster, as of the last durability check."),
		metric.WithInt64Callback(observe(func(d TopicDurability) int { return d.Brokers }, false)))
	errs := []error{err1, err2, err3}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("creating the Kafka durability metrics: %w", err)
	}
	return w, nil
}

// CheckIfDue checks unless the last check is younger than the interval.
func (w *DurabilityWatch) CheckIfDue(ctx context.Context) {
	w.mu.Lock()
	due := time.Since(w.checked) >= w.interval
	w.mu.Unlock()
	if due {
		w.Check(ctx)
	}
}

// Check reads the topic's durability and logs its advice when it changed.
func (w *DurabilityWatch) Check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d TopicDurability
	err := Within(cctx, func(ctx context.Context) error {
		var err error
		d, err = CheckTopicDurability(ctx, w.adm, w.topic)
		return err
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checked = time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// Again in durabilityRetry, not in a whole interval: the first
		// check may come before a topic just created is known everywhere.
		w.checked = w.checked.Add(min(durabilityRetry, w.interval) - w.interval)
		w.failures++
		switch {
		case w.failures == 2 && errors.Is(err, context.DeadlineExceeded):
			// Twice in a row without an answer: the broker, not ACLs.
			w.log.Warn("kafka durability: cannot read the inbound topic's replication and min.insync.replicas: kafka did not answer within 10s; retrying", "topic", w.topic, "err", err)
		case w.failures == 2:
			// Twice in a row: ACLs (DescribeConfigs), not a topic in
			// creation. Said once; the gauges stay unset meanwhile.
			w.log.Warn("kafka durability: cannot read the inbound topic's replication and min.insync.replicas (grant the user Describe and DescribeConfigs on it, docs/operations.md, Kafka access); retrying", "topic", w.topic, "err", err)
		default:
			w.log.Debug("could not read the inbound topic's durability", "topic", w.topic, "err", err)
		}
		return
	}
	w.failures = 0
	if w.last != nil && *w.last == d {
		return
	}
	w.last = &d
	level, advice := d.Advice()
	w.log.Log(ctx, level, "kafka durability: "+advice, "topic", d.Topic, "replication_factor", d.Replicas,
		"min_insync_replicas", d.MinInsync, "brokers", d.Brokers)
}
