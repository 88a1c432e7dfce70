package session

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type work struct{ ran bool }

func TestABatcherSharesBatchesAmongWaitingCallsAndKeepsMaxInFlight(t *testing.T) {
	release := make(chan struct{})
	var inFlight, most, held atomic.Int64
	var mu sync.Mutex
	var sizes []int
	b := &Batcher[work]{
		Max: 2,
		Run: func(_ context.Context, calls []*work) {
			held.Add(int64(len(calls)))
			n := inFlight.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release
			for _, c := range calls {
				c.ran = true
			}
			inFlight.Add(-1)
		},
		Observe: func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() },
	}
	const calls = 50
	ws := make([]*work, calls)
	errs := make([]error, calls)
	var wg sync.WaitGroup
	do := func(i int) {
		ws[i] = &work{}
		wg.Go(func() { errs[i] = b.Do(context.Background(), ws[i]) })
	}
	// A first call holds one batch; the next one starts the second batch,
	// and the rest wait behind both.
	do(0)
	require.Eventually(t, func() bool { return inFlight.Load() == 1 }, 5*time.Second, time.Millisecond)
	for i := 1; i < calls; i++ {
		do(i)
	}
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return inFlight.Load() == 2 && int(held.Load())+len(b.queue) == calls
	}, 5*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	for i := range ws {
		require.NoError(t, errs[i])
		require.True(t, ws[i].ran)
	}
	assert.EqualValues(t, 2, most.Load(), "batches in flight")
	total, biggest := 0, 0
	for _, n := range sizes {
		total += n
		biggest = max(biggest, n)
	}
	assert.Equal(t, calls, total)
	assert.Greater(t, biggest, 1, "calls that waited went out together: %v", sizes)
}

func TestABatchCallWhoseContextEndedBeforeItRanGetsTheContextsError(t *testing.T) {
	release, running := make(chan struct{}), make(chan struct{}, 1)
	b := &Batcher[work]{Max: 1, Run: func(_ context.Context, calls []*work) {
		select {
		case running <- struct{}{}:
		default:
		}
		<-release
		for _, c := range calls {
			c.ran = true
		}
	}}
	first := make(chan error, 1)
	go func() { first <- b.Do(context.Background(), &work{}) }()
	<-running
	// The first call holds the only batch; the second waits and gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	w := &work{}
	err := b.Do(ctx, w)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	require.NoError(t, <-first)
	// The next call finds the abandoned one left out of its batch.
	require.NoError(t, b.Do(context.Background(), &work{}))
	assert.False(t, w.ran, "a call whose caller gave up before its batch is not run")
}
