package compare

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/benchtest"
	"github.com/fleetgate/fleetgate/pkg/bench/load"
	"github.com/fleetgate/fleetgate/pkg/bench/measure"
)

func TestGroupTargetsAreRefusedWithoutAMeasuredWindow(t *testing.T) {
	for _, tc := range []struct {
		workload string
		set      func(*Config)
		err      string
	}{
		{load.WorkloadRetained, func(*Config) {}, "not for the retained workload"},
		{load.WorkloadPub, func(c *Config) { c.Pub.Messages = 10 }, "need a measured window"},
		{load.WorkloadPairs, func(c *Config) { c.PubSub.Messages = 10 }, "need a measured window"},
	} {
		t.Run(tc.workload, func(t *testing.T) {
			cfg := Config{Workload: tc.workload}
			cfg.RegisterFlags(benchtest.NewFlagSet())
			require.NoError(t, cfg.Targets.Set("a=127.0.0.1:1,pid=7+8"))
			require.NoError(t, cfg.Targets.Set("b=127.0.0.1:2,pid=9"))
			tc.set(&cfg)
			require.ErrorContains(t, cfg.Validate(), "target a: pid with several processes, apart: "+tc.err)
		})
	}
}

// startSleeper starts a process that uses no CPU, to stand apart.
func startSleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// requireSum checks that the server figures are the sum of the counted
// processes' and leave the apart ones out.
func requireSum(t *testing.T, tr *TargetResult, server *measure.ProcessUsage) {
	t.Helper()
	require.NotNil(t, server)
	var cpu time.Duration
	var rss int64
	for _, p := range tr.Processes {
		require.False(t, p.Unread, p.Name)
		if !p.Apart {
			cpu += p.Usage.CPU
			rss += p.Usage.RSS
		}
	}
	require.Equal(t, cpu, server.CPU)
	require.Equal(t, rss, server.RSS)
	require.Positive(t, server.CPU, "mosquitto and the load generator worked")
}

// TestCompareSumsTheProcessesOfATarget compares mosquitto alone with a
// target of two processes (mosquitto and this test, which generates the
// load) and one apart that does nothing, and takes two CPU profiles of the
// group at once.
func TestCompareSumsTheProcessesOfATarget(t *testing.T) {
	addr := broker.Require(t)
	sleeper := startSleeper(t)
	var mu sync.Mutex
	var profiled []string
	pprof := func() string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			profiled = append(profiled, r.Host)
			_, _ = w.Write([]byte("profile bytes"))
		}))
		t.Cleanup(s.Close)
		return s.Listener.Addr().String()
	}
	group := fmt.Sprintf("group=%s,pid=%d+%d,apart=%d,pprof=%s+%s", addr, broker.PID, os.Getpid(), sleeper, pprof(), pprof())

	t.Run("pub", func(t *testing.T) {
		cfg := Config{Workload: load.WorkloadPub}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		require.NoError(t, cfg.Targets.Set(group))
		require.NoError(t, cfg.Targets.Set(fmt.Sprintf("alone=%s,pid=%d", addr, broker.PID)))
		cfg.Rounds, cfg.Pause = 2, 10*time.Millisecond
		cfg.PprofDir, cfg.PprofSeconds = t.TempDir(), 1
		cfg.Pub.Publishers, cfg.Pub.Window = 4, 8
		cfg.Pub.Warmup, cfg.Pub.Duration = 100*time.Millisecond, 1200*time.Millisecond
		cfg.Pub.ClientPrefix = "compare-group"
		res, err := Run(context.Background(), cfg, nil)
		require.NoError(t, err)

		g := res.Result("group")
		require.Len(t, g.Processes, 3)
		require.Equal(t, Process{PID: broker.PID, Name: "mosquitto"}, g.Processes[0].Process)
		require.Equal(t, os.Getpid(), g.Processes[1].PID)
		require.Equal(t, Process{PID: sleeper, Name: "sleep", Apart: true}, g.Processes[2].Process)
		requireSum(t, g, g.Pub.Server)
		require.Equal(t, g.Pub.Server.CPU/time.Duration(g.Pub.Acked), g.Pub.Server.CPUPerMessage)
		require.Zero(t, g.Processes[2].Usage.CPU, "sleep works not")
		require.Empty(t, res.Result("alone").Processes, "one process is the workload's to read")
		require.NotNil(t, res.Result("alone").Pub.Server)

		require.Len(t, profiled, 2, "both pprof servers, in the first round only")
		require.Equal(t, []string{filepath.Join(cfg.PprofDir, "group.cpu.pprof"), filepath.Join(cfg.PprofDir, "group.2.cpu.pprof")}, g.Profiles)
		require.Equal(t, g.Profiles[0], g.Profile)
		for _, p := range g.Profiles {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Equal(t, "profile bytes", string(b))
		}
	})

	t.Run("connect", func(t *testing.T) {
		cfg := Config{Workload: load.WorkloadConnect}
		cfg.RegisterFlags(benchtest.NewFlagSet())
		require.NoError(t, cfg.Targets.Set(fmt.Sprintf("group=%s,pid=%d+%d,apart=%d", addr, broker.PID, os.Getpid(), sleeper)))
		require.NoError(t, cfg.Targets.Set(fmt.Sprintf("alone=%s,pid=%d", addr, broker.PID)))
		cfg.Rounds, cfg.Pause = 2, 10*time.Millisecond
		cfg.Connect.Clients, cfg.Connect.Concurrency, cfg.Connect.WarmupPasses = 200, 8, 1
		res, err := Run(context.Background(), cfg, nil)
		require.NoError(t, err)
		g := res.Result("group")
		require.EqualValues(t, 400, g.Connect.Connected)
		requireSum(t, g, g.Connect.Server)
		require.Equal(t, g.Connect.Server.CPU/400, g.Connect.Server.CPUPerMessage)
	})

	t.Run("idle", func(t *testing.T) {
		for _, parallel := range []bool{false, true} {
			cfg := Config{Workload: load.WorkloadIdle}
			cfg.RegisterFlags(benchtest.NewFlagSet())
			require.NoError(t, cfg.Targets.Set(fmt.Sprintf("group=%s,pid=%d+%d,apart=%d", addr, broker.PID, os.Getpid(), sleeper)))
			require.NoError(t, cfg.Targets.Set(fmt.Sprintf("alone=%s,pid=%d", addr, broker.PID)))
			cfg.Rounds, cfg.Pause, cfg.Parallel = 1, 10*time.Millisecond, parallel
			cfg.Idle.Clients, cfg.Idle.Settle = 200, 600*time.Millisecond
			cfg.Idle.ClientPrefix = fmt.Sprintf("idle-group-%v", parallel)
			res, err := Run(context.Background(), cfg, nil)
			require.NoError(t, err)
			g := res.Result("group")
			require.Equal(t, 200, g.Idle.Alive)
			require.Len(t, g.Processes, 3)
			var base, rss int64
			for _, p := range g.Processes {
				require.False(t, p.Unread, p.Name)
				require.Positive(t, p.BaselineRSS, p.Name)
				if !p.Apart {
					base += p.BaselineRSS
					rss += p.Usage.RSS
				}
			}
			require.Equal(t, base, g.Idle.BaselineRSS, "the sum of the counted processes, parallel=%v", parallel)
			require.Equal(t, rss, g.Idle.RSS)
			require.GreaterOrEqual(t, g.Idle.PeakRSS, g.Idle.RSS)
			require.InDelta(t, float64(rss-base)/200, g.Idle.BytesPerConn, 1e-6)
		}
	})
}
