// Package e2e runs fleetgate's binaries as separate processes, the way
// operators run them, and checks what only whole processes can show: crash
// safety under SIGKILL, draining on SIGTERM, configuration errors at start,
// and the dev stack keeping its data across a restart.
package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// binDir holds the binaries built once for the package.
var binDir string

// testRedis is the redis-server every frontend process of the package uses.
var testRedis testkit.TestRedis

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := testkit.BuildBinaries("./cmd/frontend", "./cmd/fleetgate-dev")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	return testkit.RunWithRedis(m, false, &testRedis)
}

// proc is a fleetgate process started by a test (testkit.Proc).
type proc = testkit.Proc

// start runs binary of binDir with args; it is killed at the end of the
// test, and its output is logged if the test failed.
func start(t *testing.T, binary string, args ...string) *proc {
	t.Helper()
	return testkit.StartProc(t, binary, filepath.Join(binDir, binary), args...)
}

// startKafka runs the embedded broker in a process of its own.
func startKafka(t *testing.T) string {
	t.Helper()
	addr := testkit.FreeAddr(t)
	start(t, "fleetgate-dev", "-dev.kafka-only", "-dev.kafka-addr", addr, "-dev.data-dir", t.TempDir())
	require.Eventually(t, func() bool {
		c, err := (&netDialer{}).dial(addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 15*time.Second, 50*time.Millisecond, "kafka process did not listen on %s", addr)
	return addr
}

// frontendProc is a frontend process with its addresses.
type frontendProc struct {
	*proc
	mqtt, ops string
}

func startFrontend(t *testing.T, kafka string, extra ...string) *frontendProc {
	t.Helper()
	testRedis.Require(t)
	mqtt, ops := testkit.FreeAddr(t), testkit.FreeAddr(t)
	args := append([]string{"-kafka.brokers", kafka, "-mqtt.tcp-addr", mqtt, "-http.addr", ops,
		"-node.id", "e2e", "-kafka.partitions", "3", "-log.level", "info", "-redis.addrs", testRedis.Addr,
		"-auth.allow-anonymous=true"}, extra...)
	p := start(t, "frontend", args...)
	f := &frontendProc{proc: p, mqtt: mqtt, ops: ops}
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + ops + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "frontend never became ready")
	return f
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
