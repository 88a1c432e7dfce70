package frontend

import (
	"errors"
	"flag"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/fleetgate/fleetgate/pkg/procs"
)

// Admission defaults (docs/limits.md explains each choice).
const (
	// DefaultMaxClients bounds the MQTT connections of a node: at about
	// 28 KB per idle connection (docs/benchmarks.md) 100,000 take some
	// 3 GB, and a node needs a file descriptor for each.
	DefaultMaxClients = 100_000
	// ConnectRatePerCore is the default mqtt.connect-rate per core
	// (GOMAXPROCS): 10,000/s on 2 cores, about mosquitto's rate on the
	// same machine and twice what a 2-core node completes today
	// (docs/benchmarks.md: 4,900–5,400 CONNECTs/s), so the default never
	// slows a storm the node could keep up with; it stops one that comes
	// faster than any node could answer within mqtt.connect-timeout.
	ConnectRatePerCore = 5000
	// ConnectBurstSeconds is the default mqtt.connect-burst in seconds of
	// the rate: 10,000 on 2 cores, so a reconnect storm of 10,000 devices
	// is let in at once.
	ConnectBurstSeconds = 1
	// DefaultMaxKeepAlive is AWS IoT Core's maximum keep-alive: long
	// enough for a battery-powered device on a metered link, short enough
	// that a half-open connection is found within 30 minutes.
	DefaultMaxKeepAlive = 1200 * time.Second
	// DefaultIdleTimeout is 1.5 × DefaultMaxKeepAlive: an MQTT 5 client
	// that keeps the Server Keep Alive it was given never reaches it.
	DefaultIdleTimeout = 1800 * time.Second
)

// Reasons a CONNECT is refused by admission, the "reason" label of
// fleetgate_frontend_connects_refused.
const reasonMaxClients = "max_clients"

// AdmissionConfig bounds what one node takes in: how many MQTT
// connections, how fast new ones are accepted, and how long a connection
// may stay silent. It sits inline in MQTTConfig: keys and flags are under
// "mqtt".
type AdmissionConfig struct {
	// MaxClients bounds the connections between CONNECT and their end;
	// one more gets CONNACK 0x89 / 0x03. 0: unbounded.
	MaxClients int64 `yaml:"max_clients"`
	// ConnectRate is the number of new connections accepted per second
	// per node, ConnectBurst how many may be accepted at once; beyond them
	// the listeners stop calling Accept. 0: unpaced.
	ConnectRate  float64 `yaml:"connect_rate"`
	ConnectBurst int     `yaml:"connect_burst"`
	// MaxKeepAlive is the longest keep-alive an MQTT 5 client may use: one
	// that asks more, or none (0), is given this one as the CONNACK's
	// Server Keep Alive. 0: the client's keep-alive stands.
	MaxKeepAlive time.Duration `yaml:"max_keepalive"`
	// IdleTimeout is the longest any connection may go without sending a
	// packet, whatever keep-alive it asked for (0 or more than IdleTimeout
	// / 1.5): it closes silent MQTT 3.1.1 connections, which cannot be told
	// a Server Keep Alive. 0: none.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// RegisterFlags registers the admission flags, under "mqtt.".
func (c *AdmissionConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.Int64Var(&c.MaxClients, "mqtt.max-clients", DefaultMaxClients, "Maximum MQTT connections on this node, counted from CONNECT to the end of the connection; one more gets CONNACK 0x89 (Server busy, MQTT 5) or 0x03 (Server unavailable, 3.1.1) before authentication or any session work. 0: unlimited.")
	perSecond := ConnectRatePerCore * procs.Started()
	fs.Float64Var(&c.ConnectRate, "mqtt.connect-rate", float64(perSecond), "New connections accepted per second on this node, over all listeners (a token bucket of mqtt.connect-burst); beyond it the listeners stop accepting and new connections wait in the kernel's listen backlog. Default: 5,000 per core (GOMAXPROCS). 0: unlimited.")
	fs.IntVar(&c.ConnectBurst, "mqtt.connect-burst", ConnectBurstSeconds*perSecond, "Connections accepted at once before mqtt.connect-rate paces them. Default: 1 second of the default rate.")
	fs.DurationVar(&c.MaxKeepAlive, "mqtt.max-keepalive", DefaultMaxKeepAlive, "Longest keep-alive an MQTT 5 client may use (whole seconds, at most 65535s): one asking more, or 0, gets this value as the CONNACK's Server Keep Alive and is held to it (closed after 1.5 times it without a packet: DISCONNECT 0x8D). 0: the client's keep-alive stands.")
	fs.DurationVar(&c.IdleTimeout, "mqtt.idle-timeout", DefaultIdleTimeout, "Longest any connection may go without sending a packet, whatever keep-alive it asked for (0, or more than this / 1.5): closes silent MQTT 3.1.1 connections, which cannot be told a Server Keep Alive (MQTT 5 gets DISCONNECT 0x8D). At least 1.5 × mqtt.max-keepalive. 0: none.")
}

// Validate checks the settings; the error names each bad field.
func (c *AdmissionConfig) Validate() error {
	var errs []error
	if c.MaxClients < 0 {
		errs = append(errs, fmt.Errorf("mqtt.max-clients: %d must not be negative (0: unlimited)", c.MaxClients))
	}
	if c.ConnectRate < 0 {
		errs = append(errs, fmt.Errorf("mqtt.connect-rate: %g must not be negative (0: unlimited)", c.ConnectRate))
	}
	if c.ConnectRate > 0 && c.ConnectBurst < 1 {
		errs = append(errs, fmt.Errorf("mqtt.connect-burst: %d must be at least 1 when mqtt.connect-rate is set", c.ConnectBurst))
	}
	if k := c.MaxKeepAlive; k < 0 || k > 65535*time.Second || k%time.Second != 0 {
		errs = append(errs, fmt.Errorf("mqtt.max-keepalive: %s must be whole seconds between 0 and 65535s", k))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("mqtt.idle-timeout: %s must not be negative (0: none)", c.IdleTimeout))
	}
	if c.IdleTimeout > 0 && c.IdleTimeout < c.MaxKeepAlive*3/2 {
		// An MQTT 5 client keeping the Server Keep Alive it was told
		// would be closed before its keep-alive expired [MQTT-3.1.2-22].
		errs = append(errs, fmt.Errorf("mqtt.idle-timeout: %s must be at least 1.5 × mqtt.max-keepalive (%s)", c.IdleTimeout, c.MaxKeepAlive*3/2))
	}
	return errors.Join(errs...)
}

// limiter is the node's token bucket of new connections, shared by its
// listeners; nil when mqtt.connect-rate is 0.
func (c *AdmissionConfig) limiter() *rate.Limiter {
	if c.ConnectRate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(c.ConnectRate), c.ConnectBurst)
}

// admit counts a CONNECT against mqtt.max-clients and, within it, caps its
// keep-alive at mqtt.max-keepalive. It runs in the connection hook's
// OnConnect: after mochi read and checked the CONNECT, before
// authentication, session takeover and the session store. A refused
// CONNECT gets its CONNACK here; the returned error ends the connection.
// The count is released by establish when the connection ends.
func (s *Server) admit(cl *mqtt.Client, c *conn) error {
	if max := s.cfg.MQTT.Admission.MaxClients; max > 0 {
		if s.admitted.Add(1) > max {
			s.admitted.Add(-1)
			return s.refuseConnect(cl, reasonMaxClients)
		}
		c.admitted = true
	}
	s.capKeepAlive(cl)
	c.oddKeepAlive = cl.State.Keepalive%2 == 1
	return nil
}

// refuseConnect answers a CONNECT the node has no room for with CONNACK
// 0x89 Server busy, "try again later" (MQTT 5, 3.2.2.2): the node, not
// the client, is over a limit, and another node behind the load balancer
// may take it (0x97 Quota exceeded would blame the client). MQTT 3.1.1 has
// 0x03 Server unavailable (3.2.2.3) for it.
func (s *Server) refuseConnect(cl *mqtt.Client, reason string) error {
	code := packets.ErrServerBusy
	if cl.Properties.ProtocolVersion < 5 {
		code = packets.ErrServerUnavailable // mochi writes it as 0x03
	}
	s.metrics.connectRefused(reason)
	s.log.Info("connect refused", "client_id", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener, "reason", reason)
	if err := s.mochi.SendConnack(cl, code, false, nil); err != nil {
		return fmt.Errorf("refusing connect: %w", err)
	}
	return packets.ErrServerBusy
}

// capKeepAlive gives an MQTT 5 client that asked for no keep-alive, or a
// longer one than mqtt.max-keepalive, the maximum as its Server Keep Alive:
// mochi announces it in CONNACK when State.ServerKeepalive is set, the
// client must use it [MQTT-3.1.2-21] [MQTT-3.2.2-21], and mochi's read
// deadline, set right after OnConnect, holds the client to 1.5 times it
// [MQTT-3.1.2-22]. MQTT 3.1.1 cannot be told: mqtt.idle-timeout bounds
// those connections (conn.SetDeadline).
func (s *Server) capKeepAlive(cl *mqtt.Client) {
	max := uint16(s.cfg.MQTT.Admission.MaxKeepAlive / time.Second)
	if max == 0 || cl.Properties.ProtocolVersion < 5 {
		return
	}
	if ka := cl.State.Keepalive; ka == 0 || ka > max {
		cl.State.Keepalive = max
		cl.State.ServerKeepalive = true
	}
}
