package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Workloads compare can run.
const (
	WorkloadPub  = "pub"
	WorkloadIdle = "idle"
)

func isWorkload(w string) bool {
	switch w {
	case WorkloadPub, WorkloadIdle, WorkloadPairs, WorkloadFanout:
		return true
	}
	return false
}

// Target is one broker under comparison.
type Target struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// PID is the broker's process id, for its CPU time and RSS.
	PID int `json:"pid,omitempty"`
	// Pprof is the host:port (or base URL) of a Go pprof server: a CPU
	// profile of the broker is taken during its first measured round.
	Pprof string `json:"pprof,omitempty"`
}

// ParseTarget parses "name=host:port[,pid=N][,pprof=host:port]".
func ParseTarget(s string) (Target, error) {
	var t Target
	parts := strings.Split(s, ",")
	name, addr, ok := strings.Cut(parts[0], "=")
	if !ok || name == "" || addr == "" {
		return t, fmt.Errorf("target %q: want name=host:port[,pid=N][,pprof=host:port]", s)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return t, fmt.Errorf("target %q: address: %w", s, err)
	}
	t.Name, t.Addr = name, addr
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "pid":
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 0 {
				return t, fmt.Errorf("target %q: pid %q: must be a positive integer", s, v)
			}
			t.PID = pid
		case "pprof":
			if v == "" {
				return t, fmt.Errorf("target %q: pprof: must not be empty", s)
			}
			t.Pprof = v
		default:
			return t, fmt.Errorf("target %q: unknown key %q (want pid or pprof)", s, k)
		}
	}
	return t, nil
}

// Targets is a repeatable -target flag.
type Targets []Target

// String implements flag.Value.
func (ts *Targets) String() string {
	var s []string
	for _, t := range *ts {
		s = append(s, t.Name+"="+t.Addr)
	}
	return strings.Join(s, " ")
}

// Set implements flag.Value.
func (ts *Targets) Set(s string) error {
	t, err := ParseTarget(s)
	if err != nil {
		return err
	}
	for _, o := range *ts {
		if o.Name == t.Name {
			return fmt.Errorf("target %q given twice", t.Name)
		}
	}
	*ts = append(*ts, t)
	return nil
}

// CompareConfig runs one workload against several targets, round-robin.
type CompareConfig struct {
	Workload string  `json:"workload"`
	Targets  Targets `json:"targets"`
	// Rounds runs the workload this many times per target; the order of
	// the targets is reversed every other round (A B, B A, ...) so that a
	// drift of the machine does not favour one.
	Rounds int `json:"rounds"`
	// Pause between two runs, for the brokers to settle.
	Pause time.Duration `json:"pause_ns"`
	// Parallel runs the idle workload against every target at once: idle
	// connections cost no CPU, so a long settle time is paid once.
	Parallel bool `json:"parallel,omitempty"`
	// Baseline is the target every other is divided by; default the last.
	Baseline string `json:"baseline"`
	// PprofDir receives <target>.cpu.pprof for targets with pprof set.
	PprofDir     string        `json:"pprof_dir,omitempty"`
	PprofSeconds int           `json:"pprof_seconds,omitempty"`
	Pub          PubConfig     `json:"pub"`
	Idle         IdleConfig    `json:"idle"`
	PubSub       PubSubConfig  `json:"pubsub"`
	pprofTimeout time.Duration // extra time allowed for a profile download
}

// RegisterFlags registers the compare flags plus those of c.Workload, which
// must be set before.
func (c *CompareConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(&c.Targets, "target", "A broker to compare, repeatable: name=host:port[,pid=N][,pprof=host:port]. pid enables CPU and RSS figures; pprof takes a CPU profile of a Go broker during its first round.")
	fs.IntVar(&c.Rounds, "rounds", 2, "Runs per target; targets alternate and their order flips every round.")
	fs.DurationVar(&c.Pause, "pause", 2*time.Second, "Pause between two runs.")
	fs.StringVar(&c.Baseline, "baseline", "", "Target the others are divided by in the ratio column (default: the last -target).")
	fs.StringVar(&c.PprofDir, "pprof-dir", ".", "Directory for CPU profiles of targets with pprof=.")
	fs.IntVar(&c.PprofSeconds, "pprof-seconds", 20, "Length of the CPU profile; capped at the measured window.")
	switch c.Workload {
	case WorkloadPub:
		c.Pub.RegisterWorkloadFlags(fs)
	case WorkloadIdle:
		c.Idle.RegisterWorkloadFlags(fs)
		fs.BoolVar(&c.Parallel, "parallel", false, "Hold the idle connections to every target at once (one settle time for all).")
	case WorkloadPairs, WorkloadFanout:
		c.PubSub.Workload = c.Workload
		c.PubSub.RegisterWorkloadFlags(fs)
	}
}

// Validate names the bad field.
func (c *CompareConfig) Validate() error {
	var errs []error
	switch c.Workload {
	case WorkloadPub:
		c.Pub.Addr = "-" // set per target
		errs = append(errs, c.Pub.Validate())
	case WorkloadIdle:
		c.Idle.Addr = "-"
		errs = append(errs, c.Idle.Validate())
	case WorkloadPairs, WorkloadFanout:
		c.PubSub.Addr = "-"
		c.PubSub.Workload = c.Workload
		errs = append(errs, c.PubSub.Validate())
	default:
		errs = append(errs, fmt.Errorf("workload %q: must be %s, %s, %s or %s", c.Workload, WorkloadPub, WorkloadIdle, WorkloadPairs, WorkloadFanout))
	}
	if len(c.Targets) < 2 {
		errs = append(errs, errors.New("target: give at least two"))
	}
	if c.Parallel && c.Workload != WorkloadIdle {
		errs = append(errs, errors.New("parallel: only for the idle workload (publishers would compete for the CPU)"))
	}
	if c.Rounds < 1 {
		errs = append(errs, errors.New("rounds: must be at least 1"))
	}
	if c.Baseline == "" && len(c.Targets) > 0 {
		c.Baseline = c.Targets[len(c.Targets)-1].Name
	}
	if c.Baseline != "" && c.target(c.Baseline) == nil {
		errs = append(errs, fmt.Errorf("baseline %q: not a target", c.Baseline))
	}
	if c.PprofSeconds < 1 {
		errs = append(errs, errors.New("pprof-seconds: must be at least 1"))
	}
	return errors.Join(errs...)
}

func (c *CompareConfig) target(name string) *Target {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i]
		}
	}
	return nil
}

// CompareResult holds each target's aggregated numbers.
type CompareResult struct {
	Config  CompareConfig   `json:"config"`
	Targets []*TargetResult `json:"targets"`
}

// TargetResult is one target over all rounds.
type TargetResult struct {
	Target Target `json:"target"`
	// Pub aggregates the pub rounds: counts and CPU summed, histograms
	// merged, rates over the summed measured time.
	Pub *PubResult `json:"pub,omitempty"`
	// Idle aggregates the idle rounds: means of the RSS figures.
	Idle *IdleResult `json:"idle,omitempty"`
	// PubSub aggregates the pairs or fanout rounds like Pub.
	PubSub *PubSubResult `json:"pubsub,omitempty"`
	// PerRound is the headline number of each round: acked/s (sent/s for
	// QoS 0), deliveries/s, or bytes per idle connection.
	PerRound []float64 `json:"per_round"`
	// Profile is the path of the CPU profile taken, if any.
	Profile string `json:"profile,omitempty"`
	// ProfileError says why a requested profile is missing.
	ProfileError string `json:"profile_error,omitempty"`

	pubRounds    []*PubResult
	idleRounds   []*IdleResult
	pubsubRounds []*PubSubResult
}

// Result returns the named target's result, or nil.
func (r *CompareResult) Result(name string) *TargetResult {
	for _, t := range r.Targets {
		if t.Target.Name == name {
			return t
		}
	}
	return nil
}

// RunCompare runs the workload against every target, Rounds times each.
func RunCompare(ctx context.Context, cfg CompareConfig, progress func(string)) (*CompareResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	res := &CompareResult{Config: cfg}
	for _, t := range cfg.Targets {
		res.Targets = append(res.Targets, &TargetResult{Target: t})
	}
	if cfg.Parallel {
		if err := runIdleParallel(ctx, cfg, res, progress); err != nil {
			return nil, err
		}
		return res, nil
	}
	first := true
	for round := range cfg.Rounds {
		order := make([]*TargetResult, len(res.Targets))
		copy(order, res.Targets)
		if round%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for _, tr := range order {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if !first {
				sleepUntil(ctx, time.Now().Add(cfg.Pause))
			}
			first = false
			t := tr.Target
			report := func(msg string) { progress(fmt.Sprintf("round %d/%d %s: %s", round+1, cfg.Rounds, t.Name, msg)) }
			hooks := Hooks{Progress: report}
			if t.Pprof != "" && round == 0 {
				hooks.MeasureStart = func(ctx context.Context, window time.Duration) {
					path, err := fetchProfile(ctx, t, cfg.PprofDir, min(cfg.PprofSeconds, int(window/time.Second)), cfg.pprofTimeout)
					if err != nil {
						tr.ProfileError = err.Error()
						report("cpu profile: " + err.Error())
						return
					}
					tr.Profile = path
				}
			}
			switch cfg.Workload {
			case WorkloadPairs, WorkloadFanout:
				pc := cfg.PubSub
				pc.Addr, pc.ServerPID = t.Addr, t.PID
				r, err := RunPubSub(ctx, pc, hooks)
				if err != nil {
					return nil, fmt.Errorf("target %s, round %d: %w", t.Name, round+1, err)
				}
				r.Target = t.Name
				tr.pubsubRounds = append(tr.pubsubRounds, r)
				tr.PerRound = append(tr.PerRound, r.DeliveredPerSec)
				report(fmt.Sprintf("%.0f deliveries/s, e2e p99 %v, lost %d, duplicates %d, errors %d",
					r.DeliveredPerSec, r.Latency.P99, r.Lost, r.Duplicates, r.Errors()))
			case WorkloadPub:
				pc := cfg.Pub
				pc.Addr, pc.ServerPID = t.Addr, t.PID
				r, err := RunPublish(ctx, pc, hooks)
				if err != nil {
					return nil, fmt.Errorf("target %s, round %d: %w", t.Name, round+1, err)
				}
				r.Target = t.Name
				tr.pubRounds = append(tr.pubRounds, r)
				tr.PerRound = append(tr.PerRound, r.Throughput())
				report(fmt.Sprintf("%.0f/s, p99 %v, errors %d", r.Throughput(), r.Latency.P99, r.Errors()))
			case WorkloadIdle:
				ic := cfg.Idle
				ic.Addr, ic.ServerPID = t.Addr, t.PID
				r, err := RunIdle(ctx, ic, Hooks{Progress: report})
				if err != nil {
					return nil, fmt.Errorf("target %s, round %d: %w", t.Name, round+1, err)
				}
				r.Target = t.Name
				tr.idleRounds = append(tr.idleRounds, r)
				tr.PerRound = append(tr.PerRound, r.BytesPerConn)
				report(fmt.Sprintf("%.0f bytes per connection, %d/%d alive", r.BytesPerConn, r.Alive, r.Connected))
			}
		}
	}
	for _, tr := range res.Targets {
		tr.Pub = mergePub(tr.pubRounds)
		tr.Idle = mergeIdle(tr.idleRounds)
		tr.PubSub = mergePubSub(tr.pubsubRounds)
	}
	return res, nil
}

// runIdleParallel runs each round of the idle workload against all targets
// at once.
func runIdleParallel(ctx context.Context, cfg CompareConfig, res *CompareResult, progress func(string)) error {
	for round := range cfg.Rounds {
		if round > 0 {
			sleepUntil(ctx, time.Now().Add(cfg.Pause))
		}
		results := make([]*IdleResult, len(res.Targets))
		errs := make([]error, len(res.Targets))
		var wg sync.WaitGroup
		for i, tr := range res.Targets {
			t := tr.Target
			report := func(msg string) { progress(fmt.Sprintf("round %d/%d %s: %s", round+1, cfg.Rounds, t.Name, msg)) }
			ic := cfg.Idle
			ic.Addr, ic.ServerPID = t.Addr, t.PID
			// Two targets may be one cluster: keep the client ids apart.
			ic.ClientPrefix = cfg.Idle.ClientPrefix + "-" + t.Name
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = RunIdle(ctx, ic, Hooks{Progress: report})
				if errs[i] == nil {
					report(fmt.Sprintf("%.0f bytes per connection, %d/%d alive", results[i].BytesPerConn, results[i].Alive, results[i].Connected))
				}
			}()
		}
		wg.Wait()
		for i, tr := range res.Targets {
			if errs[i] != nil {
				return fmt.Errorf("target %s, round %d: %w", tr.Target.Name, round+1, errs[i])
			}
			results[i].Target = tr.Target.Name
			tr.idleRounds = append(tr.idleRounds, results[i])
			tr.PerRound = append(tr.PerRound, results[i].BytesPerConn)
		}
	}
	for _, tr := range res.Targets {
		tr.Idle = mergeIdle(tr.idleRounds)
	}
	return nil
}

// fetchProfile downloads a CPU profile of seconds from t's pprof server.
func fetchProfile(ctx context.Context, t Target, dir string, seconds int, extra time.Duration) (string, error) {
	base := t.Pprof
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(base, "/"), max(seconds, 1))
	if extra == 0 {
		extra = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+extra)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("profile request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("fetching %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("profile dir: %w", err)
	}
	path := filepath.Join(dir, t.Name+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("writing profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("writing profile %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("writing profile %s: %w", path, err)
	}
	return path, nil
}

// mergePub aggregates the rounds of one target.
func mergePub(rounds []*PubResult) *PubResult {
	if len(rounds) == 0 {
		return nil
	}
	m := &PubResult{Target: rounds[0].Target, Config: rounds[0].Config}
	var server, bench ProcessUsage
	serverOK := true
	for _, r := range rounds {
		m.Measured += r.Measured
		m.Sent += r.Sent
		m.Acked += r.Acked
		m.NegativeAcks += r.NegativeAcks
		m.Disconnects += r.Disconnects
		m.ConnectErrors += r.ConnectErrors
		m.Unacked += r.Unacked
		m.UnknownAcks += r.UnknownAcks
		m.TotalAcked += r.TotalAcked
		if r.hist != nil {
			if m.hist == nil {
				m.hist = NewHistogram()
			}
			m.hist.Merge(r.hist)
		}
		bench.CPU += r.Bench.CPU
		if r.Server == nil {
			serverOK = false
		} else {
			server.CPU += r.Server.CPU
			server.RSS = r.Server.RSS
		}
	}
	if m.hist != nil {
		m.Latency = m.hist.Summary()
	}
	if m.Measured > 0 {
		m.SentPerSec = float64(m.Sent) / m.Measured.Seconds()
		m.AckedPerSec = float64(m.Acked) / m.Measured.Seconds()
	}
	msgs := m.Acked
	if m.Config.QoS == 0 {
		msgs = m.Sent
	}
	m.Bench = usage(bench.CPU, m.Measured, msgs)
	if serverOK {
		u := usage(server.CPU, m.Measured, msgs)
		u.RSS = server.RSS
		m.Server = &u
	}
	return m
}

// mergePubSub aggregates the pub/sub rounds of one target: counts and CPU
// summed, histograms merged, rates over the summed measured time.
func mergePubSub(rounds []*PubSubResult) *PubSubResult {
	if len(rounds) == 0 {
		return nil
	}
	m := &PubSubResult{Target: rounds[0].Target, Config: rounds[0].Config, hist: NewHistogram()}
	var pubs []*PubResult
	var server, bench time.Duration
	serverOK := true
	for _, r := range rounds {
		pubs = append(pubs, r.Publish)
		m.ReadyAfter = max(m.ReadyAfter, r.ReadyAfter)
		m.NotReady += r.NotReady
		m.Measured += r.Measured
		m.Delivered += r.Delivered
		m.Expected += r.Expected
		m.Received += r.Received
		m.Lost += r.Lost
		m.Duplicates += r.Duplicates
		m.OutOfOrder += r.OutOfOrder
		m.Foreign += r.Foreign
		m.SubConnectErrors += r.SubConnectErrors
		m.SubscribeFailures += r.SubscribeFailures
		m.SubDisconnects += r.SubDisconnects
		m.SessionsNotCleared += r.SessionsNotCleared
		if r.hist != nil {
			m.hist.Merge(r.hist)
		}
		bench += r.Bench.CPU
		if r.Server == nil {
			serverOK = false
		} else {
			server += r.Server.CPU
		}
	}
	m.Publish = mergePub(pubs)
	m.Latency = m.hist.Summary()
	if m.Measured > 0 {
		m.DeliveredPerSec = float64(m.Delivered) / m.Measured.Seconds()
	}
	m.Bench = usage(bench, m.Measured, m.Delivered)
	if serverOK {
		u := usage(server, m.Measured, m.Delivered)
		u.RSS = rounds[len(rounds)-1].Server.RSS
		m.Server = &u
	}
	return m
}

// mergeIdle averages the rounds of one target.
func mergeIdle(rounds []*IdleResult) *IdleResult {
	if len(rounds) == 0 {
		return nil
	}
	m := &IdleResult{Target: rounds[0].Target, Config: rounds[0].Config}
	n := int64(len(rounds))
	var bpc, early, peak float64
	for _, r := range rounds {
		early += r.EarlyBytesPerConn
		peak += r.PeakBytesPerConn
		m.EarlyRSS += r.EarlyRSS
		m.Connected += r.Connected
		m.ConnectErrors += r.ConnectErrors
		m.Alive += r.Alive
		m.ConnectTime += r.ConnectTime
		m.BaselineRSS += r.BaselineRSS
		m.RSS += r.RSS
		m.PeakRSS = max(m.PeakRSS, r.PeakRSS)
		bpc += r.BytesPerConn
	}
	// Connections are per round on average; errors are the total.
	m.Connected /= int(n)
	m.Alive /= int(n)
	m.ConnectTime /= time.Duration(n)
	m.BaselineRSS /= n
	m.RSS /= n
	m.EarlyRSS /= n
	m.BytesPerConn = bpc / float64(n)
	m.EarlyBytesPerConn = early / float64(n)
	m.PeakBytesPerConn = peak / float64(n)
	return m
}
