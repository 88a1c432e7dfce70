package listen_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/listen"
	"github.com/fleetgate/fleetgate/pkg/mqttwire"
)

// The addresses the tests' devices and load balancers use. Linux answers on
// all of 127.0.0.0/8, so a client dialling from 127.0.0.2 is a source
// outside a trusted 127.0.0.1/32.
const (
	lbIP       = "127.0.0.1" // the trusted load balancer
	outsiderIP = "127.0.0.2" // a source that is not trusted
)

// remoteRecorder is a mochi hook that records cl.Net.Remote of every
// client that connected: the address the frontend's logs, throttling and
// session events see.
type remoteRecorder struct {
	mqtt.HookBase
	mu      sync.Mutex
	remotes map[string]string // client id → cl.Net.Remote
}

func (r *remoteRecorder) ID() string { return "remote-recorder" }

func (r *remoteRecorder) Provides(b byte) bool { return b == mqtt.OnConnect }

func (r *remoteRecorder) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.remotes[cl.ID] = cl.Net.Remote
	return nil
}

// remote returns the address the client connected from, "" if it never did.
func (r *remoteRecorder) remote(clientID string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remotes[clientID]
}

func (r *remoteRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.remotes)
}

// broker is a mochi server with one of our listeners.
type broker struct {
	rec  *remoteRecorder
	addr string // the listener's bound address
	logs *testkit.SyncBuffer
}

// startBroker starts a mochi server that accepts every client, with l as
// its only listener; it stops at the end of the test.
func startBroker(t *testing.T, l listeners.Listener) *broker {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	rec := &remoteRecorder{remotes: map[string]string{}}
	require.NoError(t, srv.AddHook(rec, nil))
	require.NoError(t, srv.AddListener(l))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() {
		_ = srv.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &broker{rec: rec, addr: l.Address(), logs: logs}
}

// trusting is the PROXY setting of a listener behind a load balancer on
// lbIP.
func trusting(t *testing.T, sources ...string) *listen.ProxyProtocol {
	t.Helper()
	trusted, err := listen.ParseTrusted(sources)
	require.NoError(t, err)
	return &listen.ProxyProtocol{Trusted: trusted, HeaderTimeout: 2 * time.Second}
}

// header is a PROXY header for a device at src talking to dst.
func header(version byte, src, dst string) *proxyproto.Header {
	s, d := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst))
	return proxyproto.HeaderProxyFromAddrs(version, s, d)
}

// dialFrom opens a TCP connection to addr from the local address ip and,
// when prelude is not empty, writes it first (a PROXY header, or garbage).
func dialFrom(t *testing.T, ip, addr string, prelude []byte) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	if len(prelude) > 0 {
		_, err = c.Write(prelude)
		require.NoError(t, err)
	}
	return c
}

// headerBytes is h on the wire.
func headerBytes(t *testing.T, h *proxyproto.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	_, err := h.WriteTo(&b)
	require.NoError(t, err)
	return b.Bytes()
}

// connectV5 speaks MQTT 5 over c with paho.golang and returns the CONNECT's
// outcome.
func connectV5(t *testing.T, c net.Conn, clientID string) error {
	t.Helper()
	cl := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: pahopackets.NewThreadSafeConn(c)})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := cl.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true})
	if err == nil {
		t.Cleanup(func() { _ = cl.Disconnect(&paho.Disconnect{}) })
	}
	return err
}

// requireClosedByServer waits for the server to close c without sending
// anything.
func requireClosedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 64))
	require.Zero(t, n, "the server answered instead of closing")
	require.Error(t, err)
	require.False(t, testkit.IsTimeout(err), "the server did not close the connection: %v", err)
}

// testCert is a self-signed certificate for 127.0.0.1 and localhost.
type testCert struct {
	server *tls.Config
	client *tls.Config // trusts server's certificate
}

func newTestCert(t *testing.T) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fleetgate test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return testCert{
		server: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
		client: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
	}
}

// wsClient is a byte-level MQTT 3.1.1 client over a WebSocket, for tests
// that control the PROXY header, the messages and their boundaries.
type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

// wsOptions shape a WebSocket handshake of dialWS.
type wsOptions struct {
	from    string            // local IP; "" is any
	prelude []byte            // written on the TCP connection before TLS and HTTP
	tls     *tls.Config       // wss when set
	origin  string            // the Origin header; "" sends none
	path    string            // "/" when empty
	header  http.Header       // more request headers
	dialer  *websocket.Dialer // nil: built from the fields above
	noProto bool              // offer no "mqtt" subprotocol
}

// dialWS makes a WebSocket handshake with the listener at addr and returns
// the client, or the HTTP response and error of a refused handshake.
func dialWS(t *testing.T, addr string, o wsOptions) (*wsClient, *http.Response, error) {
	t.Helper()
	scheme := "ws"
	if o.tls != nil {
		scheme = "wss"
	}
	if o.path == "" {
		o.path = "/"
	}
	d := &websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		TLSClientConfig:  o.tls,
		NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			nd := net.Dialer{}
			if o.from != "" {
				nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.from)}
			}
			c, err := nd.DialContext(ctx, network, a)
			if err != nil || len(o.prelude) == 0 {
				return c, err
			}
			if _, err := c.Write(o.prelude); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	}
	if !o.noProto {
		d.Subprotocols = []string{"mqtt"}
	}
	h := http.Header{}
	for k, v := range o.header {
		h[k] = v
	}
	if o.origin != "" {
		h.Set("Origin", o.origin)
	}
	ws, resp, err := d.DialContext(t.Context(), scheme+"://"+addr+o.path, h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &wsClient{t: t, ws: ws}, resp, nil
}

// encode is the MQTT 3.1.1 encoding of pks, back to back.
func encode(t *testing.T, pks ...packets.Packet) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, pk := range pks {
		pk.ProtocolVersion = 4
		if pk.FixedHeader.Type == packets.Connect {
			pk.Connect.ProtocolName = []byte("MQTT")
			pk.Connect.Keepalive = 30
			pk.Connect.Clean = true
		}
		require.NoError(t, mqttwire.Encode(&b, pk))
	}
	return b.Bytes()
}

func connectPacket(clientID string) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: clientID}}
}

func pingPacket() packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}
}

// send writes each of msgs as one binary message.
func (c *wsClient) send(msgs ...[]byte) {
	c.t.Helper()
	for _, m := range msgs {
		require.NoError(c.t, c.ws.WriteMessage(websocket.BinaryMessage, m))
	}
}

// recv reads the next n packets, across messages.
func (c *wsClient) recv(n int) []packets.Packet {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []packets.Packet
	var pending []byte // received, not yet decoded
	for len(out) < n {
		typ, msg, err := c.ws.ReadMessage()
		require.NoError(c.t, err)
		require.Equal(c.t, websocket.BinaryMessage, typ, "the server sent a non-binary message")
		pending = append(pending, msg...)
		for len(out) < n {
			r := bytes.NewReader(pending)
			br := bufio.NewReader(r)
			pk, _, err := mqttwire.Read(br, 4, nil)
			if err != nil {
				break // the rest of the packet comes in a later message
			}
			out = append(out, pk)
			pending = pending[len(pending)-r.Len()-br.Buffered():]
		}
	}
	return out
}

// connect sends CONNECT in one message and requires CONNACK 0.
func (c *wsClient) connect(clientID string) {
	c.t.Helper()
	c.send(encode(c.t, connectPacket(clientID)))
	ack := c.recv(1)[0]
	require.Equal(c.t, packets.Connack, ack.FixedHeader.Type)
	require.Zero(c.t, ack.ReasonCode)
}
