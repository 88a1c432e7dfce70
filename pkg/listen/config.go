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
}

// RegisterFlags registers the flags, under "mqtt.", with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.ProxyProtocol, "mqtt.proxy-protocol", false, "Expect a PROXY protocol v1 or v2 header (HAProxy send-proxy-v2, AWS NLB proxy protocol v2) on every MQTT listener from the sources in mqtt.proxy-protocol-trusted; the client's address is then the one in the header. Such a source that sends no header is refused, as is a header from any other source; other sources may connect without one.")
	fs.Var(&c.ProxyProtocolTrusted, "mqtt.proxy-protocol-trusted", "Comma-separated IP addresses or CIDRs of the load balancers that send PROXY headers; required with mqtt.proxy-protocol.")
	fs.DurationVar(&c.ProxyProtocolHeaderTimeout, "mqtt.proxy-protocol-header-timeout", DefaultHeaderTimeout, "How long a connection from a load balancer may take to send its PROXY header before it is closed.")
	fs.BoolVar(&c.WSTLS, "mqtt.ws-tls", false, "Serve wss (TLS) on mqtt.ws-addr with the certificate of mqtt.tls-cert-file and mqtt.tls-key-file.")
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
