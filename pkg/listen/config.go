package listen

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// Config holds the listener settings that are not addresses or
// certificates (those stay with the frontend's mqtt.* settings). Embed it
// in the frontend's MQTT configuration with `yaml:",inline"`: its YAML keys
// and flags are under "mqtt".
type Config struct {
	// ProxyProtocol expects a PROXY header on every MQTT listener from the
	// sources in ProxyProtocolTrusted.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// ProxyProtocolTrusted are the load balancers: IP addresses or CIDRs.
	ProxyProtocolTrusted config.StringList `yaml:"proxy_protocol_trusted"`
	// ProxyProtocolHeaderTimeout bounds the wait for the header.
	ProxyProtocolHeaderTimeout time.Duration `yaml:"proxy_protocol_header_timeout"`
	// WSTLS serves wss on the WebSocket listener with the TLS listener's
	// certificate.
	WSTLS bool `yaml:"ws_tls"`
	// WSAllowedOrigins are the browser Origins the WebSocket listener
	// accepts; "*" accepts every one.
	WSAllowedOrigins config.StringList `yaml:"ws_allowed_origins"`
	// TCPKeepAlive is the idle time before TCP keep-alive probes on the
	// MQTT listeners' connections; 0: none (WithTCPKeepAlive).
	TCPKeepAlive time.Duration `yaml:"tcp_keepalive"`
}

// RegisterFlags registers the flags, under "mqtt.", with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.ProxyProtocol, "mqtt.proxy-protocol", false, "Expect a PROXY protocol v1 or v2 header (HAProxy send-proxy-v2, AWS NLB proxy protocol v2) on every MQTT listener from the sources in mqtt.proxy-protocol-trusted; the client's address is then the one in the header. Such a source that sends no header is refused, as is a header from any other source; other sources may connect without one.")
	fs.Var(&c.ProxyProtocolTrusted, "mqtt.proxy-protocol-trusted", "Comma-separated IP addresses or CIDRs of the load balancers that send PROXY headers; required with mqtt.proxy-protocol.")
	fs.DurationVar(&c.ProxyProtocolHeaderTimeout, "mqtt.proxy-protocol-header-timeout", DefaultHeaderTimeout, "How long a connection from a load balancer may take to send its PROXY header before it is closed.")
	fs.BoolVar(&c.WSTLS, "mqtt.ws-tls", false, "Serve wss (TLS) on mqtt.ws-addr with the certificate of mqtt.tls-cert-file and mqtt.tls-key-file.")
	fs.DurationVar(&c.TCPKeepAlive, "mqtt.tcp-keepalive", 0, "TCP keep-alive on MQTT connections: after this long without traffic the kernel probes the peer, then again each period, and closes the connection after 3 unanswered probes. 0 (default): no probes; dead connections are found by MQTT's keep-alive and mqtt.idle-timeout, and idle devices are not woken by the broker. Set it (e.g. 5m) where NAT or firewalls drop idle flows before the devices' own keep-alive.")
	fs.Var(&c.WSAllowedOrigins, "mqtt.ws-allowed-origins", "Comma-separated browser Origins (scheme://host[:port]) that may open WebSocket connections; * allows every origin. Clients that send no Origin (devices) are always allowed; any other Origin gets HTTP 403.")
}

// Validate checks the settings; the error names each bad field. Whether
// mqtt.ws-tls has a certificate is for the frontend to check: the
// certificate is its setting.
func (c *Config) Validate() error {
	var errs []error
	if c.ProxyProtocol && len(c.ProxyProtocolTrusted) == 0 {
		errs = append(errs, errors.New("mqtt.proxy-protocol-trusted: required when mqtt.proxy-protocol is on (the load balancers' addresses or CIDRs)"))
	}
	if _, err := ParseTrusted(c.ProxyProtocolTrusted); err != nil {
		errs = append(errs, fmt.Errorf("mqtt.proxy-protocol-trusted: %w", err))
	}
	if c.ProxyProtocol && c.ProxyProtocolHeaderTimeout <= 0 {
		errs = append(errs, fmt.Errorf("mqtt.proxy-protocol-header-timeout: %s must be positive", c.ProxyProtocolHeaderTimeout))
	}
	if c.TCPKeepAlive < 0 || (c.TCPKeepAlive > 0 && (c.TCPKeepAlive < time.Second || c.TCPKeepAlive%time.Second != 0)) {
		// The kernel counts keep-alive times in whole seconds.
		errs = append(errs, fmt.Errorf("mqtt.tcp-keepalive: %s must be 0 (off) or whole seconds, at least 1s", c.TCPKeepAlive))
	}
	for _, o := range c.WSAllowedOrigins {
		if o == AnyOrigin {
			continue
		}
		if _, err := normaliseOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("mqtt.ws-allowed-origins: %q: %w (or * for every origin)", o, err))
		}
	}
	return errors.Join(errs...)
}

// KeepAlive returns the option for mqtt.tcp-keepalive.
func (c *Config) KeepAlive() Option { return WithTCPKeepAlive(c.TCPKeepAlive) }

// Proxy returns the PROXY protocol setting for WithProxyProtocol: nil when
// mqtt.proxy-protocol is off.
func (c *Config) Proxy() (*ProxyProtocol, error) {
	if !c.ProxyProtocol {
		return nil, nil
	}
	trusted, err := ParseTrusted(c.ProxyProtocolTrusted)
	if err != nil {
		return nil, fmt.Errorf("mqtt.proxy-protocol-trusted: %w", err)
	}
	return &ProxyProtocol{Trusted: trusted, HeaderTimeout: c.ProxyProtocolHeaderTimeout}, nil
}
