package session

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// QueueFullPolicy says what Enqueue does when a session's offline queue is at
// its message or byte bound.
type QueueFullPolicy string

const (
	// DropOldest evicts the oldest queued messages until the new one fits.
	DropOldest QueueFullPolicy = "drop-oldest"
	// DropNewest refuses the new message and keeps the queue as it is.
	DropNewest QueueFullPolicy = "drop-newest"
)

// String implements flag.Value.
func (p *QueueFullPolicy) String() string { return string(*p) }

// Set implements flag.Value; Validate rejects unknown values.
func (p *QueueFullPolicy) Set(s string) error {
	*p = QueueFullPolicy(s)
	return nil
}

// RedisConfig says how to reach Redis. Two or more addresses (or Cluster)
// give a Redis Cluster client, one address a single-node client.
type RedisConfig struct {
	Addrs    config.StringList `yaml:"addrs"`
	Username string            `yaml:"username"`
	Password config.Secret     `yaml:"password"`
	DB       int               `yaml:"db"`
	TLS      bool              `yaml:"tls"`
	// TLSCAFile verifies the servers with a CA of their own instead of the
	// system roots; TLSCertFile and TLSKeyFile are a client certificate
	// for servers that require one (tls-auth-clients yes); TLSServerName
	// is the name the servers' certificates are checked against instead
	// of the address dialled (a cluster's nodes are dialled by IP).
	TLSCAFile     string `yaml:"tls_ca_file"`
	TLSCertFile   string `yaml:"tls_cert_file"`
	TLSKeyFile    string `yaml:"tls_key_file"`
	TLSServerName string `yaml:"tls_server_name"`
	Cluster       bool   `yaml:"cluster"`
	// ClusterStateReload is how often a Redis Cluster client in use reads
	// the cluster's slot map again (CLUSTER SLOTS), and so how soon it
	// follows a failover; 0 is DefaultClusterStateReload.
	ClusterStateReload time.Duration `yaml:"cluster_state_reload"`
}

// DefaultClusterStateReload is redis.cluster-state-reload's default.
// go-redis's own, 60 s, kept every process writing to a dead primary for
// up to a minute after Redis Cluster promoted its replica: a connection
// refused does not make go-redis read the slot map again.
const DefaultClusterStateReload = 2 * time.Second

// Config configures the session store and node liveness.
type Config struct {
	Redis RedisConfig `yaml:"redis"`

	// MaxQueuedMessages bounds the number of messages in one session's
	// offline queue.
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	// MaxQueuedBytes bounds the sum of the message sizes in one session's
	// offline queue.
	MaxQueuedBytes config.ByteSize `yaml:"max_queued_bytes"`
	// QueueFullPolicy says what happens at either bound.
	QueueFullPolicy QueueFullPolicy `yaml:"queue_full_policy"`

	// MaxSubscriptions bounds the subscriptions of one session (shared
	// ones included); Subscribe refuses a new one beyond it. 0: unbounded.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// MaxExpiry caps the Session Expiry Interval a client asks for,
	// 0xFFFFFFFF (never) included (Expiry).
	MaxExpiry time.Duration `yaml:"max_expiry"`
	// MQTT3Expiry is the expiry of MQTT 3.1 and 3.1.1 persistent sessions
	// (Clean Session 0), which the protocol cannot express; at most
	// MaxExpiry.
	MQTT3Expiry time.Duration `yaml:"mqtt3_expiry"`

	// HeartbeatInterval is how often RunHeartbeat refreshes the node's
	// liveness key.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// LivenessTTL is how long a node counts as alive after its last
	// heartbeat; it must exceed HeartbeatInterval.
	LivenessTTL time.Duration `yaml:"liveness_ttl"`
}

// RegisterFlags registers the flags under "redis.", "session." and "node.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Redis.Addrs = config.StringList{"127.0.0.1:6379"}
	fs.Var(&c.Redis.Addrs, "redis.addrs", "Comma-separated Redis addresses (host:port). Two or more addresses select Redis Cluster.")
	fs.StringVar(&c.Redis.Username, "redis.username", "", "Redis ACL user name.")
	fs.Var(&c.Redis.Password, "redis.password", "Redis password (prefer the environment variable; it is never printed).")
	fs.IntVar(&c.Redis.DB, "redis.db", 0, "Redis database number (must be 0 with Redis Cluster).")
	fs.BoolVar(&c.Redis.TLS, "redis.tls", false, "Connect to Redis over TLS.")
	fs.StringVar(&c.Redis.TLSCAFile, "redis.tls-ca-file", "", "PEM CA bundle to verify the Redis servers with; empty uses the system roots.")
	fs.StringVar(&c.Redis.TLSCertFile, "redis.tls-cert-file", "", "PEM client certificate, for Redis servers that require one (tls-auth-clients yes).")
	fs.StringVar(&c.Redis.TLSKeyFile, "redis.tls-key-file", "", "PEM client key for redis.tls-cert-file.")
	fs.StringVar(&c.Redis.TLSServerName, "redis.tls-server-name", "", "Name the Redis servers' certificates must carry, instead of the host dialled (Redis Cluster nodes are dialled by the addresses the cluster announces, often IPs).")
	fs.BoolVar(&c.Redis.Cluster, "redis.cluster", false, "Use the Redis Cluster protocol even with a single address (a cluster configuration endpoint).")
	fs.DurationVar(&c.Redis.ClusterStateReload, "redis.cluster-state-reload", DefaultClusterStateReload, "With Redis Cluster: how often a client in use reads the slot map again (one CLUSTER SLOTS), so how soon it writes to a replica Redis Cluster promoted after its primary died; until then the primary's slots fail.")

	fs.IntVar(&c.MaxQueuedMessages, "session.max-queued-messages", 1000, "Bound on the messages in one session's offline queue.")
	c.MaxQueuedBytes = 1 << 20
	fs.Var(&c.MaxQueuedBytes, "session.max-queued-bytes", "Bound on the bytes of the messages in one session's offline queue.")
	c.QueueFullPolicy = DropOldest
	fs.Var(&c.QueueFullPolicy, "session.queue-full-policy", "What happens to a message for a full offline queue: drop-oldest evicts the oldest queued messages, drop-newest refuses the new one.")

	fs.IntVar(&c.MaxSubscriptions, "session.max-subscriptions", 100, "Bound on the subscriptions of one session (frontend); a SUBSCRIBE filter beyond it gets SUBACK 0x97 (MQTT 5) / 0x80 (3.1.1), a filter the session already has is replaced and never counts. 0: unbounded.")
	fs.DurationVar(&c.MaxExpiry, "session.max-expiry", 7*24*time.Hour, "Longest Session Expiry Interval the frontend grants (whole seconds, at most 4294967294s); an MQTT 5 client asking more, or 0xFFFFFFFF (never), gets this, announced in CONNACK. 0: every session ends with its connection.")
	fs.DurationVar(&c.MQTT3Expiry, "session.mqtt3-expiry", 7*24*time.Hour, "Session expiry of MQTT 3.1/3.1.1 persistent sessions (Clean Session 0) after their connection ends (frontend); at most session.max-expiry.")

	fs.DurationVar(&c.HeartbeatInterval, "node.heartbeat-interval", 2*time.Second, "How often a node refreshes its liveness key in Redis.")
	fs.DurationVar(&c.LivenessTTL, "node.liveness-ttl", 10*time.Second, "How long a node counts as alive after its last heartbeat; after that other processes publish the wills of its clients.")
}

// validateTLS checks the redis.tls-* settings: that they come with
// redis.tls, in pairs, and name files that exist (their contents are read
// when the client is made, as Kafka's are).
func (c *RedisConfig) validateTLS() error {
	if !c.TLS {
		if c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSServerName != "" {
			return errors.New("redis.tls: must be true when redis.tls-ca-file, redis.tls-cert-file, redis.tls-key-file or redis.tls-server-name is set")
		}
		return nil
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("redis.tls-cert-file, redis.tls-key-file: set both or neither")
	}
	var errs []error
	for name, f := range map[string]string{"redis.tls-ca-file": c.TLSCAFile, "redis.tls-cert-file": c.TLSCertFile, "redis.tls-key-file": c.TLSKeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// tlsConfig is the TLS of redis.tls and the files of redis.tls-*; an
// error names the flag.
func (c *RedisConfig) tlsConfig() (*tls.Config, error) {
	tc, err := config.ClientTLS("redis.tls-ca-file", c.TLSCAFile, "redis.tls-cert-file / redis.tls-key-file", c.TLSCertFile, c.TLSKeyFile)
	if tc != nil {
		tc.ServerName = c.TLSServerName
	}
	return tc, err
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Redis.Addrs) == 0 {
		errs = append(errs, errors.New("redis.addrs: at least one address is required"))
	}
	if c.Redis.ClusterStateReload < 0 || c.Redis.ClusterStateReload > time.Hour {
		errs = append(errs, fmt.Errorf("redis.cluster-state-reload: %s must be between 0 and 1h", c.Redis.ClusterStateReload))
	}
	errs = append(errs, c.Redis.validateTLS())
	if c.Redis.DB < 0 {
		errs = append(errs, fmt.Errorf("redis.db: %d must not be negative", c.Redis.DB))
	}
	if c.Redis.DB != 0 && (len(c.Redis.Addrs) > 1 || c.Redis.Cluster) {
		errs = append(errs, fmt.Errorf("redis.db: %d must be 0 with Redis Cluster", c.Redis.DB))
	}
	if c.MaxQueuedMessages < 1 {
		errs = append(errs, fmt.Errorf("session.max-queued-messages: %d must be at least 1", c.MaxQueuedMessages))
	}
	if c.MaxQueuedBytes < 1 {
		errs = append(errs, fmt.Errorf("session.max-queued-bytes: %s must be at least 1", c.MaxQueuedBytes.String()))
	}
	if c.QueueFullPolicy != DropOldest && c.QueueFullPolicy != DropNewest {
		errs = append(errs, fmt.Errorf("session.queue-full-policy: %q must be %s or %s", string(c.QueueFullPolicy), DropOldest, DropNewest))
	}
	if c.MaxSubscriptions < 0 {
		errs = append(errs, fmt.Errorf("session.max-subscriptions: %d must not be negative", c.MaxSubscriptions))
	}
	if c.MaxExpiry < 0 || c.MaxExpiry > maxExpiry {
		errs = append(errs, fmt.Errorf("session.max-expiry: %s must be between 0s and %s", c.MaxExpiry, maxExpiry))
	}
	if c.MQTT3Expiry < 0 || c.MQTT3Expiry > c.MaxExpiry {
		errs = append(errs, fmt.Errorf("session.mqtt3-expiry: %s must be between 0s and session.max-expiry (%s)", c.MQTT3Expiry, c.MaxExpiry))
	}
	if c.HeartbeatInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("node.heartbeat-interval: %s must be at least 10ms", c.HeartbeatInterval))
	}
	if c.LivenessTTL <= c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("node.liveness-ttl: %s must exceed node.heartbeat-interval %s", c.LivenessTTL, c.HeartbeatInterval))
	}
	return errors.Join(errs...)
}

// NewClient builds the Redis client the configuration describes. It does no
// I/O: the client dials on first use.
func (c *RedisConfig) NewClient() redis.UniversalClient {
	opts := &redis.UniversalOptions{
		Addrs:         c.Addrs,
		Username:      c.Username,
		Password:      c.Password.Value(),
		DB:            c.DB,
		IsClusterMode: c.Cluster,
		// RESP2: every reply fleetgate reads has the same shape in both,
		// and go-redis checks for RESP3 push notifications before each
		// reply it reads, which costs the delivery path a few per cent
		// of its CPU for a feature (client-side caching, maintenance
		// notices) fleetgate does not use.
		Protocol: 2,
		// No CLIENT SETINFO at each connection: a round trip fewer, and a
		// command fewer for the Redis user (deploy/redis/users.acl;
		// Redis before 7.2 does not know it).
		DisableIdentity: true,
	}
	if c.TLS {
		tc, err := c.tlsConfig()
		if err != nil {
			// A file that is no PEM (or broke since Validate): every
			// connection fails with the reason.
			opts.Dialer = func(context.Context, string, string) (net.Conn, error) { return nil, err }
		}
		opts.TLSConfig = tc
	}
	if c.Cluster || len(c.Addrs) > 1 {
		// As NewUniversalClient would, with the slot map read again
		// every ClusterStateReload.
		co := opts.Cluster()
		co.ClusterStateReloadInterval = c.ClusterStateReload
		if co.ClusterStateReloadInterval <= 0 {
			co.ClusterStateReloadInterval = DefaultClusterStateReload
		}
		return redis.NewClusterClient(co)
	}
	return redis.NewUniversalClient(opts)
}
