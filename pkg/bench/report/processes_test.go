package report

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/compare"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

func TestWriteCompareListsTheProcessesOfATarget(t *testing.T) {
	procs := []*compare.ProcessResult{
		{Process: compare.Process{PID: 11, Name: "frontend"}, Usage: measure.ProcessUsage{CPUPercent: 20, CPUPerMessage: 30 * time.Microsecond, RSS: 80 << 20},
			BaselineRSS: 40 << 20, BytesPerConn: 8192},
		{Process: compare.Process{PID: 12, Name: "redis-server"}, Usage: measure.ProcessUsage{CPUPercent: 5, CPUPerMessage: 7 * time.Microsecond, RSS: 10 << 20}},
		{Process: compare.Process{PID: 13, Name: "fleetgate-dev", Apart: true}, Usage: measure.ProcessUsage{CPUPercent: 9, CPUPerMessage: 12 * time.Microsecond}},
	}
	sum := &measure.ProcessUsage{CPUPercent: 25, CPUPerMessage: 37 * time.Microsecond, RSS: 90 << 20}
	for _, tc := range []struct {
		name     string
		workload string
		result   func(name string) *compare.TargetResult
		want     []string
	}{
		{"a publish comparison gives each process its cpu per message and the sum", load.WorkloadPub, func(name string) *compare.TargetResult {
			tr := &compare.TargetResult{Pub: &load.PubResult{Config: load.PubConfig{QoS: 1}, AckedPerSec: 1000, Server: sum}}
			if name == "one" {
				tr.Processes = procs
				tr.Profile, tr.Profiles = "/tmp/one.cpu.pprof", []string{"/tmp/one.cpu.pprof", "/tmp/one.2.cpu.pprof"}
			}
			return tr
		}, []string{"cpu/msg", "frontend", "11", "counted", "30µs", "redis-server", "7µs", "fleetgate-dev", "apart", "12µs", "server", "sum", "37µs",
			"cpu profiles of one: /tmp/one.cpu.pprof /tmp/one.2.cpu.pprof"}},
		{"a connect comparison counts per connect", load.WorkloadConnect, func(name string) *compare.TargetResult {
			tr := &compare.TargetResult{Connect: &load.ConnectResult{Server: sum}}
			if name == "one" {
				tr.Processes = procs
			}
			return tr
		}, []string{"cpu/connect", "frontend"}},
		{"an idle comparison gives each process its memory per connection", load.WorkloadIdle, func(name string) *compare.TargetResult {
			tr := &compare.TargetResult{Idle: &load.IdleResult{Connected: 100, RSS: 90 << 20, BytesPerConn: 8192}}
			if name == "one" {
				tr.Processes = procs
			}
			return tr
		}, []string{"bytes/conn", "rss before", "40.0 MiB", "80.0 MiB", "8.0 KiB", "20.00%", "apart"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, WriteCompare(&out, comparison(tc.workload, tc.result)))
			for _, want := range tc.want {
				require.Contains(t, out.String(), want)
			}
			t.Log(out.String())
		})
	}
}
