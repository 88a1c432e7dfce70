package frontend

import (
	"errors"
	"flag"
	"fmt"
	"github.com/fleetgate/fleetgate/pkg/gcheadroom"
	"github.com/fleetgate/fleetgate/pkg/procs"
	"os"
	"slices"
	"time"

	"github.com/fleetgate/fleetgate/pkg/acl"
	"github.com/fleetgate/fleetgate/pkg/auth"
	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/delivery"
	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/ingest"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/listen"
	"github.com/fleetgate/fleetgate/pkg/retained"
	"github.com/fleetgate/fleetgate/pkg/session"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Config is the whole configuration of a frontend node.
type Config struct {
	Node   NodeConfig    `yaml:"node"`
	MQTT   MQTTConfig    `yaml:"mqtt"`
	Auth   auth.Config   `yaml:"auth"`
	Authz  AuthzConfig   `yaml:"authz"`
	Ingest ingest.Config `yaml:"ingest"`
	// Retained bounds the retained messages devices leave.
	Retained retained.QuotaConfig `yaml:"retained"`
	Kafka    kafka.Config         `yaml:"kafka"`
	// Session holds Redis, offline queue bounds and node liveness.
	Session       session.Config          `yaml:"session"`
	Subscriptions SubscriptionsConfig     `yaml:"subscriptions"`
	Delivery      delivery.Config         `yaml:"delivery"`
	Events        events.Config           `yaml:"events"`
	Log           telemetry.LogConfig     `yaml:"log"`
	GC            gcheadroom.Config       `yaml:"gc"`
	Procs         procs.Config            `yaml:"procs"`
	HTTP          telemetry.ServerConfig  `yaml:"http"`
	Tracing       telemetry.TracingConfig `yaml:"tracing"`
	Shutdown      ShutdownConfig          `yaml:"shutdown"`
}

// NodeConfig identifies the node.
type NodeConfig struct {
	ID string `yaml:"id"`
}

// Values of mqtt.serve.
const (
	// ServeLean: fleetgate serves each connection with mochi's exported
	// API (serve.go).
	ServeLean = "lean"
	// ServeMochi: mochi's EstablishConnection serves each connection.
	ServeMochi = "mochi"
)

// SubscriptionsConfig is the change log's configuration and what a SUBACK
// and an UNSUBACK wait for of the Redis replicas (session.Barrier).
type SubscriptionsConfig struct {
	subscriptions.Config `yaml:",inline"`
	// RedisReplicaAcks is how many replicas of each primary must hold a
	// subscription change before it is answered; 0 does not wait.
	RedisReplicaAcks int `yaml:"redis_replica_acks"`
	// RedisReplicaTimeout bounds one wait (Redis WAIT's timeout).
	RedisReplicaTimeout time.Duration `yaml:"redis_replica_timeout"`
}

// RegisterFlags registers the "subscriptions." flags.
func (c *SubscriptionsConfig) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	fs.IntVar(&c.RedisReplicaAcks, "subscriptions.redis-replica-acks", 1, "Replicas of each Redis primary that must hold a SUBSCRIBE's or UNSUBSCRIBE's session writes before its SUBACK / UNSUBACK goes out (Redis WAIT, concurrent subscribers sharing one round; it runs beside the change log's Kafka write), and the session a CONNECT gave an owner (a new session of an authenticated identity) before its CONNACK: a replica promoted after its primary died then has every subscription a device was told it has, and knows whose each client id is. A primary with fewer replicas connected waits for those it has, one with none (a single Redis) for none; a wait that gets fewer acknowledgements within subscriptions.redis-replica-timeout answers anyway and is counted (result short). When the primaries changed between the write and the wait (a failover), the filters get SUBACK 0x80 (a CONNECT Server Unavailable) and the device may try again. 0 does not wait (docs/operations.md, Redis failover).")
	fs.DurationVar(&c.RedisReplicaTimeout, "subscriptions.redis-replica-timeout", time.Second, "Longest a SUBACK, UNSUBACK or new session's CONNACK waits for subscriptions.redis-replica-acks replicas to acknowledge (a replica stalled but still connected); past it the answer goes out anyway, counted as short.")
}

// Validate names the bad field.
func (c *SubscriptionsConfig) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.RedisReplicaAcks < 0 || c.RedisReplicaAcks > 16 {
		errs = append(errs, fmt.Errorf("subscriptions.redis-replica-acks: %d must be between 0 and 16", c.RedisReplicaAcks))
	}
	if c.RedisReplicaTimeout < 10*time.Millisecond || c.RedisReplicaTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("subscriptions.redis-replica-timeout: %s must be between 10ms and 1m", c.RedisReplicaTimeout))
	}
	return errors.Join(errs...)
}

// ShutdownConfig configures the drain on SIGTERM.
type ShutdownConfig struct {
	Timeout time.Duration `yaml:"timeout"`
}

// MQTTConfig configures the listeners and protocol limits.
type MQTTConfig struct {
	TCPAddr         string `yaml:"tcp_addr"`
	TLSAddr         string `yaml:"tls_addr"`
	TLSCertFile     string `yaml:"tls_cert_file"`
	TLSKeyFile      string `yaml:"tls_key_file"`
	TLSClientCAFile string `yaml:"tls_client_ca_file"`
	// TLSSessionTicketKeysFile holds the keys every frontend encrypts and
	// decrypts TLS session tickets with (ticketKeys), so that a device
	// resumes its TLS session on any frontend.
	TLSSessionTicketKeysFile string          `yaml:"tls_session_ticket_keys_file"`
	WSAddr                   string          `yaml:"ws_addr"`
	ConnectTimeout           time.Duration   `yaml:"connect_timeout"`
	MaxPacketSize            config.ByteSize `yaml:"max_packet_size"`
	ReceiveMaximum           int             `yaml:"receive_maximum"`
	// TopicAliasMaximum is the Topic Alias Maximum announced to MQTT 5
	// clients; 0 announces none.
	TopicAliasMaximum int `yaml:"topic_alias_maximum"`
	ReadBufferSize    int `yaml:"read_buffer_size"`
	WriteBufferSize   int `yaml:"write_buffer_size"`
	WritesPending     int `yaml:"max_client_writes_pending"`
	// Serve chooses who serves each connection: ServeLean (fleetgate, with
	// mochi's exported API; docs/connection-memory.md) or ServeMochi
	// (mochi's EstablishConnection), the fallback.
	Serve string `yaml:"serve"`
	// Admission holds the connection limits and keep-alive bounds.
	Admission AdmissionConfig `yaml:",inline"`
	// Topics bounds topic names and filters.
	Topics TopicLimitsConfig `yaml:",inline"`
	// Listen holds the PROXY protocol and WebSocket settings.
	Listen listen.Config `yaml:",inline"`
}

// AuthzConfig configures authorization and the reloading of the files
// behind authentication and authorization.
type AuthzConfig struct {
	// RulesFile is the YAML rules file (pkg/acl); what no rule allows is
	// denied. Empty: only with AllowAll, or with anonymous clients
	// accepted (auth.allow-anonymous), which opens every topic anyway.
	RulesFile string `yaml:"rules_file"`
	// AllowAll lets every client use every topic without a rules file, on
	// purpose.
	AllowAll bool `yaml:"allow_all"`
	// ReloadInterval is how often the password file, JWT keys and rules
	// file are checked for changes (SIGHUP reloads at once); 0: only on
	// SIGHUP.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// DisconnectAtExpiry closes a connection when its credential (a
	// token's exp, a certificate's NotAfter) expires.
	DisconnectAtExpiry bool `yaml:"disconnect_at_expiry"`
}

// RegisterFlags registers every frontend flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&c.Node.ID, "node.id", host, "Identifier of this node, written into every record (fg.node); defaults to the host name.")
	fs.DurationVar(&c.Shutdown.Timeout, "shutdown.timeout", 30*time.Second, "On SIGTERM, how long to wait for accepted publishes to reach Kafka and be acknowledged before closing connections and exiting.")
	c.MQTT.RegisterFlags(fs)
	c.Auth.RegisterFlags(fs)
	c.Authz.RegisterFlags(fs)
	c.Ingest.RegisterFlags(fs)
	c.Retained.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	c.Session.RegisterFlags(fs)
	c.Subscriptions.RegisterFlags(fs)
	c.Delivery.RegisterFlags(fs)
	c.Events.RegisterFlags(fs)
	c.Log.RegisterFlags(fs)
	c.GC.RegisterFlags(fs)
	c.Procs.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs, ":9464")
	c.Tracing.RegisterFlags(fs)
}

// RegisterFlags registers the "mqtt." flags.
func (c *MQTTConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.TCPAddr, "mqtt.tcp-addr", ":1883", "Address of the plain TCP MQTT listener; empty disables it.")
	fs.StringVar(&c.TLSAddr, "mqtt.tls-addr", ":8883", "Address of the TLS MQTT listener, enabled when mqtt.tls-cert-file and mqtt.tls-key-file are set.")
	fs.StringVar(&c.TLSCertFile, "mqtt.tls-cert-file", "", "PEM certificate (chain) of the TLS listener.")
	fs.StringVar(&c.TLSKeyFile, "mqtt.tls-key-file", "", "PEM private key of the TLS listener.")
	fs.StringVar(&c.TLSClientCAFile, "mqtt.tls-client-ca-file", "", "PEM CA bundle; when set, TLS clients must present a certificate signed by it (mutual TLS).")
	fs.StringVar(&c.TLSSessionTicketKeysFile, "mqtt.tls-session-ticket-keys-file", "", "File of TLS session ticket keys shared by every frontend (one per line, 64 hex characters: openssl rand -hex 32; the first encrypts, all decrypt), so that a device reconnecting to any frontend resumes its TLS session instead of a full handshake. Reloaded on SIGHUP and on change. Empty: each frontend keeps keys of its own (devices resume only on the node that issued their ticket).")
	fs.StringVar(&c.WSAddr, "mqtt.ws-addr", "", "Address of the WebSocket MQTT listener (path /); empty disables it.")
	fs.DurationVar(&c.ConnectTimeout, "mqtt.connect-timeout", 10*time.Second, "Time a new connection has to send its CONNECT packet before it is closed.")
	c.MaxPacketSize = 256 << 10
	fs.Var(&c.MaxPacketSize, "mqtt.max-packet-size", "Largest MQTT packet accepted; larger ones get DISCONNECT 0x95 (MQTT 5) or a closed connection. Must fit in a Kafka record.")
	fs.IntVar(&c.ReceiveMaximum, "mqtt.receive-maximum", 256, "Receive Maximum announced to MQTT 5 clients: QoS 1/2 publishes a client may have awaiting Kafka (a QoS 2 one until its PUBREL); one more gets DISCONNECT 0x93. MQTT 3.1.1 clients are held to it by not reading their socket.")
	fs.IntVar(&c.TopicAliasMaximum, "mqtt.topic-alias-maximum", 10, "Topic Alias Maximum announced to MQTT 5 clients: the inbound topic aliases a connection may set, each holding a topic name in memory. A PUBLISH with alias 0 or above it gets DISCONNECT 0x94; 0 allows none.")
	c.Admission.RegisterFlags(fs)
	fs.IntVar(&c.ReadBufferSize, "mqtt.read-buffer-size", 512, "Read buffer of a plain-TCP connection, bytes: lent from a pool while it holds bytes read and not yet handled, so a connection that waits for its next packet holds none (TLS and WebSocket connections buffer in their own layers and use none; a packet larger than it is read straight into its own buffer). 512 measured the same QoS 1 throughput as 1024 with 64-byte and 1 KiB payloads (docs/connection-memory.md).")
	fs.IntVar(&c.WriteBufferSize, "mqtt.write-buffer-size", 1024, "Per-connection write buffer, bytes.")
	c.Topics.RegisterFlags(fs)
	c.Listen.RegisterFlags(fs)
	fs.IntVar(&c.WritesPending, "mqtt.max-client-writes-pending", 64, "Outbound packets mochi may queue per connection; each slot costs 8 bytes per connection. With mqtt.serve=lean nothing is queued there and the queue has one slot.")
	fs.StringVar(&c.Serve, "mqtt.serve", ServeLean, "Who serves each MQTT connection: \"lean\" (fleetgate, with mochi's exported API: one goroutine per idle connection and no per-second sweeps of mochi's client map; docs/connection-memory.md) or \"mochi\" (mochi's own EstablishConnection, the fallback). mochi decodes and processes every packet either way.")
}

// RegisterFlags registers the "authz." flags.
func (c *AuthzConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.RulesFile, "authz.rules-file", "", "YAML rules file of what each identity may publish and subscribe to (docs/authorization.md; deploy/auth/rules.yaml is an example); what no rule allows is denied. Required when clients authenticate, unless authz.allow-all=true.")
	fs.BoolVar(&c.AllowAll, "authz.allow-all", false, "Without authz.rules-file, let every client publish and subscribe to every topic, on purpose: any authenticated device may then read every other device's messages. Without either, a frontend whose clients authenticate refuses to start. (With auth.allow-anonymous=true and no rules file every topic is open anyway: anyone may connect.)")
	fs.DurationVar(&c.ReloadInterval, "authz.reload-interval", 10*time.Second, "How often the password file, JWT key files and rules file are checked for changes and reloaded (SIGHUP reloads at once); 0 reloads only on SIGHUP. A file that fails to load keeps the previous contents in force.")
	fs.BoolVar(&c.DisconnectAtExpiry, "authz.disconnect-at-expiry", true, "Close a connection when its credential expires (a JWT's exp, a client certificate's NotAfter); MQTT 5 gets DISCONNECT 0xA0.")
}

// Validate checks the whole configuration; the error names each bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.Node.ID == "" {
		errs = append(errs, errors.New("node.id: must not be empty"))
	}
	if c.Shutdown.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown.timeout: %s must be positive", c.Shutdown.Timeout))
	}
	m := &c.MQTT
	if m.TCPAddr == "" && m.WSAddr == "" && !m.TLSEnabled() {
		errs = append(errs, errors.New("mqtt.tcp-addr: no listener enabled (set mqtt.tcp-addr, mqtt.ws-addr or the TLS certificate and key)"))
	}
	if (m.TLSCertFile == "") != (m.TLSKeyFile == "") {
		errs = append(errs, errors.New("mqtt.tls-cert-file, mqtt.tls-key-file: set both or neither"))
	}
	if m.TLSSessionTicketKeysFile != "" && !m.TLSEnabled() {
		errs = append(errs, errors.New("mqtt.tls-session-ticket-keys-file: needs mqtt.tls-cert-file and mqtt.tls-key-file"))
	}
	if m.TLSClientCAFile != "" && !m.TLSEnabled() {
		errs = append(errs, errors.New("mqtt.tls-client-ca-file: needs mqtt.tls-cert-file and mqtt.tls-key-file"))
	}
	if m.TLSEnabled() && m.TLSAddr == "" {
		errs = append(errs, errors.New("mqtt.tls-addr: must be set when a TLS certificate is configured"))
	}
	for name, f := range map[string]string{"mqtt.tls-cert-file": m.TLSCertFile, "mqtt.tls-key-file": m.TLSKeyFile, "mqtt.tls-client-ca-file": m.TLSClientCAFile, "mqtt.tls-session-ticket-keys-file": m.TLSSessionTicketKeysFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if m.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("mqtt.connect-timeout: %s must be positive", m.ConnectTimeout))
	}
	if m.MaxPacketSize < 1024 || m.MaxPacketSize > 64<<20 {
		errs = append(errs, fmt.Errorf("mqtt.max-packet-size: %s must be between 1KiB and 64MiB", m.MaxPacketSize.String()))
	}
	if int64(m.MaxPacketSize) > int64(c.Ingest.MaxUnackedBytes) {
		errs = append(errs, fmt.Errorf("mqtt.max-packet-size: %s must not exceed ingest.max-unacked-bytes (%s)", m.MaxPacketSize.String(), c.Ingest.MaxUnackedBytes.String()))
	}
	if m.ReceiveMaximum < 1 || m.ReceiveMaximum > 65535 {
		errs = append(errs, fmt.Errorf("mqtt.receive-maximum: %d must be between 1 and 65535", m.ReceiveMaximum))
	}
	if m.TopicAliasMaximum < 0 || m.TopicAliasMaximum > 65535 {
		errs = append(errs, fmt.Errorf("mqtt.topic-alias-maximum: %d must be between 0 and 65535", m.TopicAliasMaximum))
	}
	errs = append(errs, m.Admission.Validate())
	if m.ReadBufferSize < 64 {
		errs = append(errs, fmt.Errorf("mqtt.read-buffer-size: %d must be at least 64", m.ReadBufferSize))
	}
	if m.WriteBufferSize < 64 {
		errs = append(errs, fmt.Errorf("mqtt.write-buffer-size: %d must be at least 64", m.WriteBufferSize))
	}
	if m.WritesPending < 1 {
		errs = append(errs, fmt.Errorf("mqtt.max-client-writes-pending: %d must be at least 1", m.WritesPending))
	}
	if m.Serve != ServeLean && m.Serve != ServeMochi {
		errs = append(errs, fmt.Errorf("mqtt.serve: %q must be %q or %q", m.Serve, ServeLean, ServeMochi))
	}
	errs = append(errs, m.Topics.Validate())
	errs = append(errs, m.Listen.Validate())
	if m.Listen.WSTLS && !m.TLSEnabled() {
		errs = append(errs, errors.New("mqtt.ws-tls: needs mqtt.tls-cert-file and mqtt.tls-key-file"))
	}
	if m.Listen.WSTLS && m.WSAddr == "" {
		errs = append(errs, errors.New("mqtt.ws-tls: needs mqtt.ws-addr"))
	}
	// Without auth.methods, every method whose credentials are set is
	// used: client certificates when the TLS listener verifies them.
	c.Auth.Resolve(m.TLSClientCAFile != "")
	c.Auth.Cert.CAFile = m.TLSClientCAFile
	if slices.Contains(c.Auth.Methods, auth.SourceCert) && m.TLSClientCAFile == "" {
		errs = append(errs, errors.New("auth.methods: cert needs mqtt.tls-client-ca-file, the CA that signs the client certificates"))
	}
	if err := c.Auth.Validate(); err == nil {
		// Loaded here too, so that -config.verify checks the password
		// file and the keys, not only that they exist.
		if chain, err := auth.New(c.Auth); err == nil {
			if err := chain.Load(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if p := c.Authz.RulesFile; p != "" {
		// Parsed here too, so that -config.verify checks the rules.
		if _, err := acl.ReadRules(p); err != nil {
			errs = append(errs, fmt.Errorf("authz.rules-file: %w", err))
		}
	}
	switch {
	case c.Authz.RulesFile != "" && c.Authz.AllowAll:
		errs = append(errs, errors.New("authz.allow-all: set together with authz.rules-file; with a rules file what no rule allows is denied, so drop one of them"))
	case c.Authz.RulesFile == "" && !c.Authz.AllowAll && !c.Auth.AllowAnonymous:
		errs = append(errs, errors.New("authz.rules-file: no rules file, so every authenticated client could publish and subscribe to every topic, every other device's included; set authz.rules-file (deploy/auth/rules.yaml confines each device to devices/<its identity>/), or authz.allow-all=true to open every topic on purpose"))
	}
	if c.Authz.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("authz.reload-interval: %s must not be negative", c.Authz.ReloadInterval))
	}
	errs = append(errs, c.Auth.Validate(), c.Ingest.Validate(), c.Retained.Validate(), c.Kafka.Validate(), c.Session.Validate(), c.Subscriptions.Validate(),
		c.Delivery.Validate(), c.Events.Validate(), c.Log.Validate(), c.GC.Validate(), c.Procs.Validate(), c.Tracing.Validate())
	return errors.Join(errs...)
}

// TLSEnabled reports whether the TLS listener is configured.
func (c *MQTTConfig) TLSEnabled() bool { return c.TLSCertFile != "" && c.TLSKeyFile != "" }
