package kafka

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// Config is the Kafka connection and topic configuration shared by every
// fleetgate service.
type Config struct {
	Brokers           config.StringList `yaml:"brokers"`
	ClientID          string            `yaml:"client_id"`
	Topic             string            `yaml:"topic"`
	CreateTopic       bool              `yaml:"create_topic"`
	Partitions        int               `yaml:"partitions"`
	ReplicationFactor int               `yaml:"replication_factor"`
	// MinInsyncReplicas is min.insync.replicas of the topics fleetgate
	// creates; -1 derives it (TopicMinInsync).
	MinInsyncReplicas int           `yaml:"min_insync_replicas"`
	Retention         time.Duration `yaml:"retention"`
	DialTimeout       time.Duration `yaml:"dial_timeout"`
	MetadataMaxAge    time.Duration `yaml:"metadata_max_age"`
	Linger            time.Duration `yaml:"linger"`
	Compression       string        `yaml:"compression"`
	// MaxMessageBytes is the largest record batch the topic takes (its
	// max.message.bytes): no produce batch is larger, so a record too large
	// fails alone instead of taking the records batched with it along.
	MaxMessageBytes config.ByteSize `yaml:"max_message_bytes"`
	// ClientMetrics sends the clients' KIP-714 metrics to brokers that
	// subscribe to them. Off by default: fleetgate exports the same
	// figures itself, and franz-go makes a new compressor for each push
	// (4 MiB of garbage per client and push with lz4), which an idle
	// node's memory shows.
	ClientMetrics bool       `yaml:"client_metrics"`
	TLS           TLSConfig  `yaml:"tls"`
	SASL          SASLConfig `yaml:"sasl"`
}

// TLSConfig configures TLS to the brokers.
type TLSConfig struct {
	Enabled  bool   `yaml:"enabled"`
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// SASLConfig configures SASL authentication to the brokers.
type SASLConfig struct {
	Mechanism string        `yaml:"mechanism"`
	Username  string        `yaml:"username"`
	Password  config.Secret `yaml:"password"`
}

// RegisterFlags registers the flags under the "kafka." prefix.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Brokers = config.StringList{"localhost:9092"}
	fs.Var(&c.Brokers, "kafka.brokers", "Comma-separated Kafka bootstrap brokers.")
	fs.StringVar(&c.ClientID, "kafka.client-id", "fleetgate", "Kafka client.id, visible in broker logs and quotas.")
	fs.StringVar(&c.Topic, "kafka.topic", "mqtt.inbound", "Kafka topic every inbound MQTT PUBLISH is written to.")
	fs.BoolVar(&c.CreateTopic, "kafka.create-topic", true, "Create the topic at start when it does not exist.")
	fs.IntVar(&c.Partitions, "kafka.partitions", 12, "Partitions of the topic when fleetgate creates it; records are keyed by client id, so this bounds consumer parallelism.")
	fs.IntVar(&c.ReplicationFactor, "kafka.replication-factor", -1, "Replication factor when fleetgate creates the topic; -1 uses the broker default.")
	fs.IntVar(&c.MinInsyncReplicas, "kafka.min-insync-replicas", -1, "min.insync.replicas of the topics fleetgate creates: the brokers that must have a record before Kafka acknowledges it (and the device gets its PUBACK). -1: kafka.replication-factor minus one when that is 3 or more (2 with 3: one broker may fail with no loss and no refused publish), otherwise the brokers' default (Kafka's is 1).")
	fs.DurationVar(&c.Retention, "kafka.retention", 7*24*time.Hour, "retention.ms of the topic when fleetgate creates it.")
	fs.DurationVar(&c.DialTimeout, "kafka.dial-timeout", 5*time.Second, "Timeout for opening a connection to a broker.")
	fs.DurationVar(&c.MetadataMaxAge, "kafka.metadata-max-age", time.Minute, "How often every Kafka client refreshes topic metadata: partitions added to a topic are produced to and routed within about this long (Kafka's own default is 5m).")
	fs.DurationVar(&c.Linger, "kafka.linger", time.Millisecond, "How long the producer waits to fill a batch: the publishes of this long share one produce request. 0 sends each as soon as possible (lowest ack latency at low rates, more CPU per message).")
	fs.StringVar(&c.Compression, "kafka.compression", "none", "Producer compression: none, gzip, snappy, lz4 or zstd.")
	c.MaxMessageBytes = 1 << 20
	fs.Var(&c.MaxMessageBytes, "kafka.max-message-bytes", "The largest record batch the topic accepts (its max.message.bytes; Kafka's default is about 1MiB): no produce request carries a larger batch, so a record too large for it fails alone (PUBACK 0x95) and never takes the small records batched with it along. Raise it with the topic's setting.")
	fs.BoolVar(&c.ClientMetrics, "kafka.client-metrics", false, "Send the Kafka clients' own metrics to brokers that ask for them (KIP-714). Off by default: fleetgate exports them on /metrics, and each push allocates a new compression buffer.")
	fs.BoolVar(&c.TLS.Enabled, "kafka.tls.enabled", false, "Connect to the brokers over TLS.")
	fs.StringVar(&c.TLS.CAFile, "kafka.tls.ca-file", "", "PEM CA bundle to verify the brokers with; empty uses the system roots.")
	fs.StringVar(&c.TLS.CertFile, "kafka.tls.cert-file", "", "PEM client certificate, for brokers that require mutual TLS.")
	fs.StringVar(&c.TLS.KeyFile, "kafka.tls.key-file", "", "PEM client key for kafka.tls.cert-file.")
	fs.StringVar(&c.SASL.Mechanism, "kafka.sasl.mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty disables SASL.")
	fs.StringVar(&c.SASL.Username, "kafka.sasl.username", "", "SASL user name.")
	fs.Var(&c.SASL.Password, "kafka.sasl.password", "SASL password (prefer the environment variable; it is never printed).")
}

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("kafka.topic: must not be empty"))
	}
	if c.MaxMessageBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("kafka.max-message-bytes: %s must be at least 1KiB", c.MaxMessageBytes.String()))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("kafka.partitions: %d must be at least 1", c.Partitions))
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 {
		errs = append(errs, fmt.Errorf("kafka.replication-factor: %d must be -1 (broker default) or at least 1", c.ReplicationFactor))
	}
	if c.MinInsyncReplicas == 0 || c.MinInsyncReplicas < -1 {
		errs = append(errs, fmt.Errorf("kafka.min-insync-replicas: %d must be -1 (derived) or at least 1", c.MinInsyncReplicas))
	}
	if c.ReplicationFactor > 0 && c.MinInsyncReplicas > c.ReplicationFactor {
		errs = append(errs, fmt.Errorf("kafka.min-insync-replicas: %d must not exceed kafka.replication-factor %d (Kafka would refuse every record)", c.MinInsyncReplicas, c.ReplicationFactor))
	}
	if c.Retention <= 0 {
		errs = append(errs, fmt.Errorf("kafka.retention: %s must be positive", c.Retention))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("kafka.dial-timeout: %s must be positive", c.DialTimeout))
	}
	if c.MetadataMaxAge < time.Second {
		errs = append(errs, fmt.Errorf("kafka.metadata-max-age: %s must be at least 1s", c.MetadataMaxAge))
	}
	if c.Linger < 0 {
		errs = append(errs, fmt.Errorf("kafka.linger: %s must not be negative", c.Linger))
	}
	if _, err := compressionCodec(c.Compression); err != nil {
		errs = append(errs, fmt.Errorf("kafka.compression: %w", err))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("kafka.tls.cert-file, kafka.tls.key-file: set both or neither"))
	}
	if !c.TLS.Enabled && (c.TLS.CAFile != "" || c.TLS.CertFile != "") {
		errs = append(errs, errors.New("kafka.tls.enabled: must be true when kafka.tls.ca-file or kafka.tls.cert-file is set"))
	}
	for name, f := range map[string]string{"kafka.tls.ca-file": c.TLS.CAFile, "kafka.tls.cert-file": c.TLS.CertFile, "kafka.tls.key-file": c.TLS.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" {
			errs = append(errs, errors.New("kafka.sasl.mechanism: must be set when kafka.sasl.username is"))
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASL.Username == "" {
			errs = append(errs, fmt.Errorf("kafka.sasl.username: required with kafka.sasl.mechanism %s", c.SASL.Mechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("kafka.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASL.Mechanism))
	}
	return errors.Join(errs...)
}

// TopicMinInsync returns the min.insync.replicas to create topics with, or
// 0 to leave the brokers' default: kafka.min-insync-replicas when set,
// else the replication factor minus one when that is 3 or more.
func (c *Config) TopicMinInsync() int {
	switch {
	case c.MinInsyncReplicas > 0:
		return c.MinInsyncReplicas
	case c.ReplicationFactor >= 3:
		return c.ReplicationFactor - 1
	}
	return 0
}
