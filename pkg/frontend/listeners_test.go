package frontend_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/frontend"
	"github.com/fleetgate/fleetgate/pkg/kafkarecord"
	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// pki is a throwaway CA with a server and a client certificate.
type pki struct {
	dir                       string
	caFile, certFile, keyFile string
	clientCert                tls.Certificate
	pool                      *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	k := testkit.NewPKI(t, "device-1")
	return &pki{dir: k.Dir, caFile: k.CAFile, certFile: k.CertFile, keyFile: k.KeyFile, clientCert: k.ClientCert, pool: k.Pool}
}

func TestTLSWithClientCertificatesAndWebSocketCarryPublishesToKafka(t *testing.T) {
	p := newPKI(t)
	k := testkit.StartKafka(t)
	wsAddr := testkit.FreeAddr(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile, c.MQTT.TLSClientCAFile = p.certFile, p.keyFile, p.caFile
		c.MQTT.WSAddr = wsAddr
	})
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)
	tlsAddr := n.srv.Addr(frontend.ListenerTLS)
	require.NotEmpty(t, tlsAddr)

	t.Run("a client with a certificate from the CA publishes over TLS", func(t *testing.T) {
		c := dialV3(t, "ssl://"+tlsAddr, "tls-device", "", func(o *pahov3.ClientOptions) {
			o.SetTLSConfig(&tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.clientCert}, ServerName: "127.0.0.1"})
		})
		tok := c.Publish("tls/hello", 1, false, []byte("over tls"))
		require.True(t, tok.WaitTimeout(10*time.Second))
		require.NoError(t, tok.Error())
	})
	t.Run("a client without a certificate is refused", func(t *testing.T) {
		o := pahov3.NewClientOptions().AddBroker("ssl://" + tlsAddr).SetClientID("no-cert").SetAutoReconnect(false).
			SetTLSConfig(&tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"}).SetConnectTimeout(5 * time.Second)
		tok := pahov3.NewClient(o).Connect()
		require.True(t, tok.WaitTimeout(10*time.Second))
		assert.Error(t, tok.Error())
	})
	t.Run("a client publishes over WebSocket", func(t *testing.T) {
		c := dialV3(t, "ws://"+wsAddr+"/", "ws-device", "")
		tok := c.Publish("ws/hello", 1, false, []byte("over websocket"))
		require.True(t, tok.WaitTimeout(10*time.Second))
		require.NoError(t, tok.Error())
	})
	recs := reader.Read(2, 10*time.Second)
	got := map[string]string{}
	for _, r := range recs {
		got[string(r.Key)] = string(r.Value)
	}
	assert.Equal(t, map[string]string{"tls-device": "over tls", "ws-device": "over websocket"}, got)
}

func TestAPasswordFileAdmitsItsUsersOnly(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "passwords")
	require.NoError(t, os.WriteFile(file, []byte("# devices\nsensor-1:"+string(hash)+"\n"), 0o600))
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.Auth.PasswordFile = file
		c.Auth.AllowAnonymous = false
		c.Authz.AllowAll = true // every topic: the test is about who connects
	})
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)

	connect := func(user, pass string) error {
		o := pahov3.NewClientOptions().AddBroker("tcp://" + n.addr).SetClientID("auth-" + user).
			SetAutoReconnect(false).SetProtocolVersion(4)
		if user != "" {
			o.SetUsername(user).SetPassword(pass)
		}
		c := pahov3.NewClient(o)
		tok := c.Connect()
		require.True(t, tok.WaitTimeout(10*time.Second))
		if tok.Error() == nil {
			pub := c.Publish("auth/ok", 1, false, []byte(user))
			require.True(t, pub.WaitTimeout(10*time.Second))
			require.NoError(t, pub.Error())
			c.Disconnect(100)
		}
		return tok.Error()
	}
	assert.NoError(t, connect("sensor-1", "s3cret"))
	// [MQTT-3.2.2-3] 3.1.1 codes: 0x04 for credentials that do not match,
	// the same for an unknown user (which must not be told apart), 0x05
	// for no credentials at all.
	assert.ErrorContains(t, connect("sensor-1", "wrong"), "bad user name or password")
	assert.ErrorContains(t, connect("intruder", "s3cret"), "bad user name or password")
	assert.ErrorContains(t, connect("", ""), "not Authorized")
	recs := reader.Read(1, 10*time.Second)
	u, _ := testkit.Header(recs[0], kafkarecord.HeaderUsername)
	assert.Equal(t, "sensor-1", u)
	m := n.metrics()
	for _, want := range []string{`fleetgate_frontend_auth_failures_total{reason="wrong_password"} 1`,
		`fleetgate_frontend_auth_failures_total{reason="unknown_user"} 1`,
		`fleetgate_frontend_auth_failures_total{reason="anonymous_refused"} 1`,
		`fleetgate_frontend_auth_successes_total{source="password"} 1`} {
		assert.Contains(t, m, want)
	}
}

func TestReadinessFollowsKafkaReachability(t *testing.T) {
	addr := testkit.FreeAddr(t)
	n := startNode(t, addr, nil)
	// Nothing listens on the broker address: alive, but not ready.
	resp, err := http.Get("http://" + n.ops + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return n.readyz() == http.StatusServiceUnavailable }, 10*time.Second, 50*time.Millisecond)
	resp, err = http.Get("http://" + n.ops + "/readyz")
	require.NoError(t, err)
	body := make([]byte, 512)
	m, _ := resp.Body.Read(body)
	resp.Body.Close()
	assert.True(t, strings.Contains(string(body[:m]), "kafka"), "readyz names the failing dependency: %q", body[:m])

	// Kafka comes up on that address: the node becomes ready by itself.
	_, port, _ := net.SplitHostPort(addr)
	var portN int
	_, err = fmtSscan(port, &portN)
	require.NoError(t, err)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(portN))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	n.waitReady()
	v3 := dialV3(t, "tcp://"+n.addr, "after-kafka", "")
	tok := v3.Publish("ready/now", 1, false, []byte("ok"))
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
}

// tcpTimer returns the kernel's timer field ("tr" of /proc/net/tcp: 0 none,
// 1 retransmit, 2 keep-alive, ...) of the socket from local to remote, as
// seen from outside the process.
func tcpTimer(t *testing.T, local, remote *net.TCPAddr) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	require.NoError(t, err)
	hexAddr := func(a *net.TCPAddr) string {
		ip := a.IP.To4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 5 && f[1] == hexAddr(local) && f[2] == hexAddr(remote) {
			return strings.SplitN(f[5], ":", 2)[0]
		}
	}
	t.Fatalf("no socket %s -> %s in /proc/net/tcp", local, remote)
	return ""
}

func TestTheMQTTListenerSendsNoTCPKeepAliveProbesUnlessConfigured(t *testing.T) {
	k := testkit.StartKafka(t)
	for _, tc := range []struct {
		name      string
		keepAlive time.Duration
		timer     string
	}{
		{name: "defaults: no keep-alive timer on the device's socket", timer: "00"},
		{name: "mqtt.tcp-keepalive 5m: the keep-alive timer runs", keepAlive: 5 * time.Minute, timer: "02"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, k.Addr(), func(c *frontend.Config) { c.MQTT.Listen.TCPKeepAlive = tc.keepAlive })
			n.waitReady()
			c := testkit.DialRaw(t, n.addr, 4)
			c.Connect("keepalive-"+tc.timer, true)
			// The frontend's side of the connection: from its port to the
			// device's.
			srv, dev := c.Conn.RemoteAddr().(*net.TCPAddr), c.Conn.LocalAddr().(*net.TCPAddr)
			require.Equal(t, tc.timer, tcpTimer(t, srv, dev))
		})
	}
}

// TestOverTLSAPublishersAcksArriveWholeAndInOrder: a TLS connection's acks
// are written by the node's flush queue through the listener's
// non-blocking socket (pkg/listen's nbConn), MQTT 3.1.1 and 5: 200 QoS 1
// publishes sent in one go get 200 PUBACKs, in order, and Kafka has the
// 200 records.
func TestOverTLSAPublishersAcksArriveWholeAndInOrder(t *testing.T) {
	const publishes = 200
	p := newPKI(t)
	k := testkit.StartKafka(t)
	n := startNode(t, k.Addr(), func(c *frontend.Config) {
		c.MQTT.TLSCertFile, c.MQTT.TLSKeyFile = p.certFile, p.keyFile
	})
	n.waitReady()
	reader := testkit.NewReader(t, k.Addr(), topic)
	for _, version := range []byte{4, 5} {
		id := fmt.Sprintf("tls-acks-v%d", version)
		nc, err := tls.Dial("tcp", n.srv.Addr(frontend.ListenerTLS), &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"})
		require.NoError(t, err)
		c := testkit.WrapRaw(t, nc, version)
		c.Connect(id, true)
		var burst bytes.Buffer
		for i := 1; i <= publishes; i++ {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: version,
				TopicName: "tls/acks", PacketID: uint16(i), Payload: fmt.Appendf(nil, "%s-%d", id, i)}
			require.NoError(t, mqttwire.Encode(&burst, pk))
		}
		c.Write(burst.Bytes())
		for i := 1; i <= publishes; i++ {
			pk, err := c.Recv(10 * time.Second)
			require.NoError(t, err, "%s: ack %d", id, i)
			require.Equal(t, packets.Puback, pk.FixedHeader.Type)
			require.Equal(t, uint16(i), pk.PacketID, "%s: in order", id)
			require.Less(t, pk.ReasonCode, byte(0x80), "%s: ack %d succeeded", id, i)
		}
	}
	require.Len(t, reader.Read(2*publishes, 20*time.Second), 2*publishes)
}
