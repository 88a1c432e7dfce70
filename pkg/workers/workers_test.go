package workers

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunReturnsAfterTheWorkAndGoDoesNotWait(t *testing.T) {
	var ran atomic.Bool
	Run(func() { time.Sleep(10 * time.Millisecond); ran.Store(true) })
	assert.True(t, ran.Load(), "Run returns after the work")

	release := make(chan struct{})
	var done sync.WaitGroup
	done.Add(1)
	Go(func() { <-release; done.Done() })
	close(release) // Go returned while its work still waited
	done.Wait()
}

func TestWorkRunsConcurrentlyWhenNoWorkerIsFree(t *testing.T) {
	// 50 pieces of work that each wait for all the others: they can only
	// finish if each got a worker of its own.
	const n = 50
	var started sync.WaitGroup
	started.Add(n)
	var done sync.WaitGroup
	done.Add(n)
	for range n {
		Go(func() {
			started.Done()
			started.Wait()
			done.Done()
		})
	}
	done.Wait()
}

func TestAWorkerIsReusedAndIdleWorkersEnd(t *testing.T) {
	base := runtime.NumGoroutine()
	for range 100 {
		Run(func() {})
	}
	// One after the other, the same worker took every job.
	assert.LessOrEqual(t, runtime.NumGoroutine(), base+1)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= base }, 5*time.Second, 20*time.Millisecond,
		"an idle worker ends after a second")
}
