package archiver

import (
	"context"
	"time"
)

// retry calls fn until it succeeds (true) or ctx is cancelled (false),
// waiting between attempts from minBackoff, doubling up to maxBackoff.
// failed is told of each failed attempt and the wait before the next.
func retry(ctx context.Context, minBackoff, maxBackoff time.Duration, fn func(attempt int) error,
	failed func(attempt int, backoff time.Duration, err error)) bool {
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		err := fn(attempt)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		failed(attempt, backoff, err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
