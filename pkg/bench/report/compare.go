package report

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/compare"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// WriteCompare prints the comparison table: one column per target and the
// ratio of each target to the baseline.
func WriteCompare(w io.Writer, r *compare.Result) error {
	cfg := r.Config
	base := r.Result(cfg.Baseline)
	var others []*compare.TargetResult
	for _, t := range r.Targets {
		if t != base {
			others = append(others, t)
		}
	}
	cols := append(append([]*compare.TargetResult{}, others...), base)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{""}
	for _, t := range cols {
		header = append(header, t.Target.Name)
	}
	for _, t := range others {
		header = append(header, t.Target.Name+"/"+base.Target.Name)
	}
	switch cfg.Workload {
	case load.WorkloadPub:
		fmt.Fprintf(w, "workload: %s; %d round(s) per target\n", describePub(cfg.Pub), cfg.Rounds)
	case load.WorkloadPairs, load.WorkloadFanout:
		fmt.Fprintf(w, "workload: %s; %d round(s) per target\n", describePubSub(cfg.PubSub), cfg.Rounds)
	case load.WorkloadConnect:
		fmt.Fprintf(w, "workload: %s; %d round(s) per target\n", describeConnect(cfg.Connect, " per target"), cfg.Rounds)
	case load.WorkloadIdle:
		c := cfg.Idle
		par := ""
		if cfg.Parallel {
			par = ", all targets at once"
		}
		fmt.Fprintf(w, "workload: %d idle connections%s, MQTT %s, keepalive %v, settle %v; %d round(s) per target%s\n",
			c.Clients, burstText(c), versionName(c.Version), c.Keepalive, c.Settle, cfg.Rounds, par)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")

	row := func(label string, val func(*compare.TargetResult) (float64, bool), format func(float64) string) {
		cells := []string{label}
		for _, t := range cols {
			v, ok := val(t)
			if !ok {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, format(v))
		}
		bv, bok := val(base)
		for _, t := range others {
			v, ok := val(t)
			if !ok || !bok || bv == 0 {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.2fx", v/bv))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	perRound := func(t *compare.TargetResult, format func(float64) string) string {
		var s []string
		for _, v := range t.PerRound {
			s = append(s, format(v))
		}
		return strings.Join(s, " ")
	}
	textRow := func(label string, val func(*compare.TargetResult) string) {
		cells := []string{label}
		for _, t := range cols {
			cells = append(cells, val(t))
		}
		for range others {
			cells = append(cells, "")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}

	switch cfg.Workload {
	case load.WorkloadPub:
		pub := func(f func(*load.PubResult) (float64, bool)) func(*compare.TargetResult) (float64, bool) {
			return func(t *compare.TargetResult) (float64, bool) {
				if t.Pub == nil {
					return 0, false
				}
				return f(t.Pub)
			}
		}
		lat := func(f func(measure.LatencySummary) time.Duration) func(*compare.TargetResult) (float64, bool) {
			return pub(func(p *load.PubResult) (float64, bool) {
				return float64(f(p.Latency)), p.Latency.Count > 0
			})
		}
		durf := func(v float64) string { return measure.FormatDuration(time.Duration(v)) }
		name := "acked/s"
		if cfg.Pub.QoS == 0 {
			name = "sent/s"
		}
		row(name, pub(func(p *load.PubResult) (float64, bool) { return p.Throughput(), true }), measure.FormatRate)
		textRow("  per round", func(t *compare.TargetResult) string { return perRound(t, measure.FormatRate) })
		if cfg.Pub.QoS > 0 {
			ack := ackName(cfg.Pub.QoS)
			row(ack+" p50", lat(func(l measure.LatencySummary) time.Duration { return l.P50 }), durf)
			row(ack+" p99", lat(func(l measure.LatencySummary) time.Duration { return l.P99 }), durf)
			row(ack+" p99.9", lat(func(l measure.LatencySummary) time.Duration { return l.P999 }), durf)
			row(ack+" max", lat(func(l measure.LatencySummary) time.Duration { return l.Max }), durf)
		}
		row("errors", pub(func(p *load.PubResult) (float64, bool) { return float64(p.Errors()), true }), measure.FormatCount)
		row("server cpu %", pub(func(p *load.PubResult) (float64, bool) {
			if p.Server == nil {
				return 0, false
			}
			return p.Server.CPUPercent, true
		}), func(v float64) string { return fmt.Sprintf("%.0f%%", v) })
		row("server cpu/msg", pub(func(p *load.PubResult) (float64, bool) {
			if p.Server == nil {
				return 0, false
			}
			return float64(p.Server.CPUPerMessage), true
		}), durf)
		row("server rss", pub(func(p *load.PubResult) (float64, bool) {
			if p.Server == nil {
				return 0, false
			}
			return float64(p.Server.RSS), true
		}), measure.FormatBytes)
		row("bench cpu %", pub(func(p *load.PubResult) (float64, bool) { return p.Bench.CPUPercent, true }),
			func(v float64) string { return fmt.Sprintf("%.0f%%", v) })
	case load.WorkloadPairs, load.WorkloadFanout:
		ps := func(f func(*load.PubSubResult) float64) func(*compare.TargetResult) (float64, bool) {
			return func(t *compare.TargetResult) (float64, bool) {
				if t.PubSub == nil {
					return 0, false
				}
				return f(t.PubSub), true
			}
		}
		server := func(f func(*measure.ProcessUsage) float64) func(*compare.TargetResult) (float64, bool) {
			return func(t *compare.TargetResult) (float64, bool) {
				if t.PubSub == nil || t.PubSub.Server == nil {
					return 0, false
				}
				return f(t.PubSub.Server), true
			}
		}
		durf := func(v float64) string { return measure.FormatDuration(time.Duration(v)) }
		pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v) }
		row("delivered/s", ps(func(r *load.PubSubResult) float64 { return r.DeliveredPerSec }), measure.FormatRate)
		textRow("  per round", func(t *compare.TargetResult) string { return perRound(t, measure.FormatRate) })
		row("e2e p50", ps(func(r *load.PubSubResult) float64 { return float64(r.Latency.P50) }), durf)
		row("e2e p99", ps(func(r *load.PubSubResult) float64 { return float64(r.Latency.P99) }), durf)
		row("e2e p99.9", ps(func(r *load.PubSubResult) float64 { return float64(r.Latency.P999) }), durf)
		row("e2e max", ps(func(r *load.PubSubResult) float64 { return float64(r.Latency.Max) }), durf)
		row("published/s", ps(func(r *load.PubSubResult) float64 { return r.Publish.SentPerSec }), measure.FormatRate)
		row("puback p99", ps(func(r *load.PubSubResult) float64 { return float64(r.Publish.Latency.P99) }), durf)
		row("expected", ps(func(r *load.PubSubResult) float64 { return float64(r.Expected) }), measure.FormatCount)
		row("lost", ps(func(r *load.PubSubResult) float64 { return float64(r.Lost) }), measure.FormatCount)
		row("duplicates", ps(func(r *load.PubSubResult) float64 { return float64(r.Duplicates) }), measure.FormatCount)
		row("out of order", ps(func(r *load.PubSubResult) float64 { return float64(r.OutOfOrder) }), measure.FormatCount)
		row("errors", ps(func(r *load.PubSubResult) float64 { return float64(r.Errors()) }), measure.FormatCount)
		row("subs ready after", ps(func(r *load.PubSubResult) float64 { return float64(r.ReadyAfter) }), durf)
		row("server cpu %", server(func(u *measure.ProcessUsage) float64 { return u.CPUPercent }), pct)
		row("server cpu/delivery", server(func(u *measure.ProcessUsage) float64 { return float64(u.CPUPerMessage) }), durf)
		row("server rss", server(func(u *measure.ProcessUsage) float64 { return float64(u.RSS) }), measure.FormatBytes)
		row("bench cpu %", ps(func(r *load.PubSubResult) float64 { return r.Bench.CPUPercent }), pct)
	case load.WorkloadConnect:
		cn := func(f func(*load.ConnectResult) (float64, bool)) func(*compare.TargetResult) (float64, bool) {
			return func(t *compare.TargetResult) (float64, bool) {
				if t.Connect == nil {
					return 0, false
				}
				return f(t.Connect)
			}
		}
		durf := func(v float64) string { return measure.FormatDuration(time.Duration(v)) }
		pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v) }
		row("connects/s", cn(func(r *load.ConnectResult) (float64, bool) { return r.ConnectsPerSec, true }), measure.FormatRate)
		textRow("  per round", func(t *compare.TargetResult) string { return perRound(t, measure.FormatRate) })
		textRow("  warm-up passes", func(t *compare.TargetResult) string {
			if t.Connect == nil {
				return "-"
			}
			var s []string
			for _, p := range t.Connect.Passes {
				if p.Warmup {
					s = append(s, measure.FormatRate(p.ConnectsPerSec))
				}
			}
			if len(s) == 0 {
				return "-"
			}
			return strings.Join(s, " ")
		})
		row("connack p50", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Connack.P50), r.Connack.Count > 0 }), durf)
		row("connack p99", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Connack.P99), r.Connack.Count > 0 }), durf)
		row("connack max", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Connack.Max), r.Connack.Count > 0 }), durf)
		row("suback p50", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Suback.P50), r.Suback.Count > 0 }), durf)
		row("suback p99", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Suback.P99), r.Suback.Count > 0 }), durf)
		row("connected", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Connected), true }), measure.FormatCount)
		row("refused", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Refused), true }), measure.FormatCount)
		row("errors", cn(func(r *load.ConnectResult) (float64, bool) { return float64(r.Errors), true }), measure.FormatCount)
		row("server cpu %", cn(func(r *load.ConnectResult) (float64, bool) {
			if r.Server == nil {
				return 0, false
			}
			return r.Server.CPUPercent, true
		}), pct)
		row("server cpu/connect", cn(func(r *load.ConnectResult) (float64, bool) {
			if r.Server == nil {
				return 0, false
			}
			return float64(r.Server.CPUPerMessage), true
		}), durf)
		row("bench cpu %", cn(func(r *load.ConnectResult) (float64, bool) { return r.Bench.CPUPercent, true }), pct)
		row("bench cpu/connect", cn(func(r *load.ConnectResult) (float64, bool) {
			return float64(r.Bench.CPUPerMessage), r.Bench.CPUPerMessage > 0
		}), durf)
	case load.WorkloadIdle:
		idle := func(f func(*load.IdleResult) (float64, bool)) func(*compare.TargetResult) (float64, bool) {
			return func(t *compare.TargetResult) (float64, bool) {
				if t.Idle == nil {
					return 0, false
				}
				return f(t.Idle)
			}
		}
		measured := func(f func(*load.IdleResult) float64) func(*compare.TargetResult) (float64, bool) {
			// A target of several processes has its sums measured by
			// compare, not by the workload (no server pid).
			return idle(func(r *load.IdleResult) (float64, bool) { return f(r), r.Config.ServerPID > 0 || r.RSS > 0 })
		}
		row("connected", idle(func(r *load.IdleResult) (float64, bool) { return float64(r.Connected), true }), measure.FormatCount)
		row("alive after", idle(func(r *load.IdleResult) (float64, bool) { return float64(r.Alive), true }), measure.FormatCount)
		row("connect errors", idle(func(r *load.IdleResult) (float64, bool) { return float64(r.ConnectErrors), true }), measure.FormatCount)
		if cfg.Idle.WSPing > 0 {
			row("websocket pings", idle(func(r *load.IdleResult) (float64, bool) { return float64(r.WSPings), true }), measure.FormatCount)
			row("websocket pongs", idle(func(r *load.IdleResult) (float64, bool) { return float64(r.WSPongs), true }), measure.FormatCount)
		}
		row("rss baseline", measured(func(r *load.IdleResult) float64 { return float64(r.BaselineRSS) }), measure.FormatBytes)
		early := fmt.Sprintf("@%v", min(load.EarlyAfter, cfg.Idle.Settle))
		end := fmt.Sprintf("@%v", cfg.Idle.Settle)
		row("rss "+early, measured(func(r *load.IdleResult) float64 { return float64(r.EarlyRSS) }), measure.FormatBytes)
		row("rss "+end, measured(func(r *load.IdleResult) float64 { return float64(r.RSS) }), measure.FormatBytes)
		row("rss peak", measured(func(r *load.IdleResult) float64 { return float64(r.PeakRSS) }), measure.FormatBytes)
		row("bytes/conn "+early, measured(func(r *load.IdleResult) float64 { return r.EarlyBytesPerConn }), measure.FormatBytes)
		row("bytes/conn "+end, measured(func(r *load.IdleResult) float64 { return r.BytesPerConn }), measure.FormatBytes)
		row("bytes/conn peak", measured(func(r *load.IdleResult) float64 { return r.PeakBytesPerConn }), measure.FormatBytes)
		row("idle cpu % "+early+"–"+end, measured(func(r *load.IdleResult) float64 { return r.IdleCPUPercent }), func(v float64) string { return fmt.Sprintf("%.2f%%", v) })
		textRow("  per round", func(t *compare.TargetResult) string { return perRound(t, measure.FormatBytes) })
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeProcesses(w, r); err != nil {
		return err
	}
	for _, t := range r.Targets {
		if len(t.Profiles) > 0 {
			fmt.Fprintf(w, "cpu profiles of %s: %s\n", t.Target.Name, strings.Join(t.Profiles, " "))
		} else if t.Profile != "" {
			fmt.Fprintf(w, "cpu profile of %s: %s\n", t.Target.Name, t.Profile)
		}
		if t.ProfileError != "" {
			fmt.Fprintf(w, "cpu profile of %s failed: %s\n", t.Target.Name, t.ProfileError)
		}
		if t.Connect != nil && t.Connect.FirstError != "" {
			fmt.Fprintf(w, "first failure of %s: %s%s\n", t.Target.Name, t.Connect.FirstError, formatCodes(t.Connect.RefusedCodes))
		}
	}
	if cfg.Workload == load.WorkloadConnect {
		writeGeneratorWarning(w, r.Targets)
	}
	if (cfg.Workload == load.WorkloadPub && cfg.Pub.QoS > 0) || cfg.Workload == load.WorkloadPairs || cfg.Workload == load.WorkloadFanout || cfg.Workload == load.WorkloadConnect {
		fmt.Fprintf(w, "ratios: target/%s; above 1 is more throughput, but also more latency, cpu and memory\n", base.Target.Name)
	} else {
		fmt.Fprintf(w, "ratios: target/%s\n", base.Target.Name)
	}
	return nil
}

// generatorSpread is how far apart the load generator's own CPU per connect
// may be across the targets of a connect comparison before the report warns.
const generatorSpread = 1.5

// writeGeneratorWarning warns when the load generator spent much more CPU
// per connect on one target than on another: its own work then differs with
// the broker (TIME_WAIT sockets left on its side slowed its connect() when a
// broker waited for the client to close, until the generator spread its
// connections over source addresses: load.LoopbackSources), and a rate may
// be the generator's limit rather than the broker's.
func writeGeneratorWarning(w io.Writer, targets []*compare.TargetResult) {
	var lo, hi *compare.TargetResult
	for _, t := range targets {
		if t.Connect == nil || t.Connect.Bench.CPUPerMessage <= 0 {
			continue
		}
		if lo == nil || t.Connect.Bench.CPUPerMessage < lo.Connect.Bench.CPUPerMessage {
			lo = t
		}
		if hi == nil || t.Connect.Bench.CPUPerMessage > hi.Connect.Bench.CPUPerMessage {
			hi = t
		}
	}
	if lo == nil || float64(hi.Connect.Bench.CPUPerMessage) <= generatorSpread*float64(lo.Connect.Bench.CPUPerMessage) {
		return
	}
	fmt.Fprintf(w, "warning: the load generator spent %v of CPU per connect against %s and %v against %s: "+
		"its own work differs with the broker, and a rate may be the generator's limit rather than the broker's\n",
		measure.FormatDuration(hi.Connect.Bench.CPUPerMessage), hi.Target.Name, measure.FormatDuration(lo.Connect.Bench.CPUPerMessage), lo.Target.Name)
}
