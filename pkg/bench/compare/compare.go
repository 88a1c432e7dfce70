package compare

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/load"
)

// IsWorkload reports whether w names a workload compare can run.
func IsWorkload(w string) bool {
	switch w {
	case load.WorkloadPub, load.WorkloadIdle, load.WorkloadPairs, load.WorkloadFanout, load.WorkloadConnect, load.WorkloadRetained:
		return true
	}
	return false
}

// Config runs one workload against several targets, round-robin.
type Config struct {
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
	PprofDir     string              `json:"pprof_dir,omitempty"`
	PprofSeconds int                 `json:"pprof_seconds,omitempty"`
	Pub          load.PubConfig      `json:"pub"`
	Idle         load.IdleConfig     `json:"idle"`
	PubSub       load.PubSubConfig   `json:"pubsub"`
	Connect      load.ConnectConfig  `json:"connect"`
	Retained     load.RetainedConfig `json:"retained"`
	pprofTimeout time.Duration       // extra time allowed for a profile download
}

// RegisterFlags registers the compare flags plus those of c.Workload, which
// must be set before.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(&c.Targets, "target", "A broker to compare, repeatable: "+targetSyntax+". pid enables CPU and RSS figures; a broker of several processes gives them all (pid=N+M+K: their CPU and RSS summed, each reported too), and apart names processes reported on their own and not counted (a Kafka broker); pprof takes a CPU profile of a Go broker during its first round (of each server of host:port+host:port at once); metrics is a Go broker's Prometheus endpoint, whose heap the retained workload samples; creds is a file of username:password lines, client i connecting to this target with line i (pub, idle, connect; pairs: pair i's publisher and subscriber).")
	fs.IntVar(&c.Rounds, "rounds", 2, "Runs per target; targets alternate and their order flips every round.")
	fs.DurationVar(&c.Pause, "pause", 2*time.Second, "Pause between two runs.")
	fs.StringVar(&c.Baseline, "baseline", "", "Target the others are divided by in the ratio column (default: the last -target).")
	fs.StringVar(&c.PprofDir, "pprof-dir", ".", "Directory for CPU profiles of targets with pprof=.")
	fs.IntVar(&c.PprofSeconds, "pprof-seconds", 20, "Length of the CPU profile; capped at the measured window.")
	switch c.Workload {
	case load.WorkloadPub:
		c.Pub.RegisterWorkloadFlags(fs)
	case load.WorkloadIdle:
		c.Idle.RegisterWorkloadFlags(fs)
		fs.BoolVar(&c.Parallel, "parallel", false, "Hold the idle connections to every target at once (one settle time for all).")
	case load.WorkloadPairs, load.WorkloadFanout:
		c.PubSub.Workload = c.Workload
		c.PubSub.RegisterWorkloadFlags(fs)
	case load.WorkloadConnect:
		c.Connect.RegisterWorkloadFlags(fs)
	case load.WorkloadRetained:
		c.Retained.RegisterWorkloadFlags(fs)
	}
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	switch c.Workload {
	case load.WorkloadPub:
		c.Pub.Addr = "-" // set per target
		errs = append(errs, c.Pub.Validate())
	case load.WorkloadIdle:
		c.Idle.Addr = "-"
		if c.Idle.WSPing > 0 {
			c.Idle.WebSocket = "/-" // set per target, each of which must speak WebSocket
			for _, t := range c.Targets {
				if t.WebSocket == "" {
					errs = append(errs, fmt.Errorf("target %s: ws-ping: needs MQTT over WebSocket (ws=PATH)", t.Name))
				}
			}
		}
		errs = append(errs, c.Idle.Validate())
	case load.WorkloadPairs, load.WorkloadFanout:
		c.PubSub.Addr = "-"
		c.PubSub.Workload = c.Workload
		errs = append(errs, c.PubSub.Validate())
	case load.WorkloadConnect:
		c.Connect.Addr = "-"
		errs = append(errs, c.Connect.Validate())
	case load.WorkloadRetained:
		c.Retained.Addr = "-"
		errs = append(errs, c.Retained.Validate())
	default:
		errs = append(errs, fmt.Errorf("workload %q: must be %s, %s, %s, %s, %s or %s", c.Workload, load.WorkloadPub, load.WorkloadIdle, load.WorkloadPairs, load.WorkloadFanout, load.WorkloadConnect, load.WorkloadRetained))
	}
	switch c.Workload {
	case load.WorkloadPairs, load.WorkloadFanout, load.WorkloadRetained:
		for _, t := range c.Targets {
			if t.Creds != "" && c.Workload != load.WorkloadPairs {
				errs = append(errs, fmt.Errorf("target %s: creds: not for the %s workload (give -username and -password)", t.Name, c.Workload))
			}
			if t.TLSCA != "" {
				errs = append(errs, fmt.Errorf("target %s: tls: not for the %s workload (pub, idle and connect only)", t.Name, c.Workload))
			}
			if t.WebSocket != "" {
				errs = append(errs, fmt.Errorf("target %s: ws: not for the %s workload (pub, idle and connect only)", t.Name, c.Workload))
			}
		}
	}
	for _, t := range c.Targets {
		if !t.isGroup() {
			continue
		}
		switch {
		case c.Workload == load.WorkloadRetained:
			errs = append(errs, fmt.Errorf("target %s: pid with several processes, apart: not for the %s workload", t.Name, c.Workload))
		case c.Workload == load.WorkloadPub && c.Pub.Messages > 0,
			(c.Workload == load.WorkloadPairs || c.Workload == load.WorkloadFanout) && c.PubSub.Messages > 0:
			errs = append(errs, fmt.Errorf("target %s: pid with several processes, apart: need a measured window (not -messages)", t.Name))
		}
	}
	if len(c.Targets) < 2 {
		errs = append(errs, errors.New("target: give at least two"))
	}
	if c.Parallel && c.Workload != load.WorkloadIdle {
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

func (c *Config) target(name string) *Target {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i]
		}
	}
	return nil
}

// Result holds each target's aggregated numbers.
type Result struct {
	Config  Config          `json:"config"`
	Targets []*TargetResult `json:"targets"`
}

// TargetResult is one target over all rounds.
type TargetResult struct {
	Target Target `json:"target"`
	// Pub aggregates the pub rounds: counts and CPU summed, histograms
	// merged, rates over the summed measured time.
	Pub *load.PubResult `json:"pub,omitempty"`
	// Idle aggregates the idle rounds: means of the RSS figures.
	Idle *load.IdleResult `json:"idle,omitempty"`
	// PubSub aggregates the pairs or fanout rounds like Pub.
	PubSub *load.PubSubResult `json:"pubsub,omitempty"`
	// Connect aggregates the connect rounds: their measured passes summed,
	// every pass listed.
	Connect *load.ConnectResult `json:"connect,omitempty"`
	// Retained aggregates the retained rounds (load.MergeRetained);
	// RetainedRounds are the rounds themselves.
	Retained       *load.RetainedResult   `json:"retained,omitempty"`
	RetainedRounds []*load.RetainedResult `json:"retained_rounds,omitempty"`
	// PerRound is the headline number of each round: acked/s (sent/s for
	// QoS 0), deliveries/s, bytes per idle connection, connects/s, or
	// retained messages/s of the wildcard SUBSCRIBE.
	PerRound []float64 `json:"per_round"`
	// Processes are the processes of a target of several (pid=N+M) or with
	// processes apart (apart=N), each on its own; the workload's server
	// figures (Pub.Server, ...) are then the sum of the counted ones.
	Processes []*ProcessResult `json:"processes,omitempty"`
	// Profile is the path of the CPU profile taken, if any; Profiles are
	// all of them, when the target has several pprof servers.
	Profile  string   `json:"profile,omitempty"`
	Profiles []string `json:"profiles,omitempty"`
	// ProfileError says why a requested profile is missing.
	ProfileError string `json:"profile_error,omitempty"`

	pubRounds    []*load.PubResult
	idleRounds   []*load.IdleResult
	pubsubRounds []*load.PubSubResult
	connRounds   []*load.ConnectResult
	group        *group // a target of several processes, or some apart
	tls          *tls.Config
}

// Result returns the named target's result, or nil.
func (r *Result) Result(name string) *TargetResult {
	for _, t := range r.Targets {
		if t.Target.Name == name {
			return t
		}
	}
	return nil
}

// Run runs the workload against every target, Rounds times each.
func Run(ctx context.Context, cfg Config, progress func(string)) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	res := &Result{Config: cfg}
	for _, t := range cfg.Targets {
		tc, err := t.TLSConfig()
		if err != nil {
			return nil, err
		}
		tr := &TargetResult{Target: t, tls: tc}
		if t.isGroup() {
			tr.group = newGroup(t)
		}
		res.Targets = append(res.Targets, tr)
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
				pause(ctx, cfg.Pause)
			}
			first = false
			t := tr.Target
			report := func(msg string) { progress(fmt.Sprintf("round %d/%d %s: %s", round+1, cfg.Rounds, t.Name, msg)) }
			hooks := load.Hooks{Progress: report}
			// A group's processes are sampled here, at the edges of the
			// measured window; the workload gets no server pid.
			serverPID := t.PID
			var win *window
			if tr.group != nil {
				serverPID, win = 0, tr.group.newWindow()
			}
			profile := t.Pprof != "" && round == 0
			if profile || win != nil {
				hooks.MeasureStart = func(ctx context.Context, d time.Duration) {
					if win != nil {
						win.open(d)
					}
					if profile {
						tr.fetchProfiles(ctx, cfg, d, report)
					}
				}
			}
			// counted ends the round's window, which held msgs messages;
			// failed ends it without counting.
			counted := func(msgs int64) {
				if win != nil {
					win.close()
					tr.group.add(win, msgs)
				}
			}
			failed := func(err error) error {
				if win != nil {
					win.close()
				}
				return fmt.Errorf("target %s, round %d: %w", t.Name, round+1, err)
			}
			switch cfg.Workload {
			case load.WorkloadPairs, load.WorkloadFanout:
				pc := cfg.PubSub
				pc.Addr, pc.ServerPID = t.Addr, serverPID
				if t.Creds != "" {
					pc.CredentialsFile, pc.Username, pc.Password = t.Creds, "", ""
				}
				r, err := load.RunPubSub(ctx, pc, hooks)
				if err != nil {
					return nil, failed(err)
				}
				counted(r.Delivered)
				r.Target = t.Name
				tr.pubsubRounds = append(tr.pubsubRounds, r)
				tr.PerRound = append(tr.PerRound, r.DeliveredPerSec)
				report(fmt.Sprintf("%.0f deliveries/s, e2e p99 %v, lost %d, duplicates %d, errors %d",
					r.DeliveredPerSec, r.Latency.P99, r.Lost, r.Duplicates, r.Errors()))
			case load.WorkloadPub:
				pc := cfg.Pub
				pc.Addr, pc.ServerPID, pc.TLS, pc.WebSocket = t.Addr, serverPID, tr.tls, t.WebSocket
				if t.Creds != "" {
					pc.CredentialsFile, pc.Username, pc.Password = t.Creds, "", ""
				}
				r, err := load.RunPublish(ctx, pc, hooks)
				if err != nil {
					return nil, failed(err)
				}
				if pc.QoS == 0 {
					counted(r.Sent)
				} else {
					counted(r.Acked)
				}
				r.Target = t.Name
				tr.pubRounds = append(tr.pubRounds, r)
				tr.PerRound = append(tr.PerRound, r.Throughput())
				report(fmt.Sprintf("%.0f/s, p99 %v, errors %d", r.Throughput(), r.Latency.P99, r.Errors()))
			case load.WorkloadIdle:
				r, err := tr.runIdle(ctx, cfg.Idle, load.Hooks{Progress: report})
				if err != nil {
					return nil, fmt.Errorf("target %s, round %d: %w", t.Name, round+1, err)
				}
				r.Target = t.Name
				tr.idleRounds = append(tr.idleRounds, r)
				tr.PerRound = append(tr.PerRound, r.BytesPerConn)
				report(fmt.Sprintf("%.0f bytes per connection, %d/%d alive", r.BytesPerConn, r.Alive, r.Connected))
			case load.WorkloadConnect:
				cc := cfg.Connect
				cc.Addr, cc.ServerPID, cc.TLS, cc.WebSocket = t.Addr, serverPID, tr.tls, t.WebSocket
				if t.Creds != "" {
					cc.CredentialsFile, cc.Username, cc.Password = t.Creds, "", ""
				}
				// Targets may share a broker (one fleetgate taking
				// tokens, passwords and anonymous clients): each target
				// has client ids of its own.
				cc.ClientPrefix = cfg.Connect.ClientPrefix + "-" + t.Name
				r, err := load.RunConnect(ctx, cc, hooks)
				if err != nil {
					return nil, failed(err)
				}
				counted(r.Connected)
				r.Target = t.Name
				tr.connRounds = append(tr.connRounds, r)
				tr.PerRound = append(tr.PerRound, r.ConnectsPerSec)
				report(fmt.Sprintf("%.0f connects/s, connack p99 %v, refused %d, errors %d", r.ConnectsPerSec, r.Connack.P99, r.Refused, r.Errors))
			case load.WorkloadRetained:
				rc := cfg.Retained
				rc.Addr, rc.ServerPID, rc.MetricsAddr = t.Addr, t.PID, t.Metrics
				// Targets may share a broker: client ids of their own
				// (the topics are the same, each run's payloads its own).
				rc.ClientPrefix = cfg.Retained.ClientPrefix + "-" + t.Name
				r, err := load.RunRetained(ctx, rc, hooks)
				if err != nil {
					return nil, fmt.Errorf("target %s, round %d: %w", t.Name, round+1, err)
				}
				r.Target = t.Name
				tr.RetainedRounds = append(tr.RetainedRounds, r)
				tr.PerRound = append(tr.PerRound, r.PerSec)
			}
		}
	}
	for _, tr := range res.Targets {
		tr.Pub = load.MergePub(tr.pubRounds)
		tr.Idle = load.MergeIdle(tr.idleRounds)
		tr.PubSub = load.MergePubSub(tr.pubsubRounds)
		tr.Connect = load.MergeConnect(tr.connRounds)
		tr.Retained = load.MergeRetained(tr.RetainedRounds)
		tr.finishGroup()
	}
	return res, nil
}

// finishGroup sets a group target's per-process figures and, as the
// broker's own, the sum of its counted processes.
func (tr *TargetResult) finishGroup() {
	g := tr.group
	if g == nil {
		return
	}
	if tr.Idle != nil {
		g.finishIdle()
	} else {
		server := g.finish()
		switch {
		case tr.Pub != nil:
			tr.Pub.Server = server
		case tr.PubSub != nil:
			tr.PubSub.Server = server
		case tr.Connect != nil:
			tr.Connect.Server = server
		}
	}
	tr.Processes = g.procs
}

// runIdle runs one round of the idle workload against tr's target.
func (tr *TargetResult) runIdle(ctx context.Context, ic load.IdleConfig, hooks load.Hooks) (*load.IdleResult, error) {
	t := tr.Target
	ic.Addr, ic.ServerPID, ic.TLS, ic.WebSocket = t.Addr, t.PID, tr.tls, t.WebSocket
	if t.Creds != "" {
		ic.CredentialsFile, ic.Username, ic.Password = t.Creds, "", ""
	}
	if tr.group != nil {
		return tr.group.runIdle(ctx, ic, hooks)
	}
	return load.RunIdle(ctx, ic, hooks)
}

// fetchProfiles takes the CPU profiles of tr's target during a measured
// window of length d.
func (tr *TargetResult) fetchProfiles(ctx context.Context, cfg Config, d time.Duration, report func(string)) {
	paths, errs := fetchProfiles(ctx, tr.Target, cfg.PprofDir, min(cfg.PprofSeconds, int(d/time.Second)), cfg.pprofTimeout)
	if len(paths) > 0 {
		tr.Profile = paths[0]
	}
	if len(paths) > 1 {
		tr.Profiles = paths
	}
	if err := errors.Join(errs...); err != nil {
		tr.ProfileError = strings.ReplaceAll(err.Error(), "\n", "; ")
		report("cpu profile: " + tr.ProfileError)
	}
}

// runIdleParallel runs each round of the idle workload against all targets
// at once.
func runIdleParallel(ctx context.Context, cfg Config, res *Result, progress func(string)) error {
	for round := range cfg.Rounds {
		if round > 0 {
			pause(ctx, cfg.Pause)
		}
		results := make([]*load.IdleResult, len(res.Targets))
		errs := make([]error, len(res.Targets))
		var wg sync.WaitGroup
		for i, tr := range res.Targets {
			t := tr.Target
			report := func(msg string) { progress(fmt.Sprintf("round %d/%d %s: %s", round+1, cfg.Rounds, t.Name, msg)) }
			ic := cfg.Idle
			// Two targets may be one cluster: keep the client ids apart.
			ic.ClientPrefix = cfg.Idle.ClientPrefix + "-" + t.Name
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = tr.runIdle(ctx, ic, load.Hooks{Progress: report})
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
		tr.Idle = load.MergeIdle(tr.idleRounds)
		tr.finishGroup()
	}
	return nil
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
