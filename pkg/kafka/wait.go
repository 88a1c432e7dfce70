package kafka

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer is the part of *kgo.Client that ProduceWait uses.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// ProduceWait produces recs and waits until Kafka acknowledged each of them
// or ctx ended, and returns how many Kafka acknowledged and the first
// error.
//
// kgo.Client.ProduceSync alone does not return when ctx ends while a
// produce request is outstanding. An idempotent producer cannot fail a
// record whose request may have reached the broker (it cannot know whether
// the broker wrote it), so such a record waits, ignoring its context and
// kgo.RecordDeliveryTimeout, until the broker answers: ProduceSync then
// waits as long as a stopped broker stays away (seen with a Kafka process
// killed or stopped with SIGSTOP mid-request). ProduceWait runs it on a
// goroutine of its own (which keeps ProduceSync's flush of lingering
// partitions: its records do not wait for the producer's linger) and
// stops waiting when ctx ends. A record still in flight then may be
// written later: the caller treats the write as failed, and a repeat must
// be harmless (change-log entries and hand-backs are). The goroutine ends
// when the broker answers or the client closes.
func ProduceWait(ctx context.Context, p Producer, recs ...*kgo.Record) (acked int, err error) {
	res, err := ProduceSyncWait(ctx, p, recs...)
	if err != nil {
		return 0, err
	}
	for _, r := range res {
		if r.Err == nil {
			acked++
		} else if err == nil {
			err = r.Err
		}
	}
	return acked, err
}

// ProduceSyncWait is ProduceSync that stops waiting when ctx ends, as
// ProduceWait does: the results of every record once Kafka answered for
// all of them, or, when ctx ended first, no results and an error wrapping
// ctx's cause (the records may still be written).
func ProduceSyncWait(ctx context.Context, p Producer, recs ...*kgo.Record) (kgo.ProduceResults, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	done := make(chan kgo.ProduceResults, 1)
	go func() { done <- p.ProduceSync(ctx, recs...) }()
	select {
	case res := <-done:
		return res, nil
	case <-ctx.Done():
		select {
		case res := <-done: // answered at the same moment
			return res, nil
		default:
			return nil, fmt.Errorf("%d records not acknowledged by kafka (they may still be written): %w", len(recs), context.Cause(ctx))
		}
	}
}

// Within runs fn on a goroutine of its own and returns what it returns, or
// ctx's cause once ctx ends first. A request that franz-go has written to a
// broker waits for the broker's answer whatever its context says, and the
// requests queued behind it on that broker wait too: a broker stopped
// mid-request (SIGSTOP, a frozen VM) holds a Ping or an admin request well
// past its deadline. Within bounds the caller's wait, so that a readiness
// check or a node's shutdown is not held by it; fn's goroutine ends when
// the broker answers or the client closes.
func Within(ctx context.Context, fn func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done: // answered at the same moment
			return err
		default:
			return fmt.Errorf("kafka did not answer in time: %w", context.Cause(ctx))
		}
	}
}
