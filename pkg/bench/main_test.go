package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// broker is the mosquitto every test of the package shares, started once by
// TestMain on a free port.
var broker struct {
	addr    string
	pid     int
	missing string // why there is no broker
}

func TestMain(m *testing.M) {
	stop, err := startMosquitto()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startMosquitto starts mosquitto from PATH (or /usr/sbin) with persistence
// off on a free loopback port. A missing binary is not an error: the tests
// that need it skip.
func startMosquitto() (stop func(), err error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			broker.missing = "mosquitto not installed (apt-get install -y mosquitto)"
			return func() {}, nil
		}
		bin = "/usr/sbin/mosquitto"
	}
	dir, err := os.MkdirTemp("", "bench-mosquitto-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	err = os.WriteFile(conf, fmt.Appendf(nil, `listener %d 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 256
max_queued_messages 100000
set_tcp_nodelay true
log_dest stderr
log_type error
`, port), 0o644)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting mosquitto: %w", err)
	}
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		_ = os.RemoveAll(dir)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl, err := Dial(context.Background(), addr, ClientOptions{ClientID: "bench-probe", Version: 4, ConnectTimeout: time.Second})
		if err == nil {
			_ = cl.Disconnect()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			stop()
			return nil, fmt.Errorf("mosquitto on %s did not answer: %w; its log:\n%s", addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	broker.addr, broker.pid = addr, cmd.Process.Pid
	return stop, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// needBroker skips the test when mosquitto is not installed and returns its
// address.
func needBroker(t *testing.T) string {
	t.Helper()
	if broker.missing != "" {
		t.Skip(broker.missing)
	}
	return broker.addr
}

// newTestFlagSet returns a flag set whose registration fills in defaults.
func newTestFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}
