package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/compare"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// mainRetained runs `fleetgate-bench retained`: the retained workload
// against one broker.
func mainRetained(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetgate-bench retained", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.RetainedConfig
	var c common
	cfg.RegisterFlags(fs)
	c.register(fs)
	if done, err := parse(fs, args, cfg.Validate); done || err != nil {
		return err
	}
	res, err := load.RunRetained(ctx, cfg, load.Hooks{Progress: c.progress(stderr)})
	if err != nil {
		return err
	}
	return c.output(stdout, res, func(w io.Writer) error { return writeRetained(w, res) })
}

// describeRetained is the workload in one line.
func describeRetained(c load.RetainedConfig) string {
	version := "3.1.1"
	if c.Version == 5 {
		version = "5.0"
	}
	prefix := strings.TrimSuffix(c.TopicPrefix, "/")
	return fmt.Sprintf("%d retained QoS 1 messages of %d bytes on %s/<i/1000>/<i> (%d publishers, window %d), then SUBSCRIBE %s/# QoS %d; MQTT %s",
		c.Messages, c.PayloadSize, prefix, c.Publishers, c.Window, prefix, c.SubQoS, version)
}

// writeRetained prints a retained result for people.
func writeRetained(w io.Writer, r *load.RetainedResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "target\t%s\n", c.Addr)
	fmt.Fprintf(tw, "workload\t%s\n", describeRetained(c))
	fmt.Fprintf(tw, "published\t%d acked (%d refused) in %v, %s/s\tstored %v after the last PUBACK (%d probe SUBSCRIBEs)\n",
		r.Published, r.PublishRefused, r.PublishTime.Round(time.Millisecond), measure.FormatRate(r.PublishPerSec),
		r.StoredAfter.Round(time.Millisecond), r.ProbeAttempts)
	fmt.Fprintf(tw, "arrived\t%d of %d\tmissing %d, duplicates %d, not this run's %d, without RETAIN %d; %s\n",
		r.Unique, r.Expected, r.Missing, r.Duplicates, r.Foreign, r.NotRetained, r.End)
	fmt.Fprintf(tw, "from SUBSCRIBE sent\tsuback %s\tfirst message %s\tlast message %s\t%s messages/s\n",
		measure.FormatDuration(r.SubackAfter), measure.FormatDuration(r.FirstAfter), measure.FormatDuration(r.LastAfter), measure.FormatRate(r.PerSec))
	if len(r.Tenths) > 0 {
		fmt.Fprintf(tw, "to 10 %%, 20 %%, ...\t%s\n", formatTenths(r.Tenths))
	}
	m := r.Memory
	if m.RSSSamples > 0 {
		fmt.Fprintf(tw, "server rss\tbefore %s\tpeak %s\t(+%s; %d samples)\n", measure.FormatBytes(float64(m.BaselineRSS)),
			measure.FormatBytes(float64(m.PeakRSS)), measure.FormatBytes(float64(m.PeakRSS-m.BaselineRSS)), m.RSSSamples)
	}
	if m.HeapSamples > 0 {
		fmt.Fprintf(tw, "server go heap\tbefore %s\tpeak %s\t(+%s; in use: before %s, peak %s; gc goal: before %s, peak %s; %d samples)\n", measure.FormatBytes(float64(m.BaselineHeap)),
			measure.FormatBytes(float64(m.PeakHeap)), measure.FormatBytes(float64(m.PeakHeap-m.BaselineHeap)),
			measure.FormatBytes(float64(m.BaselineHeapInuse)), measure.FormatBytes(float64(m.PeakHeapInuse)),
			measure.FormatBytes(float64(m.BaselineNextGC)), measure.FormatBytes(float64(m.PeakNextGC)), m.HeapSamples)
	}
	if m.SampleErrors > 0 {
		fmt.Fprintf(tw, "memory samples failed\t%d\t%s\n", m.SampleErrors, m.SampleError)
	}
	if r.Server != nil {
		fmt.Fprintf(tw, "server cpu\t%.0f%%\t%s cpu/message\n", r.Server.CPUPercent, measure.FormatDuration(r.Server.CPUPerMessage))
	}
	fmt.Fprintf(tw, "bench cpu\t%.0f%%\t%s cpu/message\n", r.Bench.CPUPercent, measure.FormatDuration(r.Bench.CPUPerMessage))
	return tw.Flush()
}

// writeRetainedCompare prints a comparison of the retained workload: one
// column per target, then each target's ratio to the baseline.
func writeRetainedCompare(w io.Writer, res *compare.Result) error {
	cfg := res.Config
	base := res.Result(cfg.Baseline)
	var cols, others []*compare.TargetResult
	for _, t := range res.Targets {
		if t != base {
			others = append(others, t)
		}
	}
	cols = append(append(cols, others...), base)
	fmt.Fprintf(w, "workload: %s; %d round(s) per target\n", describeRetained(cfg.Retained), cfg.Rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{""}
	for _, t := range cols {
		header = append(header, t.Target.Name)
	}
	for _, t := range others {
		header = append(header, t.Target.Name+"/"+base.Target.Name)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")

	type figure func(*load.RetainedResult) (float64, bool)
	row := func(label string, val figure, format func(float64) string) {
		cells := []string{label}
		for _, t := range cols {
			if v, ok := val(t.Retained); ok {
				cells = append(cells, format(v))
			} else {
				cells = append(cells, "-")
			}
		}
		bv, bok := val(base.Retained)
		for _, t := range others {
			if v, ok := val(t.Retained); ok && bok && bv != 0 {
				cells = append(cells, fmt.Sprintf("%.2fx", v/bv))
			} else {
				cells = append(cells, "-")
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	dur := func(f func(*load.RetainedResult) time.Duration) figure {
		return func(r *load.RetainedResult) (float64, bool) { return float64(f(r)), r.Unique > 0 }
	}
	bytes := func(f func(load.RetainedMemory) int64, samples func(load.RetainedMemory) int) figure {
		return func(r *load.RetainedResult) (float64, bool) { return float64(f(r.Memory)), samples(r.Memory) > 0 }
	}
	durf := func(v float64) string { return measure.FormatDuration(time.Duration(v)) }
	bytesf := func(v float64) string { return measure.FormatBytes(v) }
	count := func(f func(*load.RetainedResult) int64) figure {
		return func(r *load.RetainedResult) (float64, bool) { return float64(f(r)), true }
	}
	rss := func(m load.RetainedMemory) int { return m.RSSSamples }
	heap := func(m load.RetainedMemory) int { return m.HeapSamples }

	row("messages arrived (all rounds)", count(func(r *load.RetainedResult) int64 { return r.Unique }), measure.FormatCount)
	row("  of", count(func(r *load.RetainedResult) int64 { return r.Expected }), measure.FormatCount)
	row("  duplicates", count(func(r *load.RetainedResult) int64 { return r.Duplicates }), measure.FormatCount)
	row("  not this run's", count(func(r *load.RetainedResult) int64 { return r.Foreign }), measure.FormatCount)
	row("SUBSCRIBE → SUBACK", dur(func(r *load.RetainedResult) time.Duration { return r.SubackAfter }), durf)
	row("SUBSCRIBE → first message", dur(func(r *load.RetainedResult) time.Duration { return r.FirstAfter }), durf)
	row("SUBSCRIBE → half the messages", func(r *load.RetainedResult) (float64, bool) {
		if len(r.Tenths) < 5 {
			return 0, false
		}
		return float64(r.Tenths[4]), true
	}, durf)
	row("SUBSCRIBE → last message", dur(func(r *load.RetainedResult) time.Duration { return r.LastAfter }), durf)
	row("messages/s", func(r *load.RetainedResult) (float64, bool) { return r.PerSec, r.Unique > 0 }, measure.FormatRate)
	row("peak RSS", bytes(func(m load.RetainedMemory) int64 { return m.PeakRSS }, rss), bytesf)
	row("  RSS growth (peak - before)", bytes(func(m load.RetainedMemory) int64 { return m.PeakRSS - m.BaselineRSS }, rss), bytesf)
	row("peak Go heap (heap_alloc)", bytes(func(m load.RetainedMemory) int64 { return m.PeakHeap }, heap), bytesf)
	row("  Go heap growth (peak - before)", bytes(func(m load.RetainedMemory) int64 { return m.PeakHeap - m.BaselineHeap }, heap), bytesf)
	row("peak Go heap in use", bytes(func(m load.RetainedMemory) int64 { return m.PeakHeapInuse }, heap), bytesf)
	row("peak GC goal (live heap × 2)", bytes(func(m load.RetainedMemory) int64 { return m.PeakNextGC }, heap), bytesf)
	row("  GC goal before", bytes(func(m load.RetainedMemory) int64 { return m.BaselineNextGC }, heap), bytesf)
	row("server CPU per message", func(r *load.RetainedResult) (float64, bool) {
		if r.Server == nil || r.Unique == 0 {
			return 0, false
		}
		return float64(r.Server.CPUPerMessage), true
	}, durf)
	row("publish: acked/s", func(r *load.RetainedResult) (float64, bool) { return r.PublishPerSec, true }, measure.FormatRate)
	row("publish: stored after last PUBACK", dur(func(r *load.RetainedResult) time.Duration { return r.StoredAfter }), durf)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range cols {
		var rounds []string
		for _, r := range t.RetainedRounds {
			rounds = append(rounds, fmt.Sprintf("%d of %d in %s (%s)", r.Unique, r.Expected, measure.FormatDuration(r.LastAfter), r.End))
		}
		fmt.Fprintf(w, "%s per round: %s\n", t.Target.Name, strings.Join(rounds, "; "))
		if t.Retained != nil && len(t.Retained.Tenths) > 0 {
			fmt.Fprintf(w, "%s to 10 %%, 20 %%, ... of the messages (mean of the rounds): %s\n", t.Target.Name, formatTenths(t.Retained.Tenths))
		}
		if t.Retained != nil && t.Retained.Memory.SampleErrors > 0 {
			fmt.Fprintf(w, "%s: %d memory samples failed: %s\n", t.Target.Name, t.Retained.Memory.SampleErrors, t.Retained.Memory.SampleError)
		}
		if t.Profile != "" {
			fmt.Fprintf(w, "cpu profile of %s: %s\n", t.Target.Name, t.Profile)
		}
		if t.ProfileError != "" {
			fmt.Fprintf(w, "cpu profile of %s failed: %s\n", t.Target.Name, t.ProfileError)
		}
	}
	return nil
}

// formatTenths prints the times to each tenth of the messages.
func formatTenths(ts []time.Duration) string {
	s := make([]string, len(ts))
	for i, d := range ts {
		s[i] = measure.FormatDuration(d)
	}
	return strings.Join(s, " ")
}
