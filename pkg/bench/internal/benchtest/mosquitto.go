package benchtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Mosquitto is a running mosquitto, or why there is none.
type Mosquitto struct {
	Addr string
	PID  int
	// Missing says why there is no broker; the tests that need one skip.
	Missing string

	stop func()
}

// TB is the part of testing.TB that Require uses.
type TB interface {
	Helper()
	Skip(args ...any)
}

// Require returns the broker's address, and skips t when mosquitto is not
// installed.
func (b *Mosquitto) Require(t TB) string {
	t.Helper()
	if b.Missing != "" {
		t.Skip(b.Missing)
	}
	return b.Addr
}

// RunWithMosquitto starts mosquitto into b, runs the tests of m and stops
// it; it returns the exit code for os.Exit. A package's TestMain is
// os.Exit(benchtest.RunWithMosquitto(m, &broker)).
func RunWithMosquitto(m interface{ Run() int }, b *Mosquitto) int {
	if err := b.start(); err != nil {
		fmt.Fprintln(os.Stderr, "bench tests:", err)
		return 1
	}
	code := m.Run()
	if b.stop != nil {
		b.stop()
	}
	return code
}

// start starts mosquitto from PATH (or /usr/sbin) with persistence off on a
// free loopback port. A missing binary is not an error: Missing says so.
func (b *Mosquitto) start() error {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			b.Missing = "mosquitto not installed (apt-get install -y mosquitto)"
			return nil
		}
		bin = "/usr/sbin/mosquitto"
	}
	dir, err := os.MkdirTemp("", "bench-mosquitto-")
	if err != nil {
		return err
	}
	// A port that was free a moment ago.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
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
		return err
	}
	logFile, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mosquitto: %w", err)
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		_ = os.RemoveAll(dir)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			stop()
			return fmt.Errorf("mosquitto on %s did not answer: %w; its log:\n%s", addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Addr, b.PID, b.stop = addr, cmd.Process.Pid, stop
	return nil
}
