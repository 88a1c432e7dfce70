// Package e2e runs fleetgate's binaries as separate processes, the way
// operators run them, and checks what only whole processes can show: crash
// safety under SIGKILL, draining on SIGTERM, configuration errors at start,
// and the dev stack keeping its data across a restart.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/clustertest"
	"github.com/fleetgate/fleetgate/internal/testkit"
)

// binDir holds the binaries built once for the package.
var binDir string

// redisAddr is the redis-server every frontend process of the package uses.
var redisAddr string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/frontend", "./cmd/fleetgate-dev")
	build.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	r, skip, err := clustertest.StartRedis()
	if err != nil || skip != "" {
		fmt.Fprintln(os.Stderr, "e2e tests need redis-server:", err, skip)
		os.Exit(1)
	}
	redisAddr = r.Addr
	code := m.Run()
	r.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a fleetgate process started by a test.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs binary with args and the given extra environment; it is killed
// at the end of the test, and its output is logged if the test failed.
func start(t *testing.T, binary string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, binary), args...)
	cmd.Env = append(cleanEnv(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	p := &proc{t: t, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s output:\n%s", binary, out.String())
		}
	})
	return p
}

// cleanEnv keeps FLEETGATE_* settings of the test runner out of the child.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLEETGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// wait returns the exit code, failing the test if the process runs past d.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("process still running after %s", d)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// startKafka runs the embedded broker in a process of its own.
func startKafka(t *testing.T) string {
	t.Helper()
	addr := testkit.FreeAddr(t)
	start(t, "fleetgate-dev", nil, "-dev.kafka-only", "-dev.kafka-addr", addr, "-dev.data-dir", t.TempDir())
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
	mqtt, ops := testkit.FreeAddr(t), testkit.FreeAddr(t)
	args := append([]string{"-kafka.brokers", kafka, "-mqtt.tcp-addr", mqtt, "-http.addr", ops,
		"-node.id", "e2e", "-kafka.partitions", "3", "-log.level", "info", "-redis.addrs", redisAddr}, extra...)
	p := start(t, "frontend", nil, args...)
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
