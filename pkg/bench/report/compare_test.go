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

// comparison is a comparison of targets one and two (the baseline) with
// result r for each; the workload's configuration is the results'.
func comparison(workload string, r func(name string) *compare.TargetResult) *compare.Result {
	res := &compare.Result{Config: compare.Config{Workload: workload, Rounds: 2, Baseline: "two"}}
	for _, name := range []string{"one", "two"} {
		tr := r(name)
		switch {
		case tr.Pub != nil:
			res.Config.Pub = tr.Pub.Config
		case tr.Idle != nil:
			res.Config.Idle = tr.Idle.Config
		case tr.PubSub != nil:
			res.Config.PubSub = tr.PubSub.Config
		case tr.Connect != nil:
			res.Config.Connect = tr.Connect.Config
		}
		tr.Target = compare.Target{Name: name, Addr: "127.0.0.1:1883"}
		res.Config.Targets = append(res.Config.Targets, tr.Target)
		res.Targets = append(res.Targets, tr)
	}
	return res
}

func TestWriteCompareShowsEveryTargetAndItsRatioToTheBaseline(t *testing.T) {
	latency := measure.LatencySummary{Count: 10, P50: time.Millisecond, P99: 3 * time.Millisecond, P999: 4 * time.Millisecond, Max: 5 * time.Millisecond}
	server := &measure.ProcessUsage{CPUPercent: 50, CPUPerMessage: 10 * time.Microsecond, RSS: 10 << 20}
	for _, tc := range []struct {
		name     string
		workload string
		result   func(name string) *compare.TargetResult
		want     []string
	}{
		{"a publish comparison shows acks, latency and the profile taken", load.WorkloadPub, func(name string) *compare.TargetResult {
			tr := &compare.TargetResult{Pub: &load.PubResult{Config: load.PubConfig{QoS: 1}, AckedPerSec: 1000, Latency: latency, Server: server},
				PerRound: []float64{900, 1100}}
			if name == "one" {
				tr.Profile = "/tmp/one.cpu.pprof"
			}
			return tr
		}, []string{"one", "two", "one/two", "acked/s", "puback p99", "1.00x", "cpu profile of one: /tmp/one.cpu.pprof"}},
		{"an idle comparison shows bytes per connection", load.WorkloadIdle, func(string) *compare.TargetResult {
			return &compare.TargetResult{Idle: &load.IdleResult{Config: load.IdleConfig{ServerPID: 1}, Connected: 100, Alive: 100, BytesPerConn: 4096},
				PerRound: []float64{4096}}
		}, []string{"bytes/conn", "one/two", "4.0 KiB"}},
		{"an idle comparison names the burst each connection sent first", load.WorkloadIdle, func(string) *compare.TargetResult {
			return &compare.TargetResult{Idle: &load.IdleResult{Config: load.IdleConfig{ServerPID: 1, Clients: 100, Burst: 3, BurstTopic: "devices/%u/telemetry"},
				Connected: 100, Alive: 100, BytesPerConn: 4096}, PerRound: []float64{4096}}
		}, []string{"100 idle connections (each first publishing 3 QoS 1 messages back to back to devices/%u/telemetry)", "bytes/conn"}},
		{"a pairs comparison shows deliveries, end-to-end latency and losses", load.WorkloadPairs, func(string) *compare.TargetResult {
			return &compare.TargetResult{PubSub: &load.PubSubResult{Config: load.PubSubConfig{Workload: load.WorkloadPairs}, DeliveredPerSec: 500, Latency: latency,
				Publish: &load.PubResult{SentPerSec: 500, Latency: latency}, Server: server}, PerRound: []float64{500}}
		}, []string{"delivered/s", "e2e p99", "lost", "duplicates", "one/two", "1.00x"}},
		{"a fanout comparison shows deliveries", load.WorkloadFanout, func(string) *compare.TargetResult {
			return &compare.TargetResult{PubSub: &load.PubSubResult{Config: load.PubSubConfig{Workload: load.WorkloadFanout, Subscribers: 50}, DeliveredPerSec: 500,
				Publish: &load.PubResult{}}, PerRound: []float64{500}}
		}, []string{"1 publisher → 50 subscribers", "delivered/s", "one/two"}},
		{"a connect comparison shows connects/s, the warm-up passes and the refusals", load.WorkloadConnect, func(name string) *compare.TargetResult {
			r := &load.ConnectResult{Config: load.ConnectConfig{Clients: 100, Concurrency: 8, WarmupPasses: 1, Passes: 1},
				ConnectsPerSec: 2000, Connack: latency, Connected: 100, Server: server,
				Passes: []load.ConnectPass{{Warmup: true, ConnectsPerSec: 31}, {ConnectsPerSec: 2000}}}
			if name == "one" {
				r.Refused, r.RefusedCodes, r.FirstError = 3, map[string]int64{"0x05": 3}, "connect refused: reason code 0x05"
			}
			return &compare.TargetResult{Connect: r, PerRound: []float64{2000}}
		}, []string{"100 devices per target, 8 at a time", "connects/s", "2,000", "warm-up passes", "31", "connack p99", "refused", "server cpu/connect", "one/two", "1.00x",
			"first failure of one: connect refused: reason code 0x05 (0x05×3)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, WriteCompare(&out, comparison(tc.workload, tc.result)))
			for _, want := range tc.want {
				require.Contains(t, out.String(), want)
			}
		})
	}
}

// TestAConnectComparisonWarnsWhenTheGeneratorsOwnCostDiffers: the report
// shows the generator's CPU per connect for each target, and warns when one
// target cost it more than 1.5 times another (a rate that may be the
// generator's limit), and not otherwise.
func TestAConnectComparisonWarnsWhenTheGeneratorsOwnCostDiffers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		one, two time.Duration
		warn     bool
	}{
		{"101 against 45 µs per connect warns", 101 * time.Microsecond, 45 * time.Microsecond, true},
		{"47 against 45 µs per connect does not", 47 * time.Microsecond, 45 * time.Microsecond, false},
		{"exactly 1.5 times does not", 60 * time.Microsecond, 40 * time.Microsecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := comparison(load.WorkloadConnect, func(name string) *compare.TargetResult {
				r := &load.ConnectResult{Config: load.ConnectConfig{Clients: 100, Concurrency: 8, Passes: 1}, ConnectsPerSec: 2000, Connected: 100}
				r.Bench.CPUPerMessage = tc.two
				if name == "one" {
					r.Bench.CPUPerMessage = tc.one
				}
				return &compare.TargetResult{Connect: r, PerRound: []float64{2000}}
			})
			var out bytes.Buffer
			require.NoError(t, WriteCompare(&out, res))
			require.Contains(t, out.String(), "bench cpu/connect")
			require.Contains(t, out.String(), measure.FormatDuration(tc.one))
			if tc.warn {
				require.Contains(t, out.String(), "warning: the load generator spent "+measure.FormatDuration(tc.one)+" of CPU per connect against one and "+
					measure.FormatDuration(tc.two)+" against two")
			} else {
				require.NotContains(t, out.String(), "warning: the load generator")
			}
		})
	}
}
