package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EnsureCompactedTopic creates topic with cleanup.policy=compact if it does
// not exist, for a change log whose latest record per key is the state (the
// subscription log). replicationFactor -1 uses the broker default. An
// existing topic is left as it is.
func EnsureCompactedTopic(ctx context.Context, adm *kadm.Client, topic string, partitions, replicationFactor int) error {
	return ensureCompactedTopic(ctx, adm, topic, partitions, replicationFactor, 0)
}

// ensureCompactedTopic is EnsureCompactedTopic with min.insync.replicas
// minInsync (0: the brokers' default).
func ensureCompactedTopic(ctx context.Context, adm *kadm.Client, topic string, partitions, replicationFactor, minInsync int) error {
	configs := map[string]*string{
		// Compaction keeps the latest record of every key for ever, so a
		// follower that reads from the start rebuilds the whole state;
		// tombstones are dropped after delete.retention.ms (broker default
		// one day), long after every running follower has applied them.
		"cleanup.policy": kadm.StringPtr("compact"),
	}
	if minInsync > 0 {
		configs["min.insync.replicas"] = kadm.StringPtr(strconv.Itoa(minInsync))
	}
	resp, err := adm.CreateTopic(ctx, int32(partitions), int16(replicationFactor), configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating compacted topic %s: %w", topic, err)
	}
	return nil
}

// ChangelogPartitioner partitions change-log records whose key is
// "clientId\x00rest" by the client id alone, with the Java client's murmur2
// hash: every record of one client lands in one partition and stays in
// order, while the full key stays unique per entry so that compaction keeps
// one record per entry. A key without \x00 is hashed whole, as Kafka's
// default partitioner would.
func ChangelogPartitioner() kgo.Partitioner {
	return kgo.StickyKeyPartitioner(changelogHasher)
}

func changelogHasher(key []byte, n int) int {
	if i := bytes.IndexByte(key, 0); i >= 0 {
		key = key[:i]
	}
	// Kafka strips the sign bit of the hash before the modulo.
	return int(murmur2(key)&0x7fffffff) % n
}

// NewChangelogProducer returns a client for writing a compacted change log
// keyed "clientId\x00rest" (see ChangelogPartitioner), with acks=all and
// idempotence: a write returns only once it is durable.
func NewChangelogProducer(cfg Config, deliveryTimeout time.Duration, log *slog.Logger, tel Telemetry) (*kgo.Client, error) {
	opts, err := commonOpts(cfg, log, tel)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		// An MQTT SUBACK may only go out once the subscription is
		// durable: acks=all plus the idempotent producer (default, kept
		// on), so retries neither duplicate nor reorder a client's changes.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// A client waiting for SUBACK must get an answer.
		kgo.RecordDeliveryTimeout(deliveryTimeout),
		// A failed partition waits for a metadata refresh before its
		// records are retried or expired; the default 5s minimum age
		// would hold them past a short delivery timeout.
		kgo.MetadataMinAge(time.Second),
		// One client's changes in one partition, one entry per key.
		kgo.RecordPartitioner(ChangelogPartitioner()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka change-log producer: %w", err)
	}
	return cl, nil
}

// NewChangelogConsumer returns a client that reads every partition of topic
// from its start, without a consumer group: every follower of a change log
// needs every record, and it keeps no committed position because it rebuilds
// its state from the start each time it boots.
func NewChangelogConsumer(cfg Config, topic string, log *slog.Logger, tel Telemetry) (*kgo.Client, error) {
	opts, err := commonOpts(cfg, log, tel)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ConsumeTopics(topic),
		// From the start, and back to the start if compaction or
		// retention moved it past our position: the state is the whole log.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka change-log consumer: %w", err)
	}
	return cl, nil
}

// murmur2 is the Java client's murmur2 (Utils.murmur2), as franz-go's default
// partitioner uses it; franz-go does not export it.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[3])<<24 + uint32(b[2])<<16 + uint32(b[1])<<8 + uint32(b[0])
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
