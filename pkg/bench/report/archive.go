package report

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/archivebench"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// WriteArchive prints the archive scenario side by side: the archiver, the
// plain loop, and their ratio.
func WriteArchive(w io.Writer, r *archivebench.Result) error {
	c, p := r.Config, r.Preload
	fmt.Fprintf(w, "workload: %d inbound records (MQTT 5, %d-%d byte JSON payloads; %.0f bytes of key, value and %.1f headers on average) "+
		"in %d partitions; batches of %d records, payload %s; %d round(s) per side, alternating\n",
		p.Records, c.PayloadMin, c.PayloadMax, p.RecordBytes, p.Headers, c.Partitions, c.Archive.BatchRecords, c.Archive.Payload, c.Rounds)
	fmt.Fprintf(w, "mongodb: %s\n", r.MongoDB)
	fmt.Fprintf(w, "kafka: %s\n", r.Kafka)
	fmt.Fprintf(w, "plain: archive.MessageDocument + InsertMany (unordered) in a loop over records in memory; archiver: a Service in this process from the start of the topic\n")

	a, b := r.Archiver, r.Plain
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tarchiver\tplain\tarchiver/plain\t")
	ratio := func(x, y float64) string {
		if y == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", x/y)
	}
	row := func(label string, x, y float64, format func(float64) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", label, format(x), format(y), ratio(x, y))
	}
	text := func(label, x, y string) { fmt.Fprintf(tw, "%s\t%s\t%s\t\t\n", label, x, y) }
	durf := func(v float64) string { return measure.FormatDuration(time.Duration(v)) }
	pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v) }
	bytesf := func(v float64) string { return measure.FormatBytes(v) }
	perRun := func(s *archivebench.SideResult) string {
		var out []string
		for _, run := range s.Runs {
			out = append(out, measure.FormatRate(run.DocsPerSec))
		}
		return strings.Join(out, " ")
	}

	row("documents/s", a.DocsPerSec, b.DocsPerSec, measure.FormatRate)
	text("  per round", perRun(a), perRun(b))
	row("elapsed", float64(a.Elapsed), float64(b.Elapsed), durf)
	row("first write after", float64(a.FirstWrite), float64(b.FirstWrite), durf)
	row("documents/s after it", a.SteadyDocsPerSec, b.SteadyDocsPerSec, measure.FormatRate)
	row("bench cpu/doc", float64(a.CPUPerDoc), float64(b.CPUPerDoc), durf)
	row("bench cpu %", a.CPUPercent, b.CPUPercent, pct)
	if a.Server != nil && b.Server != nil {
		row("mongodb cpu/doc", float64(a.Server.CPUPerDoc), float64(b.Server.CPUPerDoc), durf)
		row("mongodb cpu %", a.Server.CPUPercent, b.Server.CPUPercent, pct)
	} else {
		text("mongodb cpu", "-", "-")
	}
	row("live heap at start", float64(a.HeapStart), float64(b.HeapStart), bytesf)
	row("live heap peak", float64(a.HeapPeak), float64(b.HeapPeak), bytesf)
	row("documents counted", float64(a.Documents), float64(b.Documents), measure.FormatCount)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range []*archivebench.SideResult{a, b} {
		if s.Profile != "" {
			fmt.Fprintf(w, "cpu profile of this process during the first %s run: %s\n", s.Side, s.Profile)
		}
	}
	met := "met"
	if r.Ratio < archivebench.Target {
		met = "NOT met"
	}
	fmt.Fprintf(w, "ratio archiver/plain: %.2fx from start (target >= %.1fx: %s), %.2fx after the first write\n",
		r.Ratio, archivebench.Target, met, r.SteadyRatio)
	kfake := ""
	if c.Brokers == "" {
		kfake = " (the archiver's runs include the in-process kfake serving its fetches)"
	}
	fmt.Fprintf(w, "bench cpu and heap are this whole process%s; the heap holds the %d records of the plain loop throughout\n", kfake, p.Records)
	return nil
}
