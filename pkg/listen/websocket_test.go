package listen_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/listen"
)

// connectPaho connects with paho.mqtt.golang (MQTT 3.1.1) to url, sending
// origin as the Origin header unless it is empty.
func connectPaho(t *testing.T, url, clientID, origin string, tc *tls.Config) error {
	t.Helper()
	_, err := dialPaho(t, url, clientID, origin, tc)
	return err
}

// dialPaho is connectPaho that also returns the client.
func dialPaho(t *testing.T, url, clientID, origin string, tc *tls.Config) (pahomqtt.Client, error) {
	t.Helper()
	opts := pahomqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	if origin != "" {
		opts.SetHTTPHeaders(http.Header{"Origin": {origin}})
	}
	if tc != nil {
		opts.SetTLSConfig(tc)
	}
	c := pahomqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(100) })
	}
	return c, tok.Error()
}

func TestWebSocketListenerOriginPolicy(t *testing.T) {
	cases := []struct {
		name    string
		allowed []string
		origin  string
		want    bool
	}{
		{name: "a device that sends no Origin is accepted", want: true},
		{name: "a browser page is refused when no Origin is allowed", origin: "https://app.example.com"},
		{name: "a browser page whose Origin is listed is accepted", allowed: []string{"https://app.example.com"}, origin: "https://app.example.com", want: true},
		{name: "a listed Origin matches whatever its case and default port", allowed: []string{"HTTPS://App.Example.com:443/"}, origin: "https://app.example.com", want: true},
		{name: "a browser page whose Origin is not listed is refused", allowed: []string{"https://app.example.com"}, origin: "https://evil.example"},
		{name: "an Origin differing only in scheme is refused", allowed: []string{"https://app.example.com"}, origin: "http://app.example.com"},
		{name: "a * entry accepts every Origin", allowed: []string{listen.AnyOrigin}, origin: "https://evil.example", want: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refusals := make(chan string, 10)
			b := startBroker(t, listen.NewWebSocket("ws", "127.0.0.1:0", listen.WithAllowedOrigins(tc.allowed...),
				listen.WithRefusalHook(func(reason string) { refusals <- reason })))
			id := fmt.Sprintf("ws-device-%d", i)
			if !tc.want {
				_, resp, err := dialWS(t, b.addr, wsOptions{origin: tc.origin})
				require.Error(t, err)
				require.NotNil(t, resp)
				require.Equal(t, http.StatusForbidden, resp.StatusCode)
				require.Equal(t, listen.RefusedOrigin, <-refusals) // reported before the 403 went out
				require.Error(t, connectPaho(t, "ws://"+b.addr+"/mqtt", id, tc.origin, nil))
				require.Zero(t, b.rec.count(), "an MQTT client connected")
				return
			}
			require.NoError(t, connectPaho(t, "ws://"+b.addr+"/mqtt", id, tc.origin, nil))
			require.NotEmpty(t, b.rec.remote(id))
			require.Empty(t, refusals)
		})
	}
}

func TestWebSocketListenerSelectsTheMQTTSubprotocol(t *testing.T) {
	b := startBroker(t, listen.NewWebSocket("ws", "127.0.0.1:0"))
	c, resp, err := dialWS(t, b.addr, wsOptions{})
	require.NoError(t, err)
	require.Equal(t, "mqtt", resp.Header.Get("Sec-WebSocket-Protocol")) // [MQTT-6.0.0-4]
	c.connect("subprotocol-device")
}

func TestWebSocketListenerServesWSS(t *testing.T) {
	cert := newTestCert(t)
	l := listen.NewWebSocket("wss", "127.0.0.1:0", listen.WithTLS(cert.server))
	require.Equal(t, "wss", l.Protocol())
	b := startBroker(t, l)
	c, err := dialPaho(t, "wss://"+b.addr+"/mqtt", "wss-device", "", cert.client)
	require.NoError(t, err)
	host, _, err := net.SplitHostPort(b.rec.remote("wss-device"))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)

	// A round trip: SUBACK, PUBACK and the PUBLISH come back over wss.
	got := make(chan string, 1)
	sub := c.Subscribe("fleet/echo", 1, func(_ pahomqtt.Client, m pahomqtt.Message) { got <- string(m.Payload()) })
	require.True(t, sub.WaitTimeout(5*time.Second))
	require.NoError(t, sub.Error())
	pub := c.Publish("fleet/echo", 1, false, "hello over wss")
	require.True(t, pub.WaitTimeout(5*time.Second))
	require.NoError(t, pub.Error())
	select {
	case m := <-got:
		require.Equal(t, "hello over wss", m)
	case <-time.After(5 * time.Second):
		t.Fatal("the message did not come back")
	}

	_, _, err = dialWS(t, b.addr, wsOptions{}) // plain HTTP on the TLS port
	require.Error(t, err)
}

func TestWebSocketListenerTakesTheDeviceAddressOnlyFromTrustedProxyHeaders(t *testing.T) {
	cert := newTestCert(t)
	cases := []struct {
		name   string
		wss    bool
		from   string
		header []byte
		want   string // "" means refused
	}{
		{name: "ws behind a PROXY v1 header from the trusted load balancer gives the device's address", from: lbIP, header: []byte("PROXY TCP4 203.0.113.20 198.51.100.1 40020 8083\r\n"), want: "203.0.113.20:40020"},
		{name: "wss behind a PROXY v2 header from the trusted load balancer gives the device's address", wss: true, from: lbIP, want: "203.0.113.21:40021"},
		{name: "a PROXY header from an untrusted source is refused", from: outsiderIP, header: []byte("PROXY TCP4 203.0.113.22 198.51.100.1 40022 8083\r\n")},
		{name: "the trusted load balancer without a header is refused", from: lbIP},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := []listen.Option{listen.WithProxyProtocol(trusting(t, lbIP))}
			o := wsOptions{from: tc.from, prelude: tc.header}
			if tc.wss {
				opts = append(opts, listen.WithTLS(cert.server))
				o.tls = cert.client
				o.prelude = headerBytes(t, header(2, tc.want, "198.51.100.1:8083"))
			}
			b := startBroker(t, listen.NewWebSocket("ws", "127.0.0.1:0", opts...))
			c, _, err := dialWS(t, b.addr, o)
			if tc.want == "" {
				require.Error(t, err)
				require.Zero(t, b.rec.count())
				return
			}
			require.NoError(t, err)
			id := fmt.Sprintf("proxied-ws-device-%d", i)
			c.connect(id)
			require.Equal(t, tc.want, b.rec.remote(id))
		})
	}
}

func TestWebSocketListenerReadsMQTTAcrossMessageBoundaries(t *testing.T) {
	b := startBroker(t, listen.NewWebSocket("ws", "127.0.0.1:0"))
	c, _, err := dialWS(t, b.addr, wsOptions{})
	require.NoError(t, err)
	connect := encode(t, connectPacket("split-device"))
	// [MQTT-6.0.0-2]: a packet may span messages, a message may hold several.
	c.send(connect[:3], nil, connect[3:])
	require.Equal(t, packets.Connack, c.recv(1)[0].FixedHeader.Type)
	c.send(encode(t, pingPacket(), pingPacket(), pingPacket()))
	for _, pk := range c.recv(3) {
		require.Equal(t, packets.Pingresp, pk.FixedHeader.Type)
	}
}

func TestWebSocketListenerClosesAConnectionThatSendsAText(t *testing.T) {
	b := startBroker(t, listen.NewWebSocket("ws", "127.0.0.1:0"))
	c, _, err := dialWS(t, b.addr, wsOptions{})
	require.NoError(t, err)
	c.connect("text-device")
	// [MQTT-6.0.0-1]
	require.NoError(t, c.ws.WriteMessage(websocket.TextMessage, encode(t, pingPacket())))
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = c.ws.ReadMessage()
	require.True(t, websocket.IsCloseError(err, websocket.CloseUnsupportedData), "want close 1003, got %v", err)
}

func TestWebSocketListenerLifecycle(t *testing.T) {
	t.Run("the constructor opens nothing and Init fails on a port in use", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = busy.Close() })
		l := listen.NewWebSocket("ws", busy.Addr().String())
		require.Equal(t, "ws", l.Protocol())
		require.Error(t, l.Init(nil))
	})
	t.Run("Close ends Serve, more than once, and the port no longer accepts", func(t *testing.T) {
		l := listen.NewWebSocket("ws", "127.0.0.1:0")
		require.NoError(t, l.Init(nil))
		served := make(chan struct{})
		go func() {
			defer close(served)
			l.Serve(func(string, net.Conn) error { return nil })
		}()
		require.Eventually(t, func() bool {
			resp, err := http.Get("http://" + l.Address() + "/")
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusBadRequest // not a WebSocket upgrade
		}, 5*time.Second, 10*time.Millisecond)
		closed := 0
		l.Close(func(string) { closed++ })
		l.Close(func(string) { closed++ })
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
		require.Equal(t, 1, closed, "closeClients runs once")
		_, err := net.DialTimeout("tcp", l.Address(), time.Second)
		require.Error(t, err, "the port still accepts")
	})
}

// TestWebSocketConnectionsAreServedOffNetHTTPsGoroutine: an upgraded
// connection is served on a goroutine of its own, started small; net/http's
// goroutine of the request, whose stack the request grew (8.5 KiB per idle
// connection while the connection was served on it: 29.6 KiB per idle
// WebSocket connection in all, 19.9 since), ends with the upgrade. The
// connections go on as before.
func TestWebSocketConnectionsAreServedOffNetHTTPsGoroutine(t *testing.T) {
	b := startBroker(t, listen.NewWebSocket("ws", "127.0.0.1:0"))
	var cs []*wsClient
	for i := range 20 {
		c, _, err := dialWS(t, b.addr, wsOptions{})
		require.NoError(t, err)
		c.connect(fmt.Sprintf("ws-off-%02d", i))
		cs = append(cs, c)
	}
	buf := make([]byte, 8<<20)
	n := runtime.Stack(buf, true)
	require.Zero(t, strings.Count(string(buf[:n]), "net/http.(*conn).serve"),
		"no goroutine of net/http's serves an upgraded connection")
	for _, c := range cs {
		c.send(encode(t, pingPacket()))
		require.Equal(t, packets.Pingresp, c.recv(1)[0].FixedHeader.Type)
	}
	// A message far larger than the connection's read buffer (512 B) is
	// read whole, and so is the packet after it in the same message.
	big := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "ws/big",
		PacketID: 7, Payload: bytes.Repeat([]byte("x"), 100<<10)}
	cs[0].send(encode(t, big, pingPacket()))
	got := cs[0].recv(2)
	require.Equal(t, packets.Puback, got[0].FixedHeader.Type)
	require.Equal(t, uint16(7), got[0].PacketID)
	require.Equal(t, packets.Pingresp, got[1].FixedHeader.Type)
}
