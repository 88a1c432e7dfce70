package dispatch

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/kafka"
)

// Config configures the dispatcher's consumer.
type Config struct {
	// Group is the Kafka consumer group every dispatcher joins.
	Group string `yaml:"group"`
	// MaxPollRecords bounds the records of one routed batch.
	MaxPollRecords int `yaml:"max_poll_records"`
	// BatchWait is how long a batch gathers records after its first
	// before it is routed (0: routed as soon as polled). Each batch pays
	// the same fixed work (the subscription index's catch-up, a Redis
	// pipeline, the fetches behind it) however few records it holds, so
	// at low rates a wait divides that work among more records, at the
	// cost of up to this much more delivery latency. An idle dispatcher
	// pays nothing for it: the wait starts with a record.
	BatchWait time.Duration `yaml:"batch_wait"`
	// QuietWait is BatchWait after a batch that gave no session a message:
	// records no subscription matches (telemetry read only from Kafka) are
	// routed in fewer, larger batches, and the first message for a
	// subscriber after them waits at most this much more.
	QuietWait time.Duration `yaml:"quiet_wait"`
	// FetchMinBytes is how many bytes of records Kafka gathers before it
	// answers a fetch, waiting at most FetchMaxWait (Kafka's
	// fetch.min.bytes and fetch.max.wait.ms); 1, Kafka's default, answers
	// as soon as a record is there. Above 1, a fetch carries more records
	// at low rates (fewer fetches, each a request, a response and the
	// wake-ups between them), for up to FetchMaxWait more latency when
	// the rate is low and a fetch every FetchMaxWait while idle.
	FetchMinBytes config.ByteSize `yaml:"fetch_min_bytes"`
	FetchMaxWait  time.Duration   `yaml:"fetch_max_wait"`
	// StartAt is where a partition without a committed offset (a new
	// group, a partition added later, offsets Kafka expired) starts:
	// "start", the default, routes every record the topic still holds, so
	// none acknowledged to a device is skipped; an RFC 3339 time skips the
	// records before it (kafka.ParseStartAt).
	StartAt string `yaml:"start_at"`
	// RetryMinBackoff and RetryMaxBackoff bound the wait between attempts
	// to route a batch while the session store fails.
	RetryMinBackoff time.Duration `yaml:"retry_min_backoff"`
	RetryMaxBackoff time.Duration `yaml:"retry_max_backoff"`
	// ExpirySweepInterval is how often expired sessions' subscriptions are
	// removed from the change log (ExpirySweeper).
	ExpirySweepInterval time.Duration `yaml:"expiry_sweep_interval"`
	// SessionTimeout is the consumer group session timeout: how long the
	// partitions of a dispatcher that died stay unrouted before the group
	// gives them to the others.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// HeartbeatInterval is how often a member heartbeats to the group
	// coordinator. It is also how soon the survivors learn of a rebalance
	// (a member that left or was dropped), so it adds to the failover gap.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// CommitInterval is how often the offsets of routed batches are
	// committed. Committing is off the routing loop; a dispatcher that
	// dies has its last CommitInterval of records routed again.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// DeadLetterTopic is where records that can never be routed go;
	// empty is "<kafka.topic>.dead-letter".
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// MaxBatchBytes bounds the deliveries a routed batch holds in memory
	// before they are enqueued (WithMaxBatchBytes).
	MaxBatchBytes config.ByteSize `yaml:"max_batch_bytes"`
	// FullQueueWait bounds how long a batch waits for connected sessions
	// at their queue's bound before session.queue-full-policy drops
	// anything (WithFullQueueWait); 0 never waits.
	FullQueueWait time.Duration `yaml:"full_queue_wait"`
	// RedisReplicaAcks is how many replicas of each Redis primary must
	// hold a routed batch's writes before its offsets are committed (Redis
	// WAIT), at most the replicas connected; 0 commits without asking.
	RedisReplicaAcks int `yaml:"redis_replica_acks"`
	// RedisReplicaTimeout bounds each wait for those acknowledgements.
	RedisReplicaTimeout time.Duration `yaml:"redis_replica_timeout"`
}

// DefaultFullQueueWait is dispatch.full-queue-wait's default.
const DefaultFullQueueWait = 2 * time.Second

// DeadLetterTopicName is dispatch.dead-letter-topic, else
// "<inbound>.dead-letter".
func (c *Config) DeadLetterTopicName(inbound string) string {
	if c.DeadLetterTopic != "" {
		return c.DeadLetterTopic
	}
	return inbound + ".dead-letter"
}

// RegisterFlags registers the flags under "dispatch.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Group, "dispatch.group", "fleetgate-dispatcher", "Kafka consumer group of the dispatchers; all dispatchers of one cluster share it.")
	fs.IntVar(&c.MaxPollRecords, "dispatch.max-poll-records", 1000, "Most records routed (and committed) as one batch.")
	c.FetchMinBytes = 1
	fs.Var(&c.FetchMinBytes, "dispatch.fetch-min-bytes", "Bytes of records Kafka gathers before it answers a fetch, waiting at most dispatch.fetch-max-wait (Kafka's fetch.min.bytes). 1 (Kafka's default) answers as soon as a record is there (lowest latency). Above 1, e.g. 2KiB, a fetch carries more records at low rates: 0.55x the dispatcher's CPU at 2,000 devices x 1 msg/s, for up to dispatch.fetch-max-wait more end-to-end latency when the inbound topic is quiet, and a fetch every dispatch.fetch-max-wait while it is idle (4 % of a core at 10ms on a 2-core VM; docs/capacity.md).")
	fs.DurationVar(&c.FetchMaxWait, "dispatch.fetch-max-wait", 10*time.Millisecond, "With dispatch.fetch-min-bytes above 1: the longest Kafka holds a fetch for those bytes (Kafka's fetch.max.wait.ms; at least 10ms). Unused at 1.")
	fs.DurationVar(&c.BatchWait, "dispatch.batch-wait", 0, "How long a batch gathers records after its first before it is routed, up to dispatch.max-poll-records. 0 routes what each poll returns at once (lowest latency). Each batch pays a fixed cost (the subscription index's catch-up, a Redis pipeline, a Kafka fetch) however few records it holds: at low rates, e.g. many devices sending every few seconds, a few milliseconds here divide it among more records, for up to this much more end-to-end latency (docs/capacity.md).")
	fs.DurationVar(&c.QuietWait, "dispatch.quiet-wait", 5*time.Millisecond, "dispatch.batch-wait after a batch that gave no session a message: records no subscription matches (a fleet's telemetry, read from Kafka by other consumers) are routed in batches of this long, and the first message for a subscriber after such a batch waits up to this much more; batches that deliver keep dispatch.batch-wait. 0: no such wait.")
	c.MaxBatchBytes = defaultMaxBatchBytes
	fs.Var(&c.MaxBatchBytes, "dispatch.max-batch-bytes", "Bound on the deliveries (one copy of the message per subscriber) a batch holds in memory: past it they are enqueued and the batch goes on, so a message routed to 10,000 sessions is not copied 10,000 times at once.")
	fs.StringVar(&c.StartAt, "dispatch.start-at", "start", "Where a partition without a committed offset (new group, added partition, expired offsets) starts: start (every record Kafka holds; no acknowledged message is skipped) or an RFC 3339 time (skip the records before it, e.g. history on a first deployment against an old topic).")
	fs.DurationVar(&c.RetryMinBackoff, "dispatch.retry-min-backoff", 100*time.Millisecond, "First wait before routing a batch again after the session store failed.")
	fs.DurationVar(&c.RetryMaxBackoff, "dispatch.retry-max-backoff", 5*time.Second, "Longest wait between attempts to route a batch.")
	fs.DurationVar(&c.SessionTimeout, "dispatch.session-timeout", 6*time.Second, "Consumer group session timeout: the partitions of a dispatcher that died are routed by the others after this. Must lie within the broker's group.min.session.timeout.ms (Kafka's default 6s) and group.max.session.timeout.ms.")
	fs.DurationVar(&c.HeartbeatInterval, "dispatch.heartbeat-interval", 500*time.Millisecond, "How often a dispatcher heartbeats to the group coordinator; the others learn this soon that a dispatcher left or died.")
	fs.DurationVar(&c.CommitInterval, "dispatch.commit-interval", time.Second, "How often the offsets of routed batches are committed, in the background; a dispatcher that dies has at most this much routed again (duplicates, not loss).")
	fs.StringVar(&c.DeadLetterTopic, "dispatch.dead-letter-topic", "", "Kafka topic of the records the dispatchers can never route (undecodable, an invalid topic name, a delivery Redis refuses for good), with headers naming their source topic, partition, offset and the error; empty is <kafka.topic>.dead-letter. Created like the other topics.")
	fs.DurationVar(&c.FullQueueWait, "dispatch.full-queue-wait", DefaultFullQueueWait, "How long a batch waits, at most, for connected sessions whose queues are at their bound (session.max-queued-messages, -bytes) to take some, before session.queue-full-policy drops anything. A subscriber that reads as fast as messages arrive then loses nothing when a dispatcher routes seconds of traffic at once (after a failover or restart). A session that keeps its queue full for all of it holds its partition up once a minute at most; 0 never waits (the queue bound drops at once).")
	fs.IntVar(&c.RedisReplicaAcks, "dispatch.redis-replica-acks", 1, "Replicas of each Redis primary that must hold the writes of routed records (their queued deliveries) before the records' offsets are committed, asked with Redis WAIT at most every 100ms, as Kafka's acks=all waits for in-sync replicas; a primary with fewer replicas connected waits for those it has, one with none (a single Redis) for none. When the primaries or their replication IDs change before a round confirmed the writes (a replica promoted, a primary restarted), the dispatcher routes again from the committed offsets: a failover loses no acknowledged message. 0 commits without asking (a promoted replica may then lack the last writes; docs/operations.md, Redis failover).")
	fs.DurationVar(&c.RedisReplicaTimeout, "dispatch.redis-replica-timeout", time.Second, "Longest one round waits for dispatch.redis-replica-acks replicas to acknowledge; a round that gets fewer is repeated and the offsets stay uncommitted meanwhile (fleetgate_dispatch_unreplicated_seconds). A replica that disconnects still counts while its primary keeps its replication ID (Redis Cluster may promote it with what it had): the commits wait until it is back; after removing a replica for good, restart the dispatchers.")
	fs.DurationVar(&c.ExpirySweepInterval, "dispatch.expiry-sweep-interval", 10*time.Second, "How often the subscriptions of sessions that expired are removed from the subscription change log.")
}

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.Group == "" {
		errs = append(errs, errors.New("dispatch.group: must not be empty"))
	}
	if c.MaxBatchBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("dispatch.max-batch-bytes: %d must be at least 64KiB", c.MaxBatchBytes))
	}
	if c.BatchWait < 0 || c.BatchWait > time.Second {
		errs = append(errs, fmt.Errorf("dispatch.batch-wait: %s must be between 0 and 1s", c.BatchWait))
	}
	if c.QuietWait < 0 || c.QuietWait > time.Second {
		errs = append(errs, fmt.Errorf("dispatch.quiet-wait: %s must be between 0 and 1s", c.QuietWait))
	}
	if c.FetchMinBytes < 1 || c.FetchMinBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("dispatch.fetch-min-bytes: %d must be between 1 and 64MiB", c.FetchMinBytes))
	}
	if c.FetchMinBytes > 1 && (c.FetchMaxWait < 10*time.Millisecond || c.FetchMaxWait > 10*time.Second || c.FetchMaxWait%time.Millisecond != 0) {
		errs = append(errs, fmt.Errorf("dispatch.fetch-max-wait: %s must be whole milliseconds between 10ms and 10s", c.FetchMaxWait))
	}
	if c.MaxPollRecords < 1 {
		errs = append(errs, fmt.Errorf("dispatch.max-poll-records: %d must be at least 1", c.MaxPollRecords))
	}
	if _, err := kafka.ParseStartAt(c.StartAt); err != nil {
		errs = append(errs, fmt.Errorf("dispatch.start-at: %w", err))
	}
	if c.RetryMinBackoff <= 0 {
		errs = append(errs, fmt.Errorf("dispatch.retry-min-backoff: %s must be positive", c.RetryMinBackoff))
	}
	if c.RetryMaxBackoff < c.RetryMinBackoff {
		errs = append(errs, fmt.Errorf("dispatch.retry-max-backoff: %s must not be below dispatch.retry-min-backoff %s", c.RetryMaxBackoff, c.RetryMinBackoff))
	}
	if c.RedisReplicaAcks < 0 || c.RedisReplicaAcks > 16 {
		errs = append(errs, fmt.Errorf("dispatch.redis-replica-acks: %d must be between 0 and 16", c.RedisReplicaAcks))
	}
	if c.RedisReplicaAcks > 0 && (c.RedisReplicaTimeout < 10*time.Millisecond || c.RedisReplicaTimeout > time.Minute) {
		errs = append(errs, fmt.Errorf("dispatch.redis-replica-timeout: %s must be between 10ms and 1m", c.RedisReplicaTimeout))
	}
	if c.SessionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("dispatch.session-timeout: %s must be at least 1s", c.SessionTimeout))
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatInterval >= c.SessionTimeout {
		errs = append(errs, fmt.Errorf("dispatch.heartbeat-interval: %s must be positive and below dispatch.session-timeout %s", c.HeartbeatInterval, c.SessionTimeout))
	}
	if c.CommitInterval <= 0 {
		errs = append(errs, fmt.Errorf("dispatch.commit-interval: %s must be positive", c.CommitInterval))
	}
	if c.FullQueueWait < 0 || c.FullQueueWait > time.Minute {
		errs = append(errs, fmt.Errorf("dispatch.full-queue-wait: %s must be between 0 and 1m", c.FullQueueWait))
	}
	if c.ExpirySweepInterval <= 0 {
		errs = append(errs, fmt.Errorf("dispatch.expiry-sweep-interval: %s must be positive", c.ExpirySweepInterval))
	}
	return errors.Join(errs...)
}
