package frontend_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/handoff"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// TestTheFrontendIsReadyOnlyOnceDevicesCanConnect: a large rules file is
// loaded before the MQTT listeners open, and a load balancer that sends
// devices to a ready frontend must not meet a closed port meanwhile.
// Whenever /readyz answers 200, the MQTT port accepts connections.
func TestTheFrontendIsReadyOnlyOnceDevicesCanConnect(t *testing.T) {
	k := testkit.StartKafka(t)
	cfg := testConfig(t, k.Addr())
	cfg.MQTT.TCPAddr = testkit.FreeAddr(t)
	cfg.MQTT.TLSAddr = ""
	cfg.HTTP.Addr = testkit.FreeAddr(t)
	// Rules that take a while to compile.
	var rules strings.Builder
	rules.WriteString("rules:\n")
	for i := range 40000 {
		fmt.Fprintf(&rules, "  - {permission: allow, action: publish, topics: [\"fleet/%d/%%u/#\"]}\n", i)
	}
	cfg.Authz.RulesFile = filepath.Join(t.TempDir(), "rules.yaml")
	require.NoError(t, os.WriteFile(cfg.Authz.RulesFile, []byte(rules.String()), 0o600))
	require.NoError(t, cfg.Validate())
	tel, err := telemetry.NewMetrics()
	require.NoError(t, err)
	srv, err := frontend.New(cfg, testLogger(t), tel)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	deadline := time.Now().Add(30 * time.Second)
	for ready := false; !ready; time.Sleep(5 * time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "the frontend never became ready")
		resp, err := http.Get("http://" + cfg.HTTP.Addr + "/readyz")
		if err != nil {
			continue // the operations server is not up yet
		}
		_ = resp.Body.Close()
		if ready = resp.StatusCode == http.StatusOK; ready {
			conn, err := net.DialTimeout("tcp", cfg.MQTT.TCPAddr, 2*time.Second)
			require.NoError(t, err, "ready, but the MQTT listener refuses connections")
			_ = conn.Close()
		}
	}
}

// TestTheFrontendCreatesFleetgatesOwnTopics: a frontend that starts before
// any dispatcher creates the topics only fleetgate writes and reads: the
// subscription change log, and the topic its ended sessions hand shared
// subscriptions' messages back through, so that a hand-back never waits
// for a topic that does not exist.
func TestTheFrontendCreatesFleetgatesOwnTopics(t *testing.T) {
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), nil)
	n.waitReady()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	want := []string{n.cfg.Subscriptions.Topic, handoff.SharedTopic(n.cfg.Kafka.Topic)}
	require.Eventually(t, func() bool {
		td, err := adm.ListTopics(context.Background(), want...)
		if err != nil {
			return false
		}
		for _, name := range want {
			if !td.Has(name) || td[name].Err != nil {
				return false
			}
		}
		return true
	}, 15*time.Second, 50*time.Millisecond, "topics %v not created", want)
}
