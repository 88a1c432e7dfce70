package frontend_test

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/frontend"
)

const topic = "mqtt.inbound"

// testRedis is the redis-server the package's frontends keep sessions in.
var testRedis testkit.TestRedis

func TestMain(m *testing.M) { os.Exit(testkit.RunWithRedis(m, false, &testRedis)) }

// node is one frontend running in the test process (clustertest.Frontend).
type node struct {
	*clustertest.Frontend
	t    *testing.T
	srv  *frontend.Server
	cfg  frontend.Config
	addr string // MQTT over TCP
	ops  string // operations server
}

// testConfig is the frontend's default configuration with loopback ports.
func testConfig(t *testing.T, brokers string) frontend.Config {
	t.Helper()
	testRedis.Require(t) // every frontend keeps its sessions in Redis
	var cfg frontend.Config
	fs := flag.NewFlagSet("test", flag.PanicOnError)
	cfg.RegisterFlags(fs)
	cfg.Node.ID = "test-node"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	cfg.MQTT.TLSAddr = "127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Kafka.Brokers = config.StringList{brokers}
	cfg.Shutdown.Timeout = 5 * time.Second
	cfg.Session.Redis.Addrs = config.StringList{testRedis.Addr}
	// These tests are about everything but authentication, which has its
	// own (auth_test.go, and test/cluster's attacks run on the defaults).
	cfg.Auth.AllowAnonymous = true
	return cfg
}

// startNode starts a frontend against kafka; mutate adjusts the config.
func startNode(t *testing.T, brokers string, mutate func(*frontend.Config)) *node {
	t.Helper()
	cfg := testConfig(t, brokers)
	if mutate != nil {
		mutate(&cfg)
	}
	f := clustertest.StartFrontend(t, cfg, testLogger(t))
	return &node{Frontend: f, t: t, srv: f.Server, cfg: cfg, addr: f.Addr, ops: f.Server.OpsAddr()}
}

// waitReady waits until /readyz answers 200.
func (n *node) waitReady() {
	n.t.Helper()
	require.Eventually(n.t, func() bool { return n.readyz() == http.StatusOK }, 15*time.Second, 50*time.Millisecond, "frontend never became ready")
}

func (n *node) readyz() int {
	resp, err := http.Get("http://" + n.ops + "/readyz")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// metrics returns the /metrics text.
func (n *node) metrics() string {
	n.t.Helper()
	resp, err := http.Get("http://" + n.ops + "/metrics")
	require.NoError(n.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(n.t, err)
	return string(b)
}

// testLogger logs through t.Log, and stops when the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	lvl := slog.LevelInfo
	if os.Getenv("FLEETGATE_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func fmtSscan(s string, v *int) (int, error) { return fmt.Sscan(s, v) }
