package report

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/fleetgate/fleetgate/pkg/bench/compare"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

// writeProcesses prints the processes of the targets that have several (or
// some apart), each on its own line: what the table's server figures sum,
// and what they leave out.
func writeProcesses(w io.Writer, r *compare.Result) error {
	var some bool
	for _, t := range r.Targets {
		some = some || len(t.Processes) > 0
	}
	if !some {
		return nil
	}
	idle := r.Config.Workload == load.WorkloadIdle
	per := "msg"
	switch r.Config.Workload {
	case load.WorkloadPairs, load.WorkloadFanout:
		per = "delivery"
	case load.WorkloadConnect:
		per = "connect"
	}
	if idle {
		fmt.Fprintln(w, "processes (server = the sum of the counted ones; apart: reported, not counted):")
	} else {
		fmt.Fprintln(w, "processes over the measured windows (server = the sum of the counted ones; apart: reported, not counted):")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if idle {
		fmt.Fprintln(tw, "target\tprocess\tpid\t\trss before\trss after\tbytes/conn\tidle cpu %\t")
	} else {
		fmt.Fprintf(tw, "target\tprocess\tpid\t\tcpu/%s\tcpu %%\trss\t\n", per)
	}
	for _, t := range r.Targets {
		for _, p := range t.Processes {
			kind := "counted"
			if p.Apart {
				kind = "apart"
			}
			if p.Unread {
				kind += " (unread)"
			}
			cells := []string{t.Target.Name, p.Name, strconv.Itoa(p.PID), kind}
			if idle {
				cells = append(cells, measure.FormatBytes(float64(p.BaselineRSS)), measure.FormatBytes(float64(p.Usage.RSS)),
					measure.FormatBytes(p.BytesPerConn), fmt.Sprintf("%.2f%%", p.Usage.CPUPercent))
			} else {
				cells = append(cells, measure.FormatDuration(p.Usage.CPUPerMessage), fmt.Sprintf("%.1f%%", p.Usage.CPUPercent),
					measure.FormatBytes(float64(p.Usage.RSS)))
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
		}
		if len(t.Processes) > 0 && !idle {
			if u := serverUsage(t); u != nil {
				fmt.Fprintf(tw, "%s\tserver\t\tsum\t%s\t%.1f%%\t%s\t\n", t.Target.Name,
					measure.FormatDuration(u.CPUPerMessage), u.CPUPercent, measure.FormatBytes(float64(u.RSS)))
			}
		}
	}
	return tw.Flush()
}

// serverUsage is the server figures of a windowed workload's result.
func serverUsage(t *compare.TargetResult) *measure.ProcessUsage {
	switch {
	case t.Pub != nil:
		return t.Pub.Server
	case t.PubSub != nil:
		return t.PubSub.Server
	case t.Connect != nil:
		return t.Connect.Server
	}
	return nil
}
