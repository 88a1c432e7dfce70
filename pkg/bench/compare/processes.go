package compare

import (
	"context"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// Process is one process of a target whose CPU time and RSS compare reads.
type Process struct {
	PID int `json:"pid"`
	// Name is the process's command name (/proc/<pid>/comm).
	Name string `json:"name"`
	// Apart is set for a process reported beside the broker's figures and
	// not counted in them.
	Apart bool `json:"apart,omitempty"`
}

// ProcessResult is one process of a group target (several pids, or some
// apart) over all rounds.
type ProcessResult struct {
	Process
	// Usage is the process's CPU time over the measured windows of every
	// round, per message the workload counts (an acked publish, a
	// delivery, a connect), and its RSS at the end of the last window. Of
	// the idle workload: CPU from load.EarlyAfter into the settle time to
	// its end (CPU, CPUPercent) and RSS at its end, the means over the
	// rounds.
	Usage measure.ProcessUsage `json:"usage"`
	// BaselineRSS (before the idle connections were opened) and
	// BytesPerConn ((RSS - BaselineRSS) per connection): the idle workload
	// only, means over the rounds.
	BaselineRSS  int64   `json:"baseline_rss_bytes,omitempty"`
	BytesPerConn float64 `json:"bytes_per_connection,omitempty"`
	// Unread is set when the process could not be read in some round (it
	// had ended): its figures, and the broker's sum, are incomplete.
	Unread bool `json:"unread,omitempty"`
}

// idleSampleEvery is how often a group is sampled while idle connections
// settle.
const idleSampleEvery = 100 * time.Millisecond

// group samples the processes of a group target: counted ones first, then
// those apart. It sums the counted ones into the figures the workload
// reports for a broker of one process.
type group struct {
	procs []*ProcessResult
	// Over the rounds of a windowed workload.
	wall time.Duration
	msgs int64
	// Per process, summed over the rounds: CPU, and for the idle workload
	// the figures averaged at the end.
	cpu      []time.Duration
	idleWall []time.Duration
	baseline []int64
	rss      []int64
	perConn  []float64
	rounds   int
}

// newGroup reads the names of t's processes.
func newGroup(t Target) *group {
	g := &group{}
	add := func(pid int, apart bool) {
		g.procs = append(g.procs, &ProcessResult{Process: Process{PID: pid, Name: measure.ReadName(pid), Apart: apart}})
	}
	for _, pid := range t.processIDs() {
		add(pid, false)
	}
	for _, pid := range t.Apart {
		add(pid, true)
	}
	n := len(g.procs)
	g.cpu, g.idleWall = make([]time.Duration, n), make([]time.Duration, n)
	g.baseline, g.rss, g.perConn = make([]int64, n), make([]int64, n), make([]float64, n)
	return g
}

// snapshot is every process of a group read at one time.
type snapshot struct {
	at      time.Time
	samples []measure.ProcessSample
}

func (g *group) sample() snapshot {
	s := snapshot{at: time.Now(), samples: make([]measure.ProcessSample, len(g.procs))}
	for i, p := range g.procs {
		s.samples[i] = measure.SampleProcess(p.PID)
	}
	return s
}

// window is the measured window of one round: opened by the workload's
// MeasureStart hook, it closes when the window the hook was given ends or
// when the run returns, whichever comes first (a connect pass has no length
// known in advance).
type window struct {
	g          *group
	start, end snapshot
	stop       chan struct{}
	wg         sync.WaitGroup
}

func (g *group) newWindow() *window { return &window{g: g, stop: make(chan struct{})} }

// open samples the group now and again after d, unless close comes first.
func (w *window) open(d time.Duration) {
	w.start = w.g.sample()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.stop:
		}
		w.end = w.g.sample()
	}()
}

// close ends the window, if it is still open, once the run returned (the
// run returns only after its MeasureStart hook did, so open came first).
func (w *window) close() {
	close(w.stop)
	w.wg.Wait()
}

// add counts a closed window in which the workload counted msgs messages.
func (g *group) add(w *window, msgs int64) {
	if w.start.at.IsZero() {
		for _, p := range g.procs {
			p.Unread = true
		}
		return
	}
	g.wall += w.end.at.Sub(w.start.at)
	g.msgs += msgs
	for i, p := range g.procs {
		a, b := w.start.samples[i], w.end.samples[i]
		if !a.OK || !b.OK {
			p.Unread = true
			continue
		}
		g.cpu[i] += b.CPU - a.CPU
		g.rss[i] = b.RSS
	}
}

// finish sets each process's usage over the windows and returns the sum of
// the counted processes, nil when one of them could not be read.
func (g *group) finish() *measure.ProcessUsage {
	var cpu time.Duration
	var rss int64
	ok := true
	for i, p := range g.procs {
		p.Usage = measure.Usage(g.cpu[i], g.wall, g.msgs)
		p.Usage.RSS = g.rss[i]
		if p.Apart {
			continue
		}
		ok = ok && !p.Unread
		cpu += g.cpu[i]
		rss += g.rss[i]
	}
	if !ok || g.wall == 0 {
		return nil
	}
	u := measure.Usage(cpu, g.wall, g.msgs)
	u.RSS = rss
	return &u
}

// runIdle runs one round of the idle workload against the group: the
// workload opens the connections and lets them settle without a server pid,
// while the group is sampled every idleSampleEvery; then the figures a
// broker of one process gets from the workload are set from the sums of the
// counted processes, at the same points of the settle time.
func (g *group) runIdle(ctx context.Context, cfg load.IdleConfig, hooks load.Hooks) (*load.IdleResult, error) {
	base := g.sample()
	var series []snapshot
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(idleSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				series = append(series, g.sample())
			case <-stop:
				return
			}
		}
	}()
	start := time.Now()
	cfg.ServerPID = 0
	r, err := load.RunIdle(ctx, cfg, hooks)
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	g.addIdle(r, start, base, series)
	return r, nil
}

// addIdle reads the settle time of one idle round off the series: it began
// when the last connection was made, start + ConnectTime.
func (g *group) addIdle(r *load.IdleResult, start time.Time, base snapshot, series []snapshot) {
	settleFrom := start.Add(r.ConnectTime)
	settleTo := settleFrom.Add(r.Config.Settle)
	earlyAt := settleFrom.Add(min(load.EarlyAfter, r.Config.Settle))
	var in []snapshot
	for _, s := range series {
		if !s.at.Before(settleFrom) && !s.at.After(settleTo) {
			in = append(in, s)
		}
	}
	if len(in) == 0 {
		// A settle time shorter than the sampling period: the first
		// sample after it began.
		for _, s := range series {
			if !s.at.Before(settleFrom) {
				in = append(in, s)
				break
			}
		}
	}
	if len(in) == 0 || r.Connected == 0 {
		for _, p := range g.procs {
			p.Unread = true
		}
		return
	}
	end, early := in[len(in)-1], in[len(in)-1]
	for _, s := range in {
		if !s.at.Before(earlyAt) {
			early = s
			break
		}
	}
	conns := float64(r.Connected)
	counted := func(s snapshot) (int64, bool) {
		var sum int64
		for i, p := range g.procs {
			if p.Apart {
				continue
			}
			if !s.samples[i].OK {
				return 0, false
			}
			sum += s.samples[i].RSS
		}
		return sum, true
	}
	g.rounds++
	var idleCPU time.Duration
	cpuOK := true
	for i, p := range g.procs {
		b, e, ea := base.samples[i], end.samples[i], early.samples[i]
		if !b.OK || !e.OK || !ea.OK {
			p.Unread = true
			cpuOK = cpuOK && p.Apart
			continue
		}
		g.baseline[i] += b.RSS
		g.rss[i] += e.RSS
		g.perConn[i] += float64(e.RSS-b.RSS) / conns
		g.cpu[i] += e.CPU - ea.CPU
		g.idleWall[i] += end.at.Sub(early.at)
		if !p.Apart {
			idleCPU += e.CPU - ea.CPU
		}
	}
	baseRSS, ok1 := counted(base)
	endRSS, ok2 := counted(end)
	earlyRSS, ok3 := counted(early)
	if !ok1 || !ok2 || !ok3 {
		return
	}
	r.BaselineRSS, r.RSS, r.EarlyRSS = baseRSS, endRSS, earlyRSS
	for _, s := range in {
		if v, ok := counted(s); ok {
			r.PeakRSS = max(r.PeakRSS, v)
		}
	}
	r.BytesPerConn = float64(endRSS-baseRSS) / conns
	r.EarlyBytesPerConn = float64(earlyRSS-baseRSS) / conns
	r.PeakBytesPerConn = float64(r.PeakRSS-baseRSS) / conns
	if wall := end.at.Sub(early.at); cpuOK && wall > 0 {
		r.IdleCPUPercent = 100 * idleCPU.Seconds() / wall.Seconds()
	}
}

// finishIdle sets each process's figures, the means over the idle rounds.
func (g *group) finishIdle() {
	if g.rounds == 0 {
		return
	}
	n := int64(g.rounds)
	for i, p := range g.procs {
		p.BaselineRSS = g.baseline[i] / n
		p.BytesPerConn = g.perConn[i] / float64(n)
		p.Usage = measure.Usage(g.cpu[i]/time.Duration(n), g.idleWall[i]/time.Duration(n), 0)
		p.Usage.RSS = g.rss[i] / n
	}
}
