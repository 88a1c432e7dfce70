package listen_test

import (
	"flag"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/pkg/listen"
)

// parse registers the flags on a fresh set and parses args.
func parse(t *testing.T, args ...string) listen.Config {
	t.Helper()
	var c listen.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(args))
	return c
}

func TestConfigDefaultsTurnEverythingOff(t *testing.T) {
	c := parse(t)
	require.NoError(t, c.Validate())
	pp, err := c.Proxy()
	require.NoError(t, err)
	require.Nil(t, pp, "PROXY protocol on by default")
	require.False(t, c.WSTLS)
	require.Empty(t, c.WSAllowedOrigins, "browsers allowed by default")
	require.Equal(t, listen.DefaultHeaderTimeout, c.ProxyProtocolHeaderTimeout)
	require.Zero(t, c.TCPKeepAlive, "TCP keep-alive probes on by default")
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string // "" is valid
	}{
		{name: "the PROXY protocol with trusted addresses and CIDRs is valid", args: []string{"-mqtt.proxy-protocol", "-mqtt.proxy-protocol-trusted", "10.0.0.0/8, 192.168.1.7,fd00::/8"}},
		{name: "the PROXY protocol without trusted sources names the field", args: []string{"-mqtt.proxy-protocol"}, wantErr: "mqtt.proxy-protocol-trusted: required"},
		{name: "a trusted entry that is no address names the field", args: []string{"-mqtt.proxy-protocol", "-mqtt.proxy-protocol-trusted", "10.0.0.0/8,haproxy.local"}, wantErr: `mqtt.proxy-protocol-trusted: "haproxy.local"`},
		{name: "a trusted CIDR with a bad mask names the field", args: []string{"-mqtt.proxy-protocol", "-mqtt.proxy-protocol-trusted", "10.0.0.0/33"}, wantErr: "mqtt.proxy-protocol-trusted"},
		{name: "a zero header timeout names the field", args: []string{"-mqtt.proxy-protocol", "-mqtt.proxy-protocol-trusted", "10.0.0.1", "-mqtt.proxy-protocol-header-timeout", "0s"}, wantErr: "mqtt.proxy-protocol-header-timeout"},
		{name: "trusted sources with the PROXY protocol off are kept for switching it on", args: []string{"-mqtt.proxy-protocol-trusted", "10.0.0.1"}},
		{name: "origins and * are valid", args: []string{"-mqtt.ws-allowed-origins", "https://app.example.com,http://localhost:3000,*"}},
		{name: "an origin with a path names the field", args: []string{"-mqtt.ws-allowed-origins", "https://app.example.com/mqtt"}, wantErr: `mqtt.ws-allowed-origins: "https://app.example.com/mqtt"`},
		{name: "a TCP keep-alive in whole seconds is valid", args: []string{"-mqtt.tcp-keepalive", "5m"}},
		{name: "a negative TCP keep-alive names the field", args: []string{"-mqtt.tcp-keepalive", "-1s"}, wantErr: "mqtt.tcp-keepalive: -1s"},
		{name: "a TCP keep-alive under a second names the field", args: []string{"-mqtt.tcp-keepalive", "500ms"}, wantErr: "mqtt.tcp-keepalive: 500ms"},
		{name: "a TCP keep-alive in fractions of a second names the field", args: []string{"-mqtt.tcp-keepalive", "1500ms"}, wantErr: "mqtt.tcp-keepalive: 1.5s"},
		{name: "an origin without a scheme names the field", args: []string{"-mqtt.ws-allowed-origins", "app.example.com"}, wantErr: "mqtt.ws-allowed-origins"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.args...)
			err := c.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestConfigProxyParsesTheTrustedSources(t *testing.T) {
	c := parse(t, "-mqtt.proxy-protocol", "-mqtt.proxy-protocol-trusted", "10.1.2.0/23,192.168.1.7,fd00::7", "-mqtt.proxy-protocol-header-timeout", "3s")
	pp, err := c.Proxy()
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.1.2.0/23"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::7/128"),
	}, pp.Trusted)
	require.Equal(t, 3*time.Second, pp.HeaderTimeout)
}

func TestConfigEmbedsInlineUnderMQTT(t *testing.T) {
	var file struct {
		MQTT struct {
			WSAddr string        `yaml:"ws_addr"`
			Listen listen.Config `yaml:",inline"`
		} `yaml:"mqtt"`
	}
	const doc = `
mqtt:
  ws_addr: ":8083"
  proxy_protocol: true
  proxy_protocol_trusted: [10.0.0.0/8, 192.168.1.7]
  proxy_protocol_header_timeout: 2s
  ws_tls: true
  ws_allowed_origins: https://app.example.com, https://ops.example.com
  tcp_keepalive: 5m
`
	d := yaml.NewDecoder(strings.NewReader(doc))
	d.KnownFields(true)
	require.NoError(t, d.Decode(&file))
	c := file.MQTT.Listen
	require.True(t, c.ProxyProtocol)
	require.Equal(t, []string{"10.0.0.0/8", "192.168.1.7"}, []string(c.ProxyProtocolTrusted))
	require.Equal(t, 2*time.Second, c.ProxyProtocolHeaderTimeout)
	require.True(t, c.WSTLS)
	require.Equal(t, []string{"https://app.example.com", "https://ops.example.com"}, []string(c.WSAllowedOrigins))
	require.Equal(t, 5*time.Minute, c.TCPKeepAlive)
	require.NoError(t, c.Validate())
}
