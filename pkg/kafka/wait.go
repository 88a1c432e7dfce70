package kafka

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer is the part of *kgo.Client that ProduceWait uses.
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

// ProduceWait produces recs and waits until Kafka acknowledged each of them
// or ctx ended, and returns how many Kafka acknowledged and the first
// error.
//
// Unlike kgo.Client.ProduceSync it returns when ctx ends even while a
// produce request is outstanding. An idempotent producer cannot fail a
// record whose request may have reached the broker (it cannot know whether
// the broker wrote it), so such a record waits, ignoring its context and
// kgo.RecordDeliveryTimeout, until the broker answers: ProduceSync then
// waits as long as a stopped broker stays away (seen with a Kafka process
// killed or stopped with SIGSTOP mid-request). A record still in flight
// when ctx ends may be written later: the caller treats the write as
// failed, and a repeat must be harmless (change-log entries and hand-backs
// are).
func ProduceWait(ctx context.Context, p Producer, recs ...*kgo.Record) (acked int, err error) {
	if len(recs) == 0 {
		return 0, nil
	}
	var (
		mu    sync.Mutex
		ok    int
		left  = len(recs)
		first error
		done  = make(chan struct{})
	)
	for _, r := range recs {
		p.Produce(ctx, r, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else if first == nil {
				first = err
			}
			if left--; left == 0 {
				close(done)
			}
		})
	}
	select {
	case <-done:
		mu.Lock()
		defer mu.Unlock()
		return ok, first
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		if left == 0 {
			return ok, first
		}
		return ok, fmt.Errorf("%d of %d records not acknowledged by kafka (they may still be written): %w", left, len(recs), context.Cause(ctx))
	}
}
