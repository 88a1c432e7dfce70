//go:build unix

package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BuildBinaries builds the main packages pkgs (e.g. "./cmd/frontend") of
// the module into a new temporary directory and returns it, for a test
// package's TestMain; the caller removes it. They are built without -race:
// the race detector would slow the processes under test several times
// over, and their own packages run their tests with it.
func BuildBinaries(pkgs ...string) (string, error) {
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	dir, err := os.MkdirTemp("", "fleetgate-bin-")
	if err != nil {
		return "", err
	}
	build := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	build.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	if out, err := build.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("building %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return dir, nil
}

// maxLoggedOutput bounds the output logged per process on failure: the
// tail is what explains a failure.
const maxLoggedOutput = 256 << 10

// Proc is a process a test started: it is killed when the test ends, and
// the tail of its output is logged if the test failed.
type Proc struct {
	Name string
	Cmd  *exec.Cmd

	t      *testing.T
	out    *SyncBuffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers: a process's
// output, or a logger's sink that a test reads while the code logs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartProc runs path with args, without the runner's FLEETGATE_*
// settings (CleanEnv).
func StartProc(t *testing.T, name, path string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = CleanEnv()
	// Pdeathsig: a test binary that panics or times out leaves no
	// process behind (its cleanups do not run then).
	cmd.SysProcAttr = childAttr(false)
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start(), "starting %s", name)
	p := &Proc{Name: name, Cmd: cmd, t: t, out: out, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			s := out.String()
			if len(s) > maxLoggedOutput {
				s = "[…]" + s[len(s)-maxLoggedOutput:]
			}
			t.Logf("%s (pid %d) output:\n%s", name, cmd.Process.Pid, s)
		}
	})
	return p
}

// Output is what the process wrote so far, stdout and stderr.
func (p *Proc) Output() string { return p.out.String() }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	p.t.Helper()
	require.NoError(p.t, p.Cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s still running 10s after SIGKILL", p.Name)
	}
	p.t.Logf("killed %s (pid %d) with SIGKILL", p.Name, p.Cmd.Process.Pid)
}

// Terminate sends SIGTERM, as Kubernetes does to a pod it stops, and waits
// until the process is gone, failing the test if it runs past d.
func (p *Proc) Terminate(d time.Duration) {
	p.t.Helper()
	require.NoError(p.t, p.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("%s still running %s after SIGTERM", p.Name, d)
	}
	p.t.Logf("stopped %s (pid %d) with SIGTERM: %v", p.Name, p.Cmd.Process.Pid, p.Cmd.ProcessState)
}

// Wait returns the exit code, failing the test if the process runs past d;
// -1 when it was killed by a signal.
func (p *Proc) Wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("%s still running after %s", p.Name, d)
	}
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// RequireRunning fails the test if the process exited.
func (p *Proc) RequireRunning() {
	p.t.Helper()
	select {
	case <-p.exited:
		p.t.Fatalf("%s exited: %v", p.Name, p.Cmd.ProcessState)
	default:
	}
}

// CleanEnv is the environment without FLEETGATE_* settings, so that the
// test runner's do not reach the processes under test.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLEETGATE_") {
			env = append(env, kv)
		}
	}
	return env
}
