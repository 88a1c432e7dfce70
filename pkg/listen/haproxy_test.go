package listen_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
	"github.com/fleetgate/fleetgate/pkg/listen"
)

// TestHAProxySendProxyV2GivesTheDeviceAddress runs a real HAProxy in TCP
// mode with send-proxy-v2 (as deploy/haproxy/haproxy.cfg shows) in front of
// a TCP and a WebSocket listener. The device dials from 127.0.0.2, HAProxy
// reaches the listeners from 127.0.0.1: the server must see the device.
func TestHAProxySendProxyV2GivesTheDeviceAddress(t *testing.T) {
	haproxy := testkit.RequireTool(t, "haproxy", "haproxy")
	pp := listen.WithProxyProtocol(trusting(t, lbIP+"/32"))
	tcp := startBroker(t, listen.NewTCP("tcp", "127.0.0.1:0", pp))
	ws := startBroker(t, listen.NewWebSocket("ws", "127.0.0.1:0", pp))
	lbTCP, lbWS, lbReady := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `global
    log stdout format raw local0 info
    maxconn 100

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 1m
    timeout server 1m

frontend mqtt
    bind %s
    default_backend fleetgate_mqtt

frontend mqtt_ws
    bind %s
    default_backend fleetgate_mqtt_ws

backend fleetgate_mqtt
    server listener %s send-proxy-v2

backend fleetgate_mqtt_ws
    server listener %s send-proxy-v2

# Answers once every bind is in place, without touching a listener.
frontend ready
    mode http
    option httplog
    bind %s
    http-request return status 200
`, lbTCP, lbWS, tcp.addr, ws.addr, lbReady), 0o600))
	lb := testkit.StartProc(t, "haproxy", haproxy, "-db", "-f", cfg)
	require.Eventually(t, func() bool {
		select {
		case <-lb.Exited():
			t.Fatalf("haproxy exited:\n%s", lb.Output())
		default:
		}
		resp, err := http.Get("http://" + lbReady + "/")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 15*time.Second, 50*time.Millisecond, "haproxy did not listen")

	cases := []struct {
		name    string
		connect func(t *testing.T) (clientID string, device net.Addr)
		b       *broker
	}{
		{
			name: "an MQTT 5 client over TCP is seen with its own address, not HAProxy's",
			b:    tcp,
			connect: func(t *testing.T) (string, net.Addr) {
				c := dialFrom(t, outsiderIP, lbTCP, nil)
				require.NoError(t, connectV5(t, c, "haproxy-tcp-device"))
				return "haproxy-tcp-device", c.LocalAddr()
			},
		},
		{
			name: "an MQTT client over WebSocket is seen with its own address, not HAProxy's",
			b:    ws,
			connect: func(t *testing.T) (string, net.Addr) {
				c, _, err := dialWS(t, lbWS, wsOptions{from: outsiderIP})
				require.NoError(t, err)
				c.connect("haproxy-ws-device")
				return "haproxy-ws-device", c.ws.LocalAddr()
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, device := tc.connect(t)
			require.Equal(t, device.String(), tc.b.rec.remote(id))
		})
	}
}
