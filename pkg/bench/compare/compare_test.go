package compare

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
	"github.com/fleetgate/fleetgate/pkg/bench/internal/tlsfiles"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Target
		err      string
	}{
		{"a name and an address are enough", "mosquitto=127.0.0.1:1884", Target{Name: "mosquitto", Addr: "127.0.0.1:1884"}, ""},
		{"pid and pprof are read", "fleetgate=127.0.0.1:1883,pid=123,pprof=127.0.0.1:9464",
			Target{Name: "fleetgate", Addr: "127.0.0.1:1883", PID: 123, Pprof: "127.0.0.1:9464"}, ""},
		{"a missing name is refused", "=127.0.0.1:1", Target{}, "want name=host:port"},
		{"an address without port is refused", "a=localhost", Target{}, "address"},
		{"a bad pid is refused", "a=127.0.0.1:1,pid=x", Target{}, "pid"},
		{"an unknown key is refused", "a=127.0.0.1:1,cpu=2", Target{}, "unknown key"},
		{"creds name a credentials file", "a=127.0.0.1:1,creds=/tmp/jwt.creds", Target{Name: "a", Addr: "127.0.0.1:1", Creds: "/tmp/jwt.creds"}, ""},
		{"empty creds are refused", "a=127.0.0.1:1,creds=", Target{}, "creds: must not be empty"},
		{"metrics name a Prometheus endpoint", "a=127.0.0.1:1,metrics=127.0.0.1:9464", Target{Name: "a", Addr: "127.0.0.1:1", Metrics: "127.0.0.1:9464"}, ""},
		{"empty metrics are refused", "a=127.0.0.1:1,metrics=", Target{}, "metrics: must not be empty"},
		{"one pid reads as before", "a=127.0.0.1:1,pid=7", Target{Name: "a", Addr: "127.0.0.1:1", PID: 7}, ""},
		{"pids joined by + are all counted, the first is the pid", "a=127.0.0.1:1,pid=7+8+9",
			Target{Name: "a", Addr: "127.0.0.1:1", PID: 7, PIDs: []int{7, 8, 9}}, ""},
		{"apart names processes reported on their own", "a=127.0.0.1:1,pid=7+8,apart=10+11",
			Target{Name: "a", Addr: "127.0.0.1:1", PID: 7, PIDs: []int{7, 8}, Apart: []int{10, 11}}, ""},
		{"one pid with one apart", "a=127.0.0.1:1,pid=7,apart=10",
			Target{Name: "a", Addr: "127.0.0.1:1", PID: 7, Apart: []int{10}}, ""},
		{"several pprof servers are kept in order", "a=127.0.0.1:1,pprof=127.0.0.1:2+127.0.0.1:3",
			Target{Name: "a", Addr: "127.0.0.1:1", Pprof: "127.0.0.1:2+127.0.0.1:3"}, ""},
		{"an empty pid in a list is refused", "a=127.0.0.1:1,pid=7+", Target{}, "positive integers joined by +"},
		{"a pid given twice is refused", "a=127.0.0.1:1,pid=7+7", Target{}, "process 7 given twice"},
		{"a process both counted and apart is refused", "a=127.0.0.1:1,pid=7+8,apart=8", Target{}, "both counted (pid) and apart"},
		{"apart without pid is refused", "a=127.0.0.1:1,apart=8", Target{}, "apart: give pid too"},
		{"a bad apart is refused", "a=127.0.0.1:1,pid=7,apart=-1", Target{}, "apart"},
		{"an empty pprof server in a list is refused", "a=127.0.0.1:1,pprof=127.0.0.1:2+", Target{}, "pprof: must not be empty"},
		{"tls names the CA file", "a=127.0.0.1:1,tls=/tmp/ca.pem", Target{Name: "a", Addr: "127.0.0.1:1", TLSCA: "/tmp/ca.pem"}, ""},
		{"an empty tls is refused", "a=127.0.0.1:1,tls=", Target{}, "tls: give the CA file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	var ts Targets
	require.NoError(t, ts.Set("a=127.0.0.1:1"))
	require.ErrorContains(t, ts.Set("a=127.0.0.1:2"), "given twice")
}

// TestComparePubRunsEveryTargetEveryRound compares the broker with itself
// under two names, with a fake pprof server for the first.
func TestComparePubRunsEveryTargetEveryRound(t *testing.T) {
	addr := broker.Require(t)
	var profiled []string
	pprof := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		profiled = append(profiled, r.URL.String())
		_, _ = w.Write([]byte("profile bytes"))
	}))
	t.Cleanup(pprof.Close)

	cfg := Config{Workload: load.WorkloadPub}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("one=%s,pid=%d,pprof=%s", addr, broker.PID, pprof.URL)))
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("two=%s,pid=%d", addr, broker.PID)))
	cfg.Rounds, cfg.Pause = 2, 10*time.Millisecond
	cfg.PprofDir = t.TempDir()
	cfg.PprofSeconds = 1
	cfg.Pub.Publishers, cfg.Pub.Window = 4, 8
	cfg.Pub.Warmup, cfg.Pub.Duration = 100*time.Millisecond, 1200*time.Millisecond
	cfg.Pub.ClientPrefix = "compare"

	var progress []string
	res, err := Run(context.Background(), cfg, func(s string) { progress = append(progress, s) })
	require.NoError(t, err)
	require.Equal(t, "two", res.Config.Baseline, "the last target is the baseline")
	require.Len(t, res.Targets, 2)
	for _, tr := range res.Targets {
		require.Len(t, tr.PerRound, 2)
		require.Len(t, tr.pubRounds, 2)
		var acked, hist int64
		for _, r := range tr.pubRounds {
			require.Zero(t, r.Errors())
			acked += r.Acked
			hist += r.Histogram().Count()
		}
		require.Equal(t, acked, tr.Pub.Acked, "aggregate acks are the sum of the rounds")
		require.Equal(t, hist, tr.Pub.Histogram().Count(), "aggregate histogram holds every round")
		require.Equal(t, 2*cfg.Pub.Duration, tr.Pub.Measured)
		require.NotNil(t, tr.Pub.Server)
	}
	require.Len(t, profiled, 1, "one profile, of the target with pprof, in its first round")
	require.Contains(t, profiled[0], "/debug/pprof/profile?seconds=1")
	b, err := os.ReadFile(filepath.Join(cfg.PprofDir, "one.cpu.pprof"))
	require.NoError(t, err)
	require.Equal(t, "profile bytes", string(b))

	// Rounds alternate the order: one two, two one.
	var order []string
	for _, p := range progress {
		if strings.Contains(p, "/s, p99") {
			order = append(order, strings.Fields(p)[2])
		}
	}
	require.Equal(t, []string{"one:", "two:", "two:", "one:"}, order)
	require.Equal(t, filepath.Join(cfg.PprofDir, "one.cpu.pprof"), res.Result("one").Profile)
	require.Empty(t, res.Result("two").Profile)
}

func TestCompareIdleReportsBytesPerConnection(t *testing.T) {
	addr := broker.Require(t)
	for _, parallel := range []bool{false, true} {
		t.Run(fmt.Sprintf("parallel=%v", parallel), func(t *testing.T) {
			cfg := Config{Workload: load.WorkloadIdle}
			cfg.RegisterFlags(benchtest.NewFlagSet())
			require.NoError(t, cfg.Targets.Set(fmt.Sprintf("a=%s,pid=%d", addr, broker.PID)))
			require.NoError(t, cfg.Targets.Set(fmt.Sprintf("b=%s,pid=%d", addr, broker.PID)))
			cfg.Rounds, cfg.Pause, cfg.Baseline, cfg.Parallel = 2, 10*time.Millisecond, "a", parallel
			cfg.Idle.Clients, cfg.Idle.Settle = 100, 100*time.Millisecond
			cfg.Idle.ClientPrefix = fmt.Sprintf("idle-%v", parallel)
			res, err := Run(context.Background(), cfg, nil)
			require.NoError(t, err)
			for _, tr := range res.Targets {
				require.Equal(t, 100, tr.Idle.Connected)
				require.Equal(t, 100, tr.Idle.Alive)
				require.Len(t, tr.PerRound, 2)
			}
		})
	}
}

func TestCompareConfigValidate(t *testing.T) {
	cfg := Config{Workload: "soak"}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	err := cfg.Validate()
	require.ErrorContains(t, err, "workload")
	require.ErrorContains(t, err, "target: give at least two")

	cfg = Config{Workload: load.WorkloadPub}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	require.NoError(t, cfg.Targets.Set("a=127.0.0.1:1"))
	require.NoError(t, cfg.Targets.Set("b=127.0.0.1:2"))
	cfg.Baseline, cfg.Parallel = "c", true
	require.ErrorContains(t, cfg.Validate(), `baseline "c": not a target`)
	require.ErrorContains(t, cfg.Validate(), "parallel: only for the idle workload")
}

// TestComparePairsAndFanout compares the broker with itself under two
// names.
func TestComparePairsAndFanout(t *testing.T) {
	addr := broker.Require(t)
	for _, workload := range []string{load.WorkloadPairs, load.WorkloadFanout} {
		t.Run(workload, func(t *testing.T) {
			cfg := Config{Workload: workload}
			cfg.RegisterFlags(benchtest.NewFlagSet())
			require.NoError(t, cfg.Targets.Set(fmt.Sprintf("one=%s,pid=%d", addr, broker.PID)))
			require.NoError(t, cfg.Targets.Set(fmt.Sprintf("two=%s,pid=%d", addr, broker.PID)))
			cfg.Rounds, cfg.Pause = 2, 10*time.Millisecond
			cfg.PubSub.Pairs, cfg.PubSub.Subscribers, cfg.PubSub.Messages = 3, 10, 30
			cfg.PubSub.Rate = 300
			res, err := Run(context.Background(), cfg, nil)
			require.NoError(t, err)
			fan := int64(1)
			if workload == load.WorkloadFanout {
				fan = 10
			}
			want := 2 * int64(cfg.PubSub.PublisherCount()) * 30 * fan
			for _, tr := range res.Targets {
				require.Len(t, tr.PerRound, 2)
				require.Equal(t, want, tr.PubSub.Received, "both rounds")
				require.Equal(t, want, tr.PubSub.Expected)
				require.Equal(t, want, tr.PubSub.Histogram().Count())
				require.Zero(t, tr.PubSub.Errors())
				require.NotNil(t, tr.PubSub.Server)
				require.Equal(t, int64(2*cfg.PubSub.PublisherCount()*30), tr.PubSub.Publish.Sent)
			}
		})
	}
}

// TestCompareConnectGivesEachTargetItsCredentials compares a broker that
// admits only the users of a file (creds= that file) with the anonymous
// broker: each target's devices connect with what it wants.
func TestCompareConnectGivesEachTargetItsCredentials(t *testing.T) {
	addr := broker.Require(t)
	creds := filepath.Join(t.TempDir(), "creds")
	var lines []string
	for i := range 40 {
		lines = append(lines, fmt.Sprintf("user-%d:pw-%d", i, i))
	}
	require.NoError(t, os.WriteFile(creds, []byte(strings.Join(lines, "\n")), 0o600))
	secured, err := benchtest.StartWithPasswords(creds)
	require.NoError(t, err)
	t.Cleanup(secured.Stop)
	secured.Require(t)

	cfg := Config{Workload: load.WorkloadConnect}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("password=%s,pid=%d,creds=%s", secured.Addr, secured.PID, creds)))
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("anonymous=%s,pid=%d", addr, broker.PID)))
	cfg.Rounds, cfg.Pause = 2, 10*time.Millisecond
	cfg.Connect.Clients, cfg.Connect.Concurrency, cfg.Connect.WarmupPasses = 40, 8, 1
	var progress []string
	res, err := Run(context.Background(), cfg, func(s string) { progress = append(progress, s) })
	require.NoError(t, err)
	for _, tr := range res.Targets {
		require.Len(t, tr.PerRound, 2)
		require.EqualValues(t, 2*40, tr.Connect.Connected, "%s: the measured pass of both rounds", tr.Target.Name)
		require.Zero(t, tr.Connect.Failures(), tr.Target.Name)
		require.Len(t, tr.Connect.Passes, 4, "a warm-up and a measured pass per round")
		require.NotNil(t, tr.Connect.Server)
	}
	require.Contains(t, strings.Join(progress, "\n"), "round 1/2 password: pass 1/2 (warm-up)")

	// Without its creds the secured broker refuses every device.
	cfg.Targets = nil
	require.NoError(t, cfg.Targets.Set("password="+secured.Addr))
	require.NoError(t, cfg.Targets.Set("anonymous="+addr))
	cfg.Rounds = 1
	_, err = Run(context.Background(), cfg, nil)
	require.ErrorContains(t, err, "target password, round 1: no client could connect")
}

// TestComparePairsGivesEachPairItsTargetsLine: pairs on a broker that
// confines each user to devices/<username>/#, each pair one user of the
// target's creds file, on a topic below its name.
func TestComparePairsGivesEachPairItsTargetsLine(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "creds")
	var lines []string
	for i := range 6 {
		lines = append(lines, fmt.Sprintf("user-%d:pw-%d", i, i))
	}
	require.NoError(t, os.WriteFile(creds, []byte(strings.Join(lines, "\n")), 0o600))
	secured, err := benchtest.StartWithPasswords(creds, "devices/%u/#")
	require.NoError(t, err)
	t.Cleanup(secured.Stop)
	secured.Require(t)

	cfg := Config{Workload: load.WorkloadPairs}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("a=%s,creds=%s", secured.Addr, creds)))
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("b=%s,creds=%s", secured.Addr, creds)))
	cfg.Rounds, cfg.Pause = 1, 10*time.Millisecond
	cfg.PubSub.Pairs, cfg.PubSub.Messages, cfg.PubSub.Topic = 6, 20, "devices/%u/pairs/%r"
	res, err := Run(context.Background(), cfg, nil)
	require.NoError(t, err)
	for _, tr := range res.Targets {
		require.Len(t, tr.pubsubRounds, 1)
		r := tr.pubsubRounds[0]
		require.Zero(t, r.Errors(), "%s: %+v", tr.Target.Name, r)
		require.EqualValues(t, 6*20, r.Received, tr.Target.Name)
	}
}

// TestCompareOverTLSVerifiesTheBrokersCertificate: a target with tls=CA
// is measured over TLS (a broker that takes TLS only), beside the plain
// broker, in the connect, pub and idle workloads; with a CA that did not
// sign the broker's certificate no client connects.
func TestCompareOverTLSVerifiesTheBrokersCertificate(t *testing.T) {
	addr := broker.Require(t)
	secured, files, err := benchtest.StartWithTLS()
	require.NoError(t, err)
	t.Cleanup(secured.Stop)
	secured.Require(t)
	targets := func(t *testing.T, cfg *Config, ca string) {
		t.Helper()
		cfg.Targets = nil
		require.NoError(t, cfg.Targets.Set(fmt.Sprintf("tls=%s,pid=%d,tls=%s", secured.Addr, secured.PID, ca)))
		require.NoError(t, cfg.Targets.Set(fmt.Sprintf("plain=%s,pid=%d", addr, broker.PID)))
	}

	t.Run("connect", func(t *testing.T) {
		cfg := Config{Workload: load.WorkloadConnect}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		targets(t, &cfg, files.CA)
		cfg.Rounds, cfg.Pause = 1, 10*time.Millisecond
		cfg.Connect.Clients, cfg.Connect.Concurrency, cfg.Connect.WarmupPasses = 40, 8, 1
		cfg.Connect.ClientPrefix = "tls-connect"
		res, err := Run(context.Background(), cfg, nil)
		require.NoError(t, err)
		for _, tr := range res.Targets {
			require.EqualValues(t, 40, tr.Connect.Connected, tr.Target.Name)
			require.Zero(t, tr.Connect.Failures(), tr.Target.Name)
			for _, p := range tr.Connect.Passes {
				require.Zero(t, p.Resumed, "%s: without -tls-resume every handshake is full", tr.Target.Name)
			}
		}
	})
	t.Run("connect resuming TLS sessions", func(t *testing.T) {
		cfg := Config{Workload: load.WorkloadConnect}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		targets(t, &cfg, files.CA)
		cfg.Rounds, cfg.Pause = 1, 10*time.Millisecond
		cfg.Connect.Clients, cfg.Connect.Concurrency, cfg.Connect.WarmupPasses = 40, 8, 1
		cfg.Connect.ResumeTLS = true
		cfg.Connect.ClientPrefix = "tls-resume"
		res, err := Run(context.Background(), cfg, nil)
		require.NoError(t, err)
		for _, tr := range res.Targets {
			require.Len(t, tr.Connect.Passes, 2, tr.Target.Name)
			warm, measured := tr.Connect.Passes[0], tr.Connect.Passes[1]
			require.Zero(t, warm.Resumed, "%s: the warm-up pass has nothing to resume", tr.Target.Name)
			if tr.Target.Name == "tls" {
				require.EqualValues(t, 40, measured.Resumed, "every device resumes the session of its warm-up pass")
			} else {
				require.Zero(t, measured.Resumed, "plain TCP has no TLS session")
			}
		}
	})
	t.Run("pub", func(t *testing.T) {
		cfg := Config{Workload: load.WorkloadPub}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		targets(t, &cfg, files.CA)
		cfg.Rounds, cfg.Pause = 1, 10*time.Millisecond
		cfg.Pub.Publishers, cfg.Pub.Window = 4, 8
		cfg.Pub.Warmup, cfg.Pub.Duration = 100*time.Millisecond, 500*time.Millisecond
		cfg.Pub.ClientPrefix = "tls-pub"
		res, err := Run(context.Background(), cfg, nil)
		require.NoError(t, err)
		for _, tr := range res.Targets {
			require.Positive(t, tr.Pub.Acked, tr.Target.Name)
			require.Zero(t, tr.Pub.Errors(), tr.Target.Name)
		}
	})
	t.Run("idle", func(t *testing.T) {
		cfg := Config{Workload: load.WorkloadIdle}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		targets(t, &cfg, files.CA)
		cfg.Rounds, cfg.Pause = 1, 10*time.Millisecond
		cfg.Idle.Clients, cfg.Idle.Settle = 50, 100*time.Millisecond
		cfg.Idle.ClientPrefix = "tls-idle"
		res, err := Run(context.Background(), cfg, nil)
		require.NoError(t, err)
		for _, tr := range res.Targets {
			require.Equal(t, 50, tr.Idle.Alive, tr.Target.Name)
		}
	})
	t.Run("another CA", func(t *testing.T) {
		other, err := tlsfiles.Write(t.TempDir())
		require.NoError(t, err)
		cfg := Config{Workload: load.WorkloadConnect}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		targets(t, &cfg, other.CA)
		cfg.Rounds = 1
		cfg.Connect.Clients, cfg.Connect.Concurrency = 8, 4
		cfg.Connect.ClientPrefix = "tls-wrong-ca"
		_, err = Run(context.Background(), cfg, nil)
		require.ErrorContains(t, err, "target tls, round 1: no client could connect")
	})
}

func TestCredsAreRefusedForFanoutAndRetained(t *testing.T) {
	for _, workload := range []string{load.WorkloadFanout, load.WorkloadRetained} {
		cfg := Config{Workload: workload}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		require.NoError(t, cfg.Targets.Set("a=127.0.0.1:1,creds=/x"))
		require.NoError(t, cfg.Targets.Set("b=127.0.0.1:2"))
		require.ErrorContains(t, cfg.Validate(), "target a: creds: not for the "+workload+" workload")
	}
	cfg := Config{Workload: load.WorkloadPairs}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	require.NoError(t, cfg.Targets.Set("a=127.0.0.1:1,creds=/x"))
	require.NoError(t, cfg.Targets.Set("b=127.0.0.1:2"))
	require.NoError(t, cfg.Validate(), "pairs take a credentials file per target")
}

// TestCompareRetainedSamplesTheHeapOfTheTargetWithMetrics compares the
// broker with itself under two names, one of them with a Prometheus
// endpoint (this process's Go metrics): only that one has heap figures.
func TestCompareRetainedSamplesTheHeapOfTheTargetWithMetrics(t *testing.T) {
	addr := broker.Require(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(metrics.Close)

	cfg := Config{Workload: load.WorkloadRetained}
	cfg.RegisterFlags(benchtest.NewFlagSet())
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("go=%s,pid=%d,metrics=%s", addr, broker.PID, strings.TrimPrefix(metrics.URL, "http://"))))
	require.NoError(t, cfg.Targets.Set(fmt.Sprintf("c=%s,pid=%d", addr, broker.PID)))
	cfg.Rounds, cfg.Pause = 2, 10*time.Millisecond
	cfg.Retained.Messages, cfg.Retained.TopicPrefix = 500, "compare-retained"
	res, err := Run(context.Background(), cfg, nil)
	require.NoError(t, err)
	for _, tr := range res.Targets {
		require.Len(t, tr.RetainedRounds, 2)
		require.Len(t, tr.PerRound, 2)
		require.EqualValues(t, 1000, tr.Retained.Unique, "%s: both rounds", tr.Target.Name)
		require.True(t, tr.Retained.Complete)
		require.Positive(t, tr.Retained.Memory.PeakRSS)
		require.NotNil(t, tr.Retained.Server)
	}
	require.Positive(t, res.Result("go").Retained.Memory.PeakHeap)
	require.Zero(t, res.Result("c").Retained.Memory.HeapSamples)
}
