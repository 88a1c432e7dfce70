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

func TestATaskRunsAgainAndAgainWithoutAllocatingPerRun(t *testing.T) {
	var runs int
	task := NewTask(func() { runs++ })
	for i := 1; i <= 100; i++ {
		task.Run()
		require.Equal(t, i, runs, "Run returns after the work")
	}
	// A worker that has just finished may not be back in time for the
	// next run, which then starts another (a goroutine: allocations);
	// the job, its channel and the work itself are never allocated
	// again, where Run allocates at least the job and its channel.
	perTask := testing.AllocsPerRun(1000, task.Run)
	perRun := testing.AllocsPerRun(1000, func() { Run(func() { runs++ }) })
	t.Logf("allocations per run: Task.Run %.3f, Run %.3f", perTask, perRun)
	assert.Less(t, perTask, 0.5)
	assert.GreaterOrEqual(t, perRun, 2.0)
}

func TestAJobStartsAgainAndAgainWithoutWaitingOrAllocatingPerStart(t *testing.T) {
	ran := make(chan int, 1)
	var runs int
	job := NewJob(func() { runs++; ran <- runs })
	for i := 1; i <= 100; i++ {
		job.Go()
		require.Equal(t, i, <-ran, "each start runs the function once")
	}
	perJob := testing.AllocsPerRun(1000, func() { job.Go(); <-ran })
	perGo := testing.AllocsPerRun(1000, func() { Go(func() { ran <- 0 }); <-ran })
	t.Logf("allocations per start: Job.Go %.3f, Go %.3f", perJob, perGo)
	assert.Less(t, perJob, 0.5)
	assert.GreaterOrEqual(t, perGo, 1.0)
}
