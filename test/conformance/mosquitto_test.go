package conformance

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// mosquitto drives mosquitto_sub and mosquitto_pub (libmosquitto). One
// mosquitto_sub process is one connection: it subscribes (-t) and
// unsubscribes (-U) right after connecting, and prints every message in the
// format below, payload in hex. Its -d output carries the SUBACK codes.
// mosquitto_pub publishes each message from a connection of its own.
//
// What these tools cannot express is tested with paho (Go, and Python for
// No Local and Retain Handling, pypaho_test.go) and testkit.Raw:
// Session Present (not printed), UNSUBACK reason codes (not printed),
// No Local and Retain Handling (no options for them), reusing a topic
// alias without the topic (libmosquitto always sends the topic), and a
// normal DISCONNECT of mosquitto_sub on MQTT 5 (on SIGINT/SIGTERM it sends
// reason 0x04, Disconnect with Will Message).
type mosquitto struct {
	t       *testing.T
	version byte
	host    string
	port    string
	o       opts
	cmd     *exec.Cmd
	exited  chan struct{}
	msgs    chan msg
	granted []byte
}

const mosqFormat = `MSG\t%q\t%r\t%E\t%t\t%S\t%x`

func (m *mosquitto) common() []string {
	a := []string{"-h", m.host, "-p", m.port, "-V", "mqttv311"}
	if m.version == v5 {
		a[5] = "mqttv5"
	}
	return a
}

func dialMosquitto(version byte) func(t *testing.T, addr string, o opts) client {
	return func(t *testing.T, addr string, o opts) client {
		t.Helper()
		bin := testkit.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		m := &mosquitto{t: t, version: version, host: host, port: port, o: o,
			msgs: make(chan msg, 1000), exited: make(chan struct{})}
		args := append(m.common(), "-i", o.ID, "-k", "30", "-d", "-F", mosqFormat)
		args = append(args, credArgs(o.ID)...)
		if o.Persistent {
			args = append(args, "-c")
			if version == v5 {
				e := o.Expiry
				if e == 0 {
					e = 300
				}
				args = append(args, "-x", strconv.FormatUint(uint64(e), 10))
			}
		} else if o.Expiry > 0 && version == v5 {
			args = append(args, "-x", strconv.FormatUint(uint64(o.Expiry), 10))
		}
		if w := o.Will; w != nil {
			args = append(args, "--will-topic", w.Topic, "--will-payload", w.Payload,
				"--will-qos", strconv.Itoa(int(w.QoS)))
			if w.Retain {
				args = append(args, "--will-retain")
			}
			if w.Delay > 0 {
				args = append(args, "-D", "will", "will-delay-interval", strconv.FormatUint(uint64(w.Delay), 10))
			}
		}
		if o.RetainAsPublished {
			args = append(args, "--retain-as-published")
		}
		if o.SubID > 0 {
			args = append(args, "-D", "subscribe", "subscription-identifier", strconv.Itoa(o.SubID))
		}
		subs, unsubs := o.Subs, o.Unsubs
		if len(subs) == 0 {
			// mosquitto_sub needs a topic to subscribe to: subscribing to
			// a filter nobody uses and unsubscribing it again connects
			// without changing the session's subscriptions.
			none := "conformance/none/" + o.ID
			subs, unsubs = []sub{{Filter: none}}, append(unsubs, none)
		}
		for _, s := range subs {
			require.Equal(t, subs[0].QoS, s.QoS, "mosquitto_sub subscribes to every filter with one QoS")
			args = append(args, "-t", s.Filter)
		}
		args = append(args, "-q", strconv.Itoa(int(subs[0].QoS)))
		for _, u := range unsubs {
			args = append(args, "-U", u)
		}
		// mosquitto_sub's stdout is a pipe here: line-buffer it, so that
		// each line arrives when it is printed.
		m.cmd = exec.Command(bin, args...)
		if sb, err := exec.LookPath("stdbuf"); err == nil {
			m.cmd = exec.Command(sb, append([]string{"-oL", bin}, args...)...)
		}
		stdout, err := m.cmd.StdoutPipe()
		require.NoError(t, err)
		var stderr strings.Builder
		m.cmd.Stderr = &stderr
		require.NoError(t, m.cmd.Start())
		t.Cleanup(func() {
			_ = m.cmd.Process.Kill()
			<-m.exited
		})
		ready := make(chan error, 1)
		go m.read(stdout, len(unsubs) > 0, ready)
		go func() {
			err := m.cmd.Wait()
			if err != nil && stderr.Len() > 0 {
				t.Logf("mosquitto_sub %s: %v: %s", o.ID, err, stderr.String())
			}
			close(m.exited)
		}()
		select {
		case err := <-ready:
			require.NoError(t, err, "mosquitto_sub %s", o.ID)
		case <-time.After(waitFor):
			t.Fatalf("mosquitto_sub %s: not subscribed within %s (stderr %q)", o.ID, waitFor, stderr.String())
		}
		return m
	}
}

// read parses mosquitto_sub's output: debug lines until the SUBACK and
// UNSUBACK (ready), then one line per message.
func (m *mosquitto) read(r io.Reader, wantUnsuback bool, ready chan<- error) {
	wantSuback := true
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	signalled := false
	signal := func(err error) {
		if !signalled {
			signalled = true
			ready <- err
		}
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Subscribed (mid:"):
			// "Subscribed (mid: 1): 1, 0"
			if i := strings.Index(line, "):"); i >= 0 {
				for _, f := range strings.Split(line[i+2:], ",") {
					n, err := strconv.Atoi(strings.TrimSpace(f))
					if err == nil {
						m.granted = append(m.granted, byte(n))
					}
				}
			}
			if len(m.o.Subs) == 0 {
				m.granted = nil
			}
			wantSuback = false
		case strings.Contains(line, "received UNSUBACK"):
			wantUnsuback = false
		case strings.HasPrefix(line, "MSG\t"):
			f := strings.Split(line, "\t")
			if len(f) != 7 {
				continue
			}
			q, _ := strconv.Atoi(f[1])
			p, _ := hex.DecodeString(f[6])
			ms := msg{Topic: f[4], Payload: string(p), QoS: byte(q), Retain: f[2] == "1"}
			if f[5] != "" {
				ms.SubID, _ = strconv.Atoi(f[5])
			}
			if f[3] != "" {
				e, err := strconv.ParseUint(f[3], 10, 32)
				if err == nil {
					ms.Expiry, ms.HasExpiry = uint32(e), true
				}
			}
			m.msgs <- ms
		}
		if !wantSuback && !wantUnsuback {
			signal(nil)
		}
	}
	signal(fmt.Errorf("exited before it was subscribed"))
}

func (m *mosquitto) Granted() []byte              { return m.granted }
func (m *mosquitto) SessionPresent() (bool, bool) { return false, false }
func (m *mosquitto) Messages() <-chan msg         { return m.msgs }

func (m *mosquitto) Publish(topic, payload string, qos byte, retain bool) {
	m.t.Helper()
	// One client id for every message of this client: the cluster
	// routes the messages of one publisher in order.
	mosquittoPub(m.t, m.version, m.host+":"+m.port, m.o.ID+"-pub", topic, payload, qos, retain)
}

// mosquittoPub publishes one message with mosquitto_pub, which connects,
// publishes, waits for the acknowledgement and disconnects normally.
func mosquittoPub(t *testing.T, version byte, addr, clientID, topic, payload string, qos byte, retain bool, extra ...string) {
	t.Helper()
	bin := testkit.RequireTool(t, "mosquitto_pub", "mosquitto-clients")
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	v := "mqttv311"
	if version == v5 {
		v = "mqttv5"
	}
	args := []string{"-h", host, "-p", port, "-V", v, "-i", clientID, "-t", topic, "-q", strconv.Itoa(int(qos))}
	args = append(args, credArgs(clientID)...)
	if payload == "" {
		args = append(args, "-n")
	} else {
		args = append(args, "-m", payload)
	}
	if retain {
		args = append(args, "-r")
	}
	args = append(args, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	require.NoError(t, err, "mosquitto_pub %v: %s", args, out)
}

// Disconnect stops mosquitto_sub with SIGTERM: it sends DISCONNECT (on
// MQTT 5 with reason 0x04, Disconnect with Will Message).
func (m *mosquitto) Disconnect() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(waitFor):
		m.t.Errorf("mosquitto_sub %s did not exit", m.o.ID)
	}
}

// Drop kills mosquitto_sub: the kernel closes its TCP connection without
// DISCONNECT.
func (m *mosquitto) Drop() {
	_ = m.cmd.Process.Kill()
	<-m.exited
}

// credArgs are the mosquitto clients' flags for the credentials of the
// client with clientID.
func credArgs(clientID string) []string {
	user, pw := creds(clientID)
	return []string{"-u", user, "-P", string(pw)}
}
