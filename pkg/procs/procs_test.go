package procs

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests that start a Controller change the process's GOMAXPROCS: none
// runs in parallel, and each gives the value back.

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var policy = Policy{Max: 4, Up: DefaultUp, Down: DefaultDown, Calm: 3}

// run feeds the policy the cores used in each interval, from procs, and
// returns the processors after each.
func run(p Policy, procs int, used ...float64) []int {
	s := State{Procs: procs}
	var out []int
	for _, u := range used {
		s = p.Next(s, u)
		out = append(out, s.Procs)
	}
	return out
}

func TestABusyProcessGetsItsProcessorsBackAfterTwoBusyIntervalsUpToTheCeiling(t *testing.T) {
	// One processor 70 % busy twice: one more.
	assert.Equal(t, []int{1, 2}, run(policy, 1, 0.7, 0.7))
	// Saturated at one, and more threads in system calls: as many as keep
	// each at Down.
	assert.Equal(t, []int{1, 3}, run(policy, 1, 1.3, 1.3))
	// Never above the ceiling, however busy.
	assert.Equal(t, []int{1, 4, 4, 4}, run(policy, 1, 3.9, 4.0, 4.0, 4.0))
	// At the ceiling, busy: it stays.
	assert.Equal(t, []int{4, 4}, run(policy, 4, 3.5, 3.5))
	// One busy interval alone (a burst) raises nothing.
	assert.Equal(t, []int{1, 1, 1, 1, 1}, run(policy, 1, 0.9, 0.2, 0.9, 0.1, 0.9))
}

func TestProcessorsAreTakenAwayByTheMeanOfAWindowOfCalmIntervals(t *testing.T) {
	// 0.3 of a core on 4: 1 would do it at 50 %, at the window's end.
	assert.Equal(t, []int{4, 4, 1}, run(policy, 4, 0.3, 0.2, 0.1))
	// The fewest that keep the window's mean at Down: 0.7 needs 2.
	assert.Equal(t, []int{4, 4, 2}, run(policy, 4, 0.3, 1.4, 0.4))
	// Bursts within the window do not keep the processors: the mean does.
	assert.Equal(t, []int{2, 2, 1}, run(policy, 2, 0.1, 1.1, 0.1))
	// A window whose mean one fewer could not carry keeps them, and the
	// next window starts afresh.
	assert.Equal(t, []int{4, 4, 4, 4, 4, 1}, run(policy, 4, 0.3, 2.0, 2.5, 0.2, 0.2, 0.2))
	// One processor is the floor.
	assert.Equal(t, []int{1, 1, 1, 1}, run(policy, 1, 0, 0, 0, 0))
}

func TestBetweenDownAndUpTheProcessorsStay(t *testing.T) {
	// Over Down for one fewer than 2, under Up for 1.
	assert.Equal(t, []int{2, 2, 2, 2}, run(policy, 2, 0.55, 0.6, 0.7, 0.55))
	assert.Equal(t, []int{1, 1, 1, 1}, run(policy, 1, 0.52, 0.58, 0.6, 0.55))
	// Between Down and Up for 3 of 4: they stay.
	assert.Equal(t, []int{3, 3, 3}, run(policy, 3, 1.1, 1.7, 1.5))
	// A load that falls when the processors do (fewer wake-ups) and
	// rises with them does not make them swing: 0.45 on 2 is 0.35 on 1.
	p := policy
	p.Max = 2
	s := State{Procs: 2}
	var seen []int
	for i := 0; i < 12; i++ {
		used := 0.45
		if s.Procs == 1 {
			used = 0.35
		}
		s = p.Next(s, used)
		seen = append(seen, s.Procs)
	}
	assert.Equal(t, []int{2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, seen)
}

func TestAQuietProcessOnOneProcessorIsSampledLessOften(t *testing.T) {
	const i = 50 * time.Millisecond
	assert.Equal(t, 4*i, wait(State{Procs: 1}, 0.01, i), "idle on one: every 200 ms")
	assert.Equal(t, i, wait(State{Procs: 1}, 0.2, i), "load on one: every interval, to see it grow")
	assert.Equal(t, i, wait(State{Procs: 2}, 0.01, i), "idle on two: every interval, to take one away")
}

func TestAdaptiveIsTheDefaultAndCanBeTurnedOff(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	assert.True(t, c.Adaptive)
	require.NoError(t, fs.Parse([]string{"-procs.adaptive=false"}))
	assert.False(t, c.Adaptive)
	assert.Nil(t, Start(c, quiet), "off: no controller")
	assert.Zero(t, Start(c, quiet).Changes())
	Start(c, quiet).Stop() // a nil Controller's Stop does nothing
}

// keepProcs gives the process its GOMAXPROCS back after the test.
func keepProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
}

func TestTheControllerSetsGOMAXPROCSFromTheCPUItReads(t *testing.T) {
	keepProcs(t)
	runtime.GOMAXPROCS(4)
	// A CPU clock the test drives: each interval adds `rate` cores.
	var mu sync.Mutex
	var cpu time.Duration
	var rate float64
	last := time.Now()
	clock := func() (time.Duration, bool) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		cpu += time.Duration(rate * float64(now.Sub(last)))
		last = now
		return cpu, true
	}
	setRate := func(r float64) { mu.Lock(); rate = r; mu.Unlock() }

	c := start(policy, 10*time.Millisecond, clock, quiet)
	require.NotNil(t, c)
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 10*time.Second, 5*time.Millisecond, "idle: one processor")

	setRate(1.0) // saturated at one
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) >= 2 }, 10*time.Second, 5*time.Millisecond, "busy: processors back")
	setRate(3.9)
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 4 }, 10*time.Second, 5*time.Millisecond, "busier: the ceiling")
	setRate(0.2)
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 10*time.Second, 5*time.Millisecond, "calm again: one")
	assert.GreaterOrEqual(t, c.Changes(), int64(3))

	c.Stop()
	assert.Equal(t, 4, runtime.GOMAXPROCS(0), "Stop gives the starting GOMAXPROCS back")
	c.Stop() // twice is harmless
}

func TestTheControllerFollowsTheProcesssRealCPU(t *testing.T) {
	keepProcs(t)
	runtime.GOMAXPROCS(2)
	_, ok := processCPU()
	require.True(t, ok, "the process's CPU time must be readable on unix")

	// Thresholds low enough that two spinning goroutines cross them even
	// on a machine busy with other test processes, high enough that an
	// idle test process stays under them.
	p := Policy{Max: 2, Up: 0.2, Down: 0.1, Calm: 3}
	c := start(p, 50*time.Millisecond, processCPU, quiet)
	require.NotNil(t, c)
	t.Cleanup(c.Stop)
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 20*time.Second, 10*time.Millisecond, "an idle test process: one processor")

	// Two goroutines that spin keep the one processor saturated.
	ctx, cancel := context.WithCancel(context.Background())
	var spun atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				spun.Add(1)
			}
		})
	}
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 2 }, 20*time.Second, 10*time.Millisecond, "spinning: both processors")
	cancel()
	wg.Wait()
	require.Positive(t, spun.Load())
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 20*time.Second, 10*time.Millisecond, "idle again: one")
}

func TestNoControllerWhereThereIsNothingToFit(t *testing.T) {
	keepProcs(t)
	p := policy
	p.Max = 1
	assert.Nil(t, start(p, time.Second, processCPU, quiet), "one processor already")
	p.Max = 2
	assert.Nil(t, start(p, time.Second, func() (time.Duration, bool) { return 0, false }, quiet), "CPU time unreadable")
}
