package benchtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/tlsfiles"
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
	if err := b.start(""); err != nil {
		fmt.Fprintln(os.Stderr, "bench tests:", err)
		return 1
	}
	code := m.Run()
	if b.stop != nil {
		b.stop()
	}
	return code
}

// StartWithPasswords starts a mosquitto of its own that admits only the
// users of plainFile, a file of username:password lines: a copy of it is
// hashed by mosquitto_passwd -U (PBKDF2-SHA512) into the broker's
// password_file. With patterns, its acl_file holds a "pattern readwrite"
// line for each (%u the username, %c the client id) and nothing else is
// allowed. Stop stops it. A missing mosquitto or mosquitto_passwd is not an
// error: Missing says so.
func StartWithPasswords(plainFile string, patterns ...string) (*Mosquitto, error) {
	b := &Mosquitto{}
	passwd, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		b.Missing = "mosquitto_passwd not installed (apt-get install -y mosquitto)"
		return b, nil
	}
	plain, err := os.ReadFile(plainFile)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "bench-mosquitto-passwd-")
	if err != nil {
		return nil, err
	}
	hashed := f.Name()
	_, err = f.Write(plain)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command(passwd, "-U", hashed).CombinedOutput(); err != nil {
		_ = os.Remove(hashed)
		return nil, fmt.Errorf("mosquitto_passwd -U: %w: %s", err, out)
	}
	// Started as root, mosquitto reads the file after switching to its own
	// user.
	if err := os.Chmod(hashed, 0o644); err != nil {
		_ = os.Remove(hashed)
		return nil, err
	}
	auth := "allow_anonymous false\npassword_file " + hashed + "\n"
	acl := hashed + ".acl"
	if len(patterns) > 0 {
		var lines strings.Builder
		for _, p := range patterns {
			lines.WriteString("pattern readwrite " + p + "\n")
		}
		if err := os.WriteFile(acl, []byte(lines.String()), 0o644); err != nil {
			_ = os.Remove(hashed)
			return nil, err
		}
		auth += "acl_file " + acl + "\n"
	}
	remove := func() { _ = os.Remove(hashed); _ = os.Remove(acl) }
	if err := b.start(auth); err != nil {
		remove()
		return nil, err
	}
	if stop := b.stop; stop != nil {
		b.stop = func() { stop(); remove() }
	}
	return b, nil
}

// StartWithTLS starts a mosquitto of its own that takes anonymous clients
// over TLS only, with a server certificate for 127.0.0.1 that the CA of the
// returned files signed (in a directory of its own that mosquitto, which
// drops root, can read; removed by Stop). A missing mosquitto is not an
// error: Missing says so.
func StartWithTLS() (*Mosquitto, tlsfiles.Files, error) {
	dir, err := os.MkdirTemp("", "bench-mosquitto-tls-")
	if err != nil {
		return nil, tlsfiles.Files{}, err
	}
	files, err := tlsfiles.Write(dir)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, files, err
	}
	b := &Mosquitto{}
	if err := b.start(fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nallow_anonymous true\n", files.CA, files.Cert, files.Key)); err != nil {
		_ = os.RemoveAll(dir)
		return nil, files, err
	}
	stop := b.stop
	b.stop = func() {
		if stop != nil {
			stop()
		}
		_ = os.RemoveAll(dir)
	}
	return b, files, nil
}

// Stop stops a broker of StartWithPasswords or StartWithTLS.
func (b *Mosquitto) Stop() {
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
}

// start starts mosquitto from PATH (or /usr/sbin) with persistence off on a
// free loopback port; auth is its access configuration (empty: anonymous
// clients allowed). A missing binary is not an error: Missing says so.
func (b *Mosquitto) start(auth string) error {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			b.Missing = "mosquitto not installed (apt-get install -y mosquitto)"
			return nil
		}
		bin = "/usr/sbin/mosquitto"
	}
	if auth == "" {
		auth = "allow_anonymous true\n"
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
%spersistence false
max_inflight_messages 256
max_queued_messages 100000
set_tcp_nodelay true
log_dest stderr
log_type error
`, port, auth), 0o644)
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
