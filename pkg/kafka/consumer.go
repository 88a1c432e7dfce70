package kafka

import (
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// GroupConsumerOptions are the knobs of a consumer-group member.
type GroupConsumerOptions struct {
	// Group is the consumer group id.
	Group string
	// Topics to consume; empty means the configured kafka.topic.
	Topics []string
	// StartAtEnd makes a group without a committed offset start at the end
	// of each partition instead of its start.
	StartAtEnd bool
}

// NewGroupConsumer returns a consumer-group member that commits only when
// the caller says so: the caller polls, makes its side effect durable, calls
// CommitRecords for what it handled and then AllowRebalance. extra options
// (tests: shorter timeouts) are appended last.
func NewGroupConsumer(cfg Config, co GroupConsumerOptions, log *slog.Logger, tel Telemetry, extra ...kgo.Opt) (*kgo.Client, error) {
	if co.Group == "" {
		return nil, fmt.Errorf("creating kafka group consumer: empty group")
	}
	topics := co.Topics
	if len(topics) == 0 {
		topics = []string{cfg.Topic}
	}
	common, err := commonOpts(cfg, log, tel)
	if err != nil {
		return nil, err
	}
	reset := kgo.NewOffset().AtStart()
	if co.StartAtEnd {
		reset = kgo.NewOffset().AtEnd()
	}
	opts := append(common,
		kgo.ConsumerGroup(co.Group),
		kgo.ConsumeTopics(topics...),
		// Offsets are committed explicitly, after the records' side effect
		// is durable: autocommit would commit records that were polled but
		// not yet handled, and lose them if the process dies.
		kgo.DisableAutoCommit(),
		// No partition is revoked between a poll and its commit, so a
		// commit never lands on a partition another member already owns
		// and the records of one poll are handled by one member. The
		// caller must call AllowRebalance after each poll.
		kgo.BlockRebalanceOnPoll(),
		// Where a group without a committed offset starts.
		kgo.ConsumeResetOffset(reset),
	)
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka group consumer: %w", err)
	}
	return cl, nil
}
