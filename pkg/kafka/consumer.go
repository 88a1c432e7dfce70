package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// GroupConsumerOptions are the knobs of a consumer-group member.
type GroupConsumerOptions struct {
	// Group is the consumer group id.
	Group string
	// Topics to consume; empty means the configured kafka.topic.
	Topics []string
	// StartAfter is where a partition without a committed offset starts:
	// the zero time (the default) reads it from its first record, any other
	// time from the first record at or after it (ParseStartAt). Never the
	// log end, which would skip records already acknowledged to devices.
	StartAfter time.Time
	// CommitInterval, when positive, switches to marked commits: the caller
	// marks the records whose side effect is durable (MarkCommitRecords)
	// and the client commits the marks every CommitInterval, and before a
	// partition is revoked or the client leaves the group, so the commit is
	// off the caller's loop. OnCommitError, if set, is told of each failed
	// commit (the marks stay and are committed by the next attempt). When
	// zero the caller commits itself (CommitRecords).
	CommitInterval time.Duration
	OnCommitError  func(error)
	// OnRevoked, if set, is told of the partitions taken from this member
	// in a rebalance (with marked commits, after their marks were
	// committed).
	OnRevoked func(map[string][]int32)
	// BeforeRevokedCommit, if set with marked commits, is called when
	// partitions are taken from this member, before their marks are
	// committed: the last chance to mark what was handled.
	BeforeRevokedCommit func(context.Context, map[string][]int32)
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
	opts := append(common,
		kgo.ConsumerGroup(co.Group),
		kgo.ConsumeTopics(topics...),
		// No partition is revoked between a poll and its commit, so a
		// commit never lands on a partition another member already owns
		// and the records of one poll are handled by one member. The
		// caller must call AllowRebalance after each poll.
		kgo.BlockRebalanceOnPoll(),
		// Where a partition without a committed offset starts (a new
		// group, an added partition, expired offsets): before every
		// record acknowledged to a device, unless the operator named a
		// time (franz-go's default, the end, would skip them).
		kgo.ConsumeResetOffset(resetOffset(co.StartAfter)),
	)
	if co.CommitInterval > 0 {
		// Only marked offsets are committed, and a record is marked after
		// its side effect is durable, so a commit never passes a record
		// that was polled but not handled.
		opts = append(opts,
			kgo.AutoCommitMarks(),
			kgo.AutoCommitInterval(co.CommitInterval),
			kgo.AutoCommitCallback(func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				if err == nil {
					err = commitResponseError(resp)
				}
				if err != nil && co.OnCommitError != nil {
					co.OnCommitError(err)
				}
			}),
			// Before a partition moves to another member, its marks are
			// committed, so the next owner does not handle them again.
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
				if co.BeforeRevokedCommit != nil {
					co.BeforeRevokedCommit(ctx, revoked)
				}
				if err := cl.CommitMarkedOffsets(ctx); err != nil && co.OnCommitError != nil {
					co.OnCommitError(err)
				}
				if co.OnRevoked != nil {
					co.OnRevoked(revoked)
				}
			}),
		)
	} else {
		// Offsets are committed explicitly, after the records' side effect
		// is durable: autocommit would commit records that were polled but
		// not yet handled, and lose them if the process dies.
		opts = append(opts, kgo.DisableAutoCommit())
		if co.OnRevoked != nil {
			opts = append(opts, kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
				co.OnRevoked(revoked)
			}))
		}
	}
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka group consumer: %w", err)
	}
	return cl, nil
}

// commitResponseError returns the first partition error of an offset
// commit response, or nil.
func commitResponseError(resp *kmsg.OffsetCommitResponse) error {
	if resp == nil {
		return nil
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("committing %s[%d]: %w", t.Topic, p.Partition, err)
			}
		}
	}
	return nil
}

// ErrLeaveTimeout is what a service returns at shutdown when its group
// member left without Kafka's answer (CloseGroup timed out): its exit
// status then says the shutdown was not clean.
var ErrLeaveTimeout = errors.New("kafka did not answer the consumer group leave within 10s; the group drops this member after its session timeout")

// LeaveTimeout bounds how long a group member waits, on its way out, to
// leave its group and commit its last marks (CloseGroup): a healthy Kafka
// answers in milliseconds.
const LeaveTimeout = 10 * time.Second

// CloseGroup leaves cl's group (committing its marks on the way out, as
// CloseAllowingRebalance does) and closes it, waiting at most LeaveTimeout.
// A broker that stops answering mid-request (a stopped process, a frozen VM)
// holds franz-go's leave for as long as its retries last, minutes, and with
// it the process's exit past any orchestrator's grace period. After the
// timeout CloseGroup logs it and returns false, leaving the close to finish
// in the background: the member is then dropped after the group's session
// timeout, and what it routed since its last commit is handled again by the
// partitions' next owner (duplicates, no loss), as after a SIGKILL.
func CloseGroup(cl *kgo.Client, log *slog.Logger, group string) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl.CloseAllowingRebalance()
	}()
	select {
	case <-done:
		return true
	case <-time.After(LeaveTimeout):
		log.Warn("kafka did not answer the group leave in time; exiting without it: the group reassigns this member's partitions after its session timeout, and records handled since the last commit are handled again",
			"group", group, "waited", LeaveTimeout)
		return false
	}
}
