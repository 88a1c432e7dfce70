package procs

import (
	"flag"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The Controller's defaults (the package comment says why).
const (
	DefaultInterval = 50 * time.Millisecond
	DefaultUp       = 0.6
	DefaultDown     = 0.5
	DefaultCalm     = 100 // intervals: 5 s
)

// A process on one processor using less than quietCores is quiet: it is
// sampled quietFactor times less often (every 200 ms by default), so that
// an idle node does not wake a thread 20 times a second for nothing to
// decide. Load that arrives is seen within one quiet interval, and from
// there sampled at the interval again.
const (
	quietCores  = 0.05
	quietFactor = 4
)

// wait is how long the Controller waits for its next sample after one in
// which the process, now in state s, used `used` cores.
func wait(s State, used float64, interval time.Duration) time.Duration {
	if s.Procs == 1 && used < quietCores {
		return quietFactor * interval
	}
	return interval
}

// started is the GOMAXPROCS the process started with: Go's default (the
// cores or the container's CPU limit) or the GOMAXPROCS variable.
var started = runtime.GOMAXPROCS(0)

// Started is the GOMAXPROCS the process started with, whatever a
// Controller set since: what sizes that follow the cores (pools, bounds)
// should use.
func Started() int { return started }

// Config turns the Controller on or off.
type Config struct {
	// Adaptive fits GOMAXPROCS to the CPU in use, up to the GOMAXPROCS
	// the process started with; false leaves GOMAXPROCS alone.
	Adaptive bool `yaml:"adaptive"`
}

// RegisterFlags registers procs.adaptive.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.Adaptive, "procs.adaptive", true, "Fit GOMAXPROCS to the CPU the process uses, between 1 and the GOMAXPROCS it started with (the cores, the container's CPU limit or the GOMAXPROCS variable): raised within 0.1s (0.3s from idle) when the processors in use are 60 % busy, lowered when one fewer would have been under 50 % busy over the last 5s. A lightly loaded node then wakes fewer threads per message (0.8x the CPU per message at 2,000 devices x 1 msg/s; docs/benchmarks.md). false: GOMAXPROCS stays as started.")
}

// Validate has nothing to check: both values are valid.
func (c *Config) Validate() error { return nil }

// Policy decides the processors from the CPU used in each interval.
type Policy struct {
	Max  int     // the ceiling (at least 1)
	Up   float64 // raise when used > Up × procs in two intervals in a row
	Down float64 // lower when the mean of Calm intervals < Down × (procs - 1)
	Calm int
}

// State is what a Policy carries from one interval to the next.
type State struct {
	Procs int     // processors in force
	over  int     // consecutive intervals over Up
	n     int     // intervals in the current calm window
	sum   float64 // cores used in them
}

// Next returns the state after an interval in which the process used
// `used` cores (CPU seconds per second).
//
// Raising takes two busy intervals in a row, so that one burst (a garbage
// collection, a connection's TLS handshake) does not; lowering looks at the
// mean of a whole window of Calm intervals, so that bursts within it do not
// keep a lightly loaded process on all its processors.
func (p Policy) Next(s State, used float64) State {
	if used > p.Up*float64(s.Procs) && s.Procs < p.Max {
		s.over++
	} else {
		s.over = 0
	}
	if s.over >= 2 {
		// Busy: as many as keep each processor at Down, at least one
		// more, at once.
		n := max(s.Procs+1, int(math.Ceil(used/p.Down)))
		return State{Procs: min(p.Max, n)}
	}
	s.n++
	s.sum += used
	if s.n >= p.Calm {
		mean := s.sum / float64(s.n)
		s.n, s.sum = 0, 0
		if s.Procs > 1 && mean < p.Down*float64(s.Procs-1) {
			// The fewest that would have kept the window's mean at
			// Down each.
			return State{Procs: max(1, int(math.Ceil(mean/p.Down)))}
		}
	}
	return s
}

// Controller applies a Policy to the process's GOMAXPROCS.
type Controller struct {
	policy   Policy
	interval time.Duration
	cpu      func() (time.Duration, bool)
	log      *slog.Logger

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	changes  atomic.Int64
}

// Start fits GOMAXPROCS for c, or does nothing (a nil Controller, whose
// Stop does nothing) when c.Adaptive is false, GOMAXPROCS is 1 already, or
// the process's CPU time cannot be read.
func Start(c Config, log *slog.Logger) *Controller {
	if !c.Adaptive {
		return nil
	}
	return start(Policy{Max: started, Up: DefaultUp, Down: DefaultDown, Calm: DefaultCalm}, DefaultInterval, processCPU, log)
}

func start(p Policy, interval time.Duration, cpu func() (time.Duration, bool), log *slog.Logger) *Controller {
	if p.Max <= 1 {
		return nil
	}
	if _, ok := cpu(); !ok {
		log.Warn("procs.adaptive: the process's CPU time cannot be read here; GOMAXPROCS stays as started", "gomaxprocs", p.Max)
		return nil
	}
	c := &Controller{policy: p, interval: interval, cpu: cpu, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	log.Info("GOMAXPROCS fitted to the CPU in use (procs.adaptive)", "max", p.Max, "up", p.Up, "down", p.Down, "calm", time.Duration(p.Calm)*interval)
	go c.run()
	return c
}

func (c *Controller) run() {
	defer close(c.done)
	t := time.NewTimer(c.interval)
	defer t.Stop()
	s := State{Procs: c.policy.Max}
	last, _ := c.cpu()
	lastAt := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			used, ok := c.cpu()
			wall := now.Sub(lastAt)
			if !ok || wall <= 0 {
				t.Reset(c.interval)
				continue
			}
			cores := float64(used-last) / float64(wall)
			last, lastAt = used, now
			next := c.policy.Next(s, cores)
			if next.Procs != s.Procs {
				runtime.GOMAXPROCS(next.Procs)
				c.changes.Add(1)
				c.log.Debug("GOMAXPROCS fitted", "from", s.Procs, "to", next.Procs, "cores_used", cores)
			}
			s = next
			t.Reset(wait(s, cores, c.interval))
		}
	}
}

// Changes is how many times the Controller changed GOMAXPROCS.
func (c *Controller) Changes() int64 {
	if c == nil {
		return 0
	}
	return c.changes.Load()
}

// Stop ends the fitting and gives the process its starting GOMAXPROCS back.
func (c *Controller) Stop() {
	if c == nil {
		return
	}
	c.stopOnce.Do(func() {
		close(c.stop)
		<-c.done
		runtime.GOMAXPROCS(c.policy.Max)
	})
}
