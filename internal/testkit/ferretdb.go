//go:build unix

package testkit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/ferretdb"
)

// FerretDBVersion is the FerretDB release the tests run (ferretdb.Version).
const FerretDBVersion = ferretdb.Version

// FerretDB is a ferretdb process with the SQLite backend on a loopback port,
// its data in a directory of its own. Kill and Restart simulate an outage:
// the data survives, the address stays.
type FerretDB struct {
	// URI is the MongoDB connection string of the server.
	URI  string
	Addr string

	bin, dir string
	mu       sync.Mutex
	cmd      *exec.Cmd
}

// StartFerretDB builds (once per machine) and starts a FerretDB for a test
// package's TestMain. Where Go cannot build it (no network and no cached
// module), it returns a reason to skip, unless the CI environment variable
// is set, when that is an error.
func StartFerretDB() (_ *FerretDB, skip string, err error) {
	bin, err := ferretdb.Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			return nil, "", err
		}
		return nil, "ferretdb could not be built (run `go run ./internal/cmd/ferretdb-build`): " + err.Error(), nil
	}
	dir, err := os.MkdirTemp("", "fleetgate-ferretdb-")
	if err != nil {
		return nil, "", err
	}
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return nil, "", err
	}
	f := &FerretDB{URI: "mongodb://" + addr + "/", Addr: addr, bin: bin, dir: dir}
	if err := f.Restart(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", err
	}
	return f, "", nil
}

// Restart starts the server again after Kill, on the same address and data.
func (f *FerretDB) Restart() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd != nil {
		return errors.New("ferretdb is running")
	}
	logPath := filepath.Join(f.dir, "ferretdb.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	data := filepath.Join(f.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	cmd := exec.Command(f.bin, "--handler=sqlite", "--sqlite-url=file:"+data+"/", "--listen-addr="+f.Addr,
		"--telemetry=disable", "--log-level=warn", "--state-dir="+f.dir, "--debug-addr=-")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Pdeathsig: a test binary that panics does not leave it running.
	cmd.SysProcAttr = childAttr(true)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting ferretdb: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", f.Addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case werr := <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("ferretdb exited at start (%v):\n%s", werr, log)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("ferretdb did not listen on %s within 30s:\n%s", f.Addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.cmd = cmd
	go func() {
		// Reap the process whenever it ends; Kill waits on f.cmd.ProcessState
		// through this goroutine.
		<-exited
	}()
	return nil
}

// Kill stops the server with SIGKILL, as a crash would, and waits until its
// port is closed.
func (f *FerretDB) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd == nil {
		return
	}
	_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", f.Addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		_ = c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	f.cmd = nil
}

// Freeze stops the server with SIGSTOP (a frozen VM or container): its
// connections stay open and nothing it is sent is answered until Thaw.
func (f *FerretDB) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd != nil {
		_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGSTOP)
	}
}

// Thaw continues the server Freeze stopped.
func (f *FerretDB) Thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd != nil {
		_ = syscall.Kill(-f.cmd.Process.Pid, syscall.SIGCONT)
	}
}

// Stop kills the server and removes its data.
func (f *FerretDB) Stop() {
	f.Kill()
	_ = os.RemoveAll(f.dir)
}

// TestFerretDB is the FerretDB a test package shares, started by its
// TestMain through RunWithFerretDB.
type TestFerretDB struct {
	*FerretDB
	skip string
}

// Require skips t where FerretDB could not be built (never under CI, where
// RunWithFerretDB fails instead) and returns the server.
func (f *TestFerretDB) Require(t testing.TB) *FerretDB {
	t.Helper()
	if f.skip != "" {
		t.Skip(f.skip)
	}
	return f.FerretDB
}

// RunWithFerretDB starts FerretDB into f, runs the package's tests and
// stops it; TestMain exits with what it returns.
func RunWithFerretDB(m *testing.M, f *TestFerretDB) int {
	db, skip, err := StartFerretDB()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting ferretdb:", err)
		return 1
	}
	f.FerretDB, f.skip = db, skip
	if db != nil {
		defer db.Stop()
	}
	return m.Run()
}
