package conformance

import (
	"bufio"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pyPaho drives Eclipse Paho for Python (Debian's python3-paho-mqtt) through
// testdata/paho_client.py: the second library for the MQTT 5 subscription
// options the mosquitto clients cannot set (No Local, Retain Handling).
type pyPaho struct {
	t       *testing.T
	stdin   io.WriteCloser
	msgs    chan msg
	subacks chan byte
	acked   chan string
}

// requirePyPaho returns the Python interpreter that has paho-mqtt: CI
// installs it (.ci/run), elsewhere the test is skipped without it.
func requirePyPaho(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import paho.mqtt.client").Run() == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("python3 with paho-mqtt not installed; .ci/run must install python3-paho-mqtt")
	}
	t.Skip("python3 with paho-mqtt not installed: apt-get install python3-paho-mqtt")
	return ""
}

// dialPyPaho connects an MQTT 5 client and subscribes to filter with the
// options; it returns once the SUBACK arrived.
func dialPyPaho(t *testing.T, addr, clientID, filter string, qos byte, noLocal bool, rh byte) *pyPaho {
	t.Helper()
	py := requirePyPaho(t)
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	nl := "0"
	if noLocal {
		nl = "1"
	}
	cmd := exec.Command(py, filepath.Join("testdata", "paho_client.py"), host, port, clientID, filter,
		strconv.Itoa(int(qos)), nl, strconv.Itoa(int(rh)))
	user, pw := creds(clientID)
	cmd.Env = append(os.Environ(), "MQTT_USERNAME="+user, "MQTT_PASSWORD="+string(pw))
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &pyPaho{t: t, stdin: stdin, msgs: make(chan msg, 100), subacks: make(chan byte, 10), acked: make(chan string, 10)}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("paho_client.py stderr:\n%s", stderr.String())
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			switch {
			case strings.HasPrefix(f[0], "SUBACK "):
				n, _ := strconv.Atoi(strings.TrimPrefix(f[0], "SUBACK "))
				p.subacks <- byte(n)
			case strings.HasPrefix(f[0], "PUBACKED "):
				p.acked <- strings.TrimPrefix(f[0], "PUBACKED ")
			case f[0] == "MSG" && len(f) == 4:
				b, _ := hex.DecodeString(f[2])
				p.msgs <- msg{Topic: f[1], Payload: string(b), Retain: f[3] == "1"}
			}
		}
	}()
	p.suback()
	return p
}

func (p *pyPaho) suback() {
	p.t.Helper()
	select {
	case rc := <-p.subacks:
		require.Less(p.t, rc, byte(0x80), "SUBACK reason")
	case <-time.After(waitFor):
		p.t.Fatal("paho_client.py got no SUBACK")
	}
}

// resubscribe sends the same SUBSCRIBE again and waits for its SUBACK.
func (p *pyPaho) resubscribe() {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, "sub\n")
	require.NoError(p.t, err)
	p.suback()
}

// publish publishes payload (no spaces) at QoS 1 from this client.
func (p *pyPaho) publish(topic, payload string) {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, "pub "+topic+" "+payload+"\n")
	require.NoError(p.t, err)
	select {
	case got := <-p.acked:
		require.Equal(p.t, payload, got)
	case <-time.After(waitFor):
		p.t.Fatal("paho_client.py: publish not acknowledged")
	}
}

func (p *pyPaho) next() msg {
	p.t.Helper()
	select {
	case m := <-p.msgs:
		return m
	case <-time.After(waitFor):
		p.t.Fatalf("no message within %s", waitFor)
		return msg{}
	}
}

func (p *pyPaho) none() {
	p.t.Helper()
	select {
	case m := <-p.msgs:
		p.t.Fatalf("unexpected message %q on %s", m.Payload, m.Topic)
	case <-time.After(quiet):
	}
}
