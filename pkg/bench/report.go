package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// WritePub prints a publish result for people.
func WritePub(w io.Writer, r *PubResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%s\n", describePub(c))
	fmt.Fprintf(tw, "measured\t%v\n", r.Measured.Round(time.Millisecond))
	if c.QoS > 0 {
		fmt.Fprintf(tw, "acked/s\t%s\t(%d acks)\n", fmtRate(r.AckedPerSec), r.Acked)
	}
	fmt.Fprintf(tw, "sent/s\t%s\t(%d publishes)\n", fmtRate(r.SentPerSec), r.Sent)
	if c.QoS > 0 {
		l := r.Latency
		fmt.Fprintf(tw, "latency (%s)\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s\n", ackName(c.QoS),
			fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	}
	fmt.Fprintf(tw, "errors\t%d\tnegative acks %d, disconnects %d, connect errors %d, unacked %d, unknown acks %d\n",
		r.Errors(), r.NegativeAcks, r.Disconnects, r.ConnectErrors, r.Unacked, r.UnknownAcks)
	if r.Server != nil {
		fmt.Fprintf(tw, "server\tcpu %.0f%%\t%s cpu/msg\trss %s\n", r.Server.CPUPercent, fmtDur(r.Server.CPUPerMessage), fmtBytes(float64(r.Server.RSS)))
	}
	fmt.Fprintf(tw, "bench\tcpu %.0f%%\t%s cpu/msg\n", r.Bench.CPUPercent, fmtDur(r.Bench.CPUPerMessage))
	return tw.Flush()
}

// WriteIdle prints an idle result for people.
func WriteIdle(w io.Writer, r *IdleResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%d idle connections, MQTT %s, keepalive %v\n", c.Clients, versionName(c.Version), c.Keepalive)
	fmt.Fprintf(tw, "connected\t%d\t(%d failed) in %v; %d still answered PINGREQ afterwards\n", r.Connected, r.ConnectErrors, r.ConnectTime.Round(time.Millisecond), r.Alive)
	if c.ServerPID > 0 {
		fmt.Fprintf(tw, "server rss\tbaseline %s\tafter %v %s\tafter %v %s\tpeak %s\n", fmtBytes(float64(r.BaselineRSS)),
			min(EarlyAfter, c.Settle), fmtBytes(float64(r.EarlyRSS)), c.Settle, fmtBytes(float64(r.RSS)), fmtBytes(float64(r.PeakRSS)))
		fmt.Fprintf(tw, "per connection\t%s\t(%.0f bytes; after %v %s, peak %s)\n", fmtBytes(r.BytesPerConn), r.BytesPerConn,
			min(EarlyAfter, c.Settle), fmtBytes(r.EarlyBytesPerConn), fmtBytes(r.PeakBytesPerConn))
	} else {
		fmt.Fprintf(tw, "server rss\tnot measured (no -server-pid)\n")
	}
	return tw.Flush()
}

// WritePubSub prints a pub/sub result for people.
func WritePubSub(w io.Writer, r *PubSubResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%s\n", describePubSub(c))
	fmt.Fprintf(tw, "subscriptions ready\tafter %v\t(%d subscribers not reached)\n", r.ReadyAfter.Round(time.Millisecond), r.NotReady)
	fmt.Fprintf(tw, "measured\t%v\n", r.Measured.Round(time.Millisecond))
	fmt.Fprintf(tw, "delivered/s\t%s\t(%d deliveries)\n", fmtRate(r.DeliveredPerSec), r.Delivered)
	l := r.Latency
	fmt.Fprintf(tw, "end-to-end latency\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s\n",
		fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	if p := r.Publish; p != nil {
		fmt.Fprintf(tw, "published\t%s/s sent\t%s/s acked\t%s p99 %s\n", fmtRate(p.SentPerSec), fmtRate(p.AckedPerSec), ackName(max(c.QoS, 1)), fmtDur(p.Latency.P99))
	}
	fmt.Fprintf(tw, "whole run\t%d expected\t%d received\tlost %d, duplicates %d, out of order %d, foreign %d\n",
		r.Expected, r.Received, r.Lost, r.Duplicates, r.OutOfOrder, r.Foreign)
	var pubErrs int64
	if r.Publish != nil {
		pubErrs = r.Publish.Errors()
	}
	fmt.Fprintf(tw, "errors\t%d\tpublisher errors %d, subscriber connect errors %d, subscribe failures %d, subscriber disconnects %d, lost %d\n",
		r.Errors(), pubErrs, r.SubConnectErrors, r.SubscribeFailures, r.SubDisconnects, r.Lost)
	if r.Server != nil {
		fmt.Fprintf(tw, "server\tcpu %.0f%%\t%s cpu/delivery\trss %s\n", r.Server.CPUPercent, fmtDur(r.Server.CPUPerMessage), fmtBytes(float64(r.Server.RSS)))
	}
	fmt.Fprintf(tw, "bench\tcpu %.0f%%\t%s cpu/delivery\n", r.Bench.CPUPercent, fmtDur(r.Bench.CPUPerMessage))
	return tw.Flush()
}

func describePubSub(c PubSubConfig) string {
	var who string
	if c.Workload == WorkloadFanout {
		who = fmt.Sprintf("1 publisher → %d subscribers of one topic", c.Subscribers)
	} else {
		who = fmt.Sprintf("%d publisher → subscriber pairs", c.Pairs)
	}
	return fmt.Sprintf("%s; publish qos %d, subscribe qos %d, %s sessions, %d-byte payloads, MQTT %s, %s, %v measured after %v warm-up",
		who, c.QoS, c.SubQoS, c.sessionKind(), c.PayloadSize, versionName(c.Version), c.Mode(), c.Duration, c.Warmup)
}

// WriteCompare prints the comparison table: one column per target and the
// ratio of each target to the baseline.
func WriteCompare(w io.Writer, r *CompareResult) error {
	cfg := r.Config
	base := r.Result(cfg.Baseline)
	var others []*TargetResult
	for _, t := range r.Targets {
		if t != base {
			others = append(others, t)
		}
	}
	cols := append(append([]*TargetResult{}, others...), base)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{""}
	for _, t := range cols {
		header = append(header, t.Target.Name)
	}
	for _, t := range others {
		header = append(header, t.Target.Name+"/"+base.Target.Name)
	}
	switch cfg.Workload {
	case WorkloadPub:
		fmt.Fprintf(w, "workload: %s; %d round(s) per target\n", describePub(cfg.Pub), cfg.Rounds)
	case WorkloadPairs, WorkloadFanout:
		fmt.Fprintf(w, "workload: %s; %d round(s) per target\n", describePubSub(cfg.PubSub), cfg.Rounds)
	case WorkloadIdle:
		c := cfg.Idle
		par := ""
		if cfg.Parallel {
			par = ", all targets at once"
		}
		fmt.Fprintf(w, "workload: %d idle connections, MQTT %s, keepalive %v, settle %v; %d round(s) per target%s\n",
			c.Clients, versionName(c.Version), c.Keepalive, c.Settle, cfg.Rounds, par)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")

	row := func(label string, val func(*TargetResult) (float64, bool), format func(float64) string) {
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
	perRound := func(t *TargetResult, format func(float64) string) string {
		var s []string
		for _, v := range t.PerRound {
			s = append(s, format(v))
		}
		return strings.Join(s, " ")
	}
	textRow := func(label string, val func(*TargetResult) string) {
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
	case WorkloadPub:
		pub := func(f func(*PubResult) (float64, bool)) func(*TargetResult) (float64, bool) {
			return func(t *TargetResult) (float64, bool) {
				if t.Pub == nil {
					return 0, false
				}
				return f(t.Pub)
			}
		}
		lat := func(f func(LatencySummary) time.Duration) func(*TargetResult) (float64, bool) {
			return pub(func(p *PubResult) (float64, bool) {
				return float64(f(p.Latency)), p.Latency.Count > 0
			})
		}
		durf := func(v float64) string { return fmtDur(time.Duration(v)) }
		name := "acked/s"
		if cfg.Pub.QoS == 0 {
			name = "sent/s"
		}
		row(name, pub(func(p *PubResult) (float64, bool) { return p.Throughput(), true }), fmtRate)
		textRow("  per round", func(t *TargetResult) string { return perRound(t, fmtRate) })
		if cfg.Pub.QoS > 0 {
			ack := ackName(cfg.Pub.QoS)
			row(ack+" p50", lat(func(l LatencySummary) time.Duration { return l.P50 }), durf)
			row(ack+" p99", lat(func(l LatencySummary) time.Duration { return l.P99 }), durf)
			row(ack+" p99.9", lat(func(l LatencySummary) time.Duration { return l.P999 }), durf)
			row(ack+" max", lat(func(l LatencySummary) time.Duration { return l.Max }), durf)
		}
		row("errors", pub(func(p *PubResult) (float64, bool) { return float64(p.Errors()), true }), fmtCount)
		row("server cpu %", pub(func(p *PubResult) (float64, bool) {
			if p.Server == nil {
				return 0, false
			}
			return p.Server.CPUPercent, true
		}), func(v float64) string { return fmt.Sprintf("%.0f%%", v) })
		row("server cpu/msg", pub(func(p *PubResult) (float64, bool) {
			if p.Server == nil {
				return 0, false
			}
			return float64(p.Server.CPUPerMessage), true
		}), durf)
		row("server rss", pub(func(p *PubResult) (float64, bool) {
			if p.Server == nil {
				return 0, false
			}
			return float64(p.Server.RSS), true
		}), fmtBytes)
		row("bench cpu %", pub(func(p *PubResult) (float64, bool) { return p.Bench.CPUPercent, true }),
			func(v float64) string { return fmt.Sprintf("%.0f%%", v) })
	case WorkloadPairs, WorkloadFanout:
		ps := func(f func(*PubSubResult) float64) func(*TargetResult) (float64, bool) {
			return func(t *TargetResult) (float64, bool) {
				if t.PubSub == nil {
					return 0, false
				}
				return f(t.PubSub), true
			}
		}
		server := func(f func(*ProcessUsage) float64) func(*TargetResult) (float64, bool) {
			return func(t *TargetResult) (float64, bool) {
				if t.PubSub == nil || t.PubSub.Server == nil {
					return 0, false
				}
				return f(t.PubSub.Server), true
			}
		}
		durf := func(v float64) string { return fmtDur(time.Duration(v)) }
		pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v) }
		row("delivered/s", ps(func(r *PubSubResult) float64 { return r.DeliveredPerSec }), fmtRate)
		textRow("  per round", func(t *TargetResult) string { return perRound(t, fmtRate) })
		row("e2e p50", ps(func(r *PubSubResult) float64 { return float64(r.Latency.P50) }), durf)
		row("e2e p99", ps(func(r *PubSubResult) float64 { return float64(r.Latency.P99) }), durf)
		row("e2e p99.9", ps(func(r *PubSubResult) float64 { return float64(r.Latency.P999) }), durf)
		row("e2e max", ps(func(r *PubSubResult) float64 { return float64(r.Latency.Max) }), durf)
		row("published/s", ps(func(r *PubSubResult) float64 { return r.Publish.SentPerSec }), fmtRate)
		row("puback p99", ps(func(r *PubSubResult) float64 { return float64(r.Publish.Latency.P99) }), durf)
		row("expected", ps(func(r *PubSubResult) float64 { return float64(r.Expected) }), fmtCount)
		row("lost", ps(func(r *PubSubResult) float64 { return float64(r.Lost) }), fmtCount)
		row("duplicates", ps(func(r *PubSubResult) float64 { return float64(r.Duplicates) }), fmtCount)
		row("out of order", ps(func(r *PubSubResult) float64 { return float64(r.OutOfOrder) }), fmtCount)
		row("errors", ps(func(r *PubSubResult) float64 { return float64(r.Errors()) }), fmtCount)
		row("subs ready after", ps(func(r *PubSubResult) float64 { return float64(r.ReadyAfter) }), durf)
		row("server cpu %", server(func(u *ProcessUsage) float64 { return u.CPUPercent }), pct)
		row("server cpu/delivery", server(func(u *ProcessUsage) float64 { return float64(u.CPUPerMessage) }), durf)
		row("server rss", server(func(u *ProcessUsage) float64 { return float64(u.RSS) }), fmtBytes)
		row("bench cpu %", ps(func(r *PubSubResult) float64 { return r.Bench.CPUPercent }), pct)
	case WorkloadIdle:
		idle := func(f func(*IdleResult) (float64, bool)) func(*TargetResult) (float64, bool) {
			return func(t *TargetResult) (float64, bool) {
				if t.Idle == nil {
					return 0, false
				}
				return f(t.Idle)
			}
		}
		measured := func(f func(*IdleResult) float64) func(*TargetResult) (float64, bool) {
			return idle(func(r *IdleResult) (float64, bool) { return f(r), r.Config.ServerPID > 0 })
		}
		row("connected", idle(func(r *IdleResult) (float64, bool) { return float64(r.Connected), true }), fmtCount)
		row("alive after", idle(func(r *IdleResult) (float64, bool) { return float64(r.Alive), true }), fmtCount)
		row("connect errors", idle(func(r *IdleResult) (float64, bool) { return float64(r.ConnectErrors), true }), fmtCount)
		row("rss baseline", measured(func(r *IdleResult) float64 { return float64(r.BaselineRSS) }), fmtBytes)
		early := fmt.Sprintf("@%v", min(EarlyAfter, cfg.Idle.Settle))
		end := fmt.Sprintf("@%v", cfg.Idle.Settle)
		row("rss "+early, measured(func(r *IdleResult) float64 { return float64(r.EarlyRSS) }), fmtBytes)
		row("rss "+end, measured(func(r *IdleResult) float64 { return float64(r.RSS) }), fmtBytes)
		row("rss peak", measured(func(r *IdleResult) float64 { return float64(r.PeakRSS) }), fmtBytes)
		row("bytes/conn "+early, measured(func(r *IdleResult) float64 { return r.EarlyBytesPerConn }), fmtBytes)
		row("bytes/conn "+end, measured(func(r *IdleResult) float64 { return r.BytesPerConn }), fmtBytes)
		row("bytes/conn peak", measured(func(r *IdleResult) float64 { return r.PeakBytesPerConn }), fmtBytes)
		textRow("  per round", func(t *TargetResult) string { return perRound(t, fmtBytes) })
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range r.Targets {
		if t.Profile != "" {
			fmt.Fprintf(w, "cpu profile of %s: %s\n", t.Target.Name, t.Profile)
		}
		if t.ProfileError != "" {
			fmt.Fprintf(w, "cpu profile of %s failed: %s\n", t.Target.Name, t.ProfileError)
		}
	}
	if (cfg.Workload == WorkloadPub && cfg.Pub.QoS > 0) || cfg.Workload == WorkloadPairs || cfg.Workload == WorkloadFanout {
		fmt.Fprintf(w, "ratios: target/%s; above 1 is more throughput, but also more latency, cpu and memory\n", base.Target.Name)
	} else {
		fmt.Fprintf(w, "ratios: target/%s\n", base.Target.Name)
	}
	return nil
}

func describePub(c PubConfig) string {
	return fmt.Sprintf("qos %d, %d publishers, %d-byte payloads, MQTT %s, %s, %v measured after %v warm-up",
		c.QoS, c.Publishers, c.PayloadSize, versionName(c.Version), c.Mode(), c.Duration, c.Warmup)
}

func ackName(qos int) string {
	if qos == 2 {
		return "pubcomp"
	}
	return "puback"
}

func versionName(v int) string {
	if v == 5 {
		return "5.0"
	}
	return "3.1.1"
}

// fmtRate prints a rate with thousands separators.
func fmtRate(v float64) string { return fmtCount(math.Round(v)) }

func fmtCount(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtDur prints a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}

// fmtBytes prints a size in binary units.
func fmtBytes(v float64) string {
	neg := v < 0
	v = math.Abs(v)
	var s string
	switch {
	case v < 1<<10:
		s = fmt.Sprintf("%.0f B", v)
	case v < 1<<20:
		s = fmt.Sprintf("%.1f KiB", v/(1<<10))
	case v < 1<<30:
		s = fmt.Sprintf("%.1f MiB", v/(1<<20))
	default:
		s = fmt.Sprintf("%.2f GiB", v/(1<<30))
	}
	if neg {
		return "-" + s
	}
	return s
}
