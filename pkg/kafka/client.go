package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kotel"
	"github.com/twmb/franz-go/plugin/kslog"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Telemetry carries the providers the Kafka client reports to.
type Telemetry struct {
	Meter  metric.MeterProvider
	Tracer trace.TracerProvider
	// Hot, when set, takes the per-request histograms (the process's
	// telemetry.Metrics.Hot); without it they go to Meter.
	Hot *telemetry.HotHistograms
}

// commonOpts are the options every fleetgate client uses.
func commonOpts(cfg Config, log *slog.Logger, tel Telemetry) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		// A dead broker address must fail fast so readiness reflects it.
		kgo.DialTimeout(cfg.DialTimeout),
		// franz-go logs through the service's slog logger, at warn and
		// above: info-level connection churn would drown the service logs.
		kgo.WithLogger(kslog.New(telemetry.Filtered(log.With("component", "kafka"), slog.LevelWarn))),
	}
	if !cfg.ClientMetrics {
		opts = append(opts, kgo.DisableClientMetrics())
	}
	if cfg.MetadataMaxAge > 0 {
		// Partitions added to a topic are found at the next refresh:
		// producers start writing to them, and the consumer groups'
		// leaders rebalance to route them. franz-go's 5 min default
		// would delay those records that long.
		// (franz-go requires the minimum age, 5 s by default, to be below.)
		opts = append(opts, kgo.MetadataMaxAge(cfg.MetadataMaxAge), kgo.MetadataMinAge(min(cfg.MetadataMaxAge, 5*time.Second)))
	}
	if tel.Meter != nil {
		m, err := meterFor(tel.Meter, tel.Hot)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.WithHooks(m))
	}
	if tel.Tracer != nil {
		// W3C trace context in the record headers (traceparent), as the
		// record contract documents.
		opts = append(opts, kgo.WithHooks(kotel.NewKotel(kotel.WithTracer(kotel.NewTracer(kotel.TracerProvider(tel.Tracer),
			kotel.TracerPropagator(propagation.TraceContext{})))).Hooks()...))
	}
	if cfg.TLS.Enabled {
		tc, err := tlsConfig(cfg.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := saslMechanism(cfg.SASL); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

func tlsConfig(c TLSConfig) (*tls.Config, error) {
	return config.ClientTLS("kafka.tls.ca-file", c.CAFile, "kafka.tls.cert-file / kafka.tls.key-file", c.CertFile, c.KeyFile)
}

func saslMechanism(c SASLConfig) sasl.Mechanism {
	switch c.Mechanism {
	case "PLAIN":
		return plain.Auth{User: c.Username, Pass: c.Password.Value()}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: c.Username, Pass: c.Password.Value()}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: c.Username, Pass: c.Password.Value()}.AsSha512Mechanism()
	}
	return nil
}

// ProducerOptions are the knobs of the ingest producer.
type ProducerOptions struct {
	// DeliveryTimeout fails a record that Kafka has not acknowledged in
	// this time, so a device gets an answer instead of waiting forever.
	DeliveryTimeout time.Duration
	// MaxBufferedBytes bounds the client's own buffer.
	MaxBufferedBytes int64
	// MaxRecordBytes is the largest record the producer must accept.
	MaxRecordBytes int32
}

// NewProducer returns a client for producing to cfg.Topic with acks=all and
// idempotence, the settings that make an MQTT acknowledgement a promise.
func NewProducer(cfg Config, po ProducerOptions, log *slog.Logger, tel Telemetry) (*kgo.Client, error) {
	codec, err := compressionCodec(cfg.Compression)
	if err != nil {
		return nil, err
	}
	common, err := commonOpts(cfg, log, tel)
	if err != nil {
		return nil, err
	}
	opts := append(common,
		kgo.DefaultProduceTopic(cfg.Topic),
		// acks=all plus the idempotent producer (franz-go's default, kept
		// on): a PUBACK is sent only once every in-sync replica has the
		// record, and retries never duplicate or reorder it.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// A device waiting for PUBACK must get an answer: fail records
		// that Kafka has not taken within the ack deadline.
		kgo.RecordDeliveryTimeout(po.DeliveryTimeout),
		// A failed partition waits for a metadata refresh before its
		// records are retried or expired; the default 5s minimum age
		// would hold them past a short ack deadline.
		kgo.MetadataMinAge(time.Second),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(cfg.Linger),
		// Records are keyed by client id; the default sticky key
		// partitioner (murmur2, like the Java client) keeps each device's
		// records in one partition, in order.
	)
	if po.MaxBufferedBytes > 0 {
		// The frontend bounds unacknowledged bytes itself; this is a
		// backstop a little above that bound.
		opts = append(opts, kgo.MaxBufferedBytes(int(po.MaxBufferedBytes)), kgo.MaxBufferedRecords(1<<20))
	}
	if po.MaxRecordBytes > 0 {
		// Allow batches large enough for the biggest PUBLISH plus headers.
		opts = append(opts, kgo.ProducerBatchMaxBytes(po.MaxRecordBytes))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka producer: %w", err)
	}
	return cl, nil
}

// NewAdmin returns an admin client (its own connection pool) for topic
// management and health checks.
func NewAdmin(cfg Config, log *slog.Logger) (*kadm.Client, error) {
	opts, err := commonOpts(cfg, log, Telemetry{})
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka admin client: %w", err)
	}
	return kadm.NewClient(cl), nil
}

// EnsureTopic creates cfg.Topic if it does not exist. An existing topic is
// left as it is.
func EnsureTopic(ctx context.Context, adm *kadm.Client, cfg Config) error {
	configs := map[string]*string{
		"retention.ms": kadm.StringPtr(strconv.FormatInt(cfg.Retention.Milliseconds(), 10)),
	}
	if n := cfg.TopicMinInsync(); n > 0 {
		configs["min.insync.replicas"] = kadm.StringPtr(strconv.Itoa(n))
	}
	resp, err := adm.CreateTopic(ctx, int32(cfg.Partitions), int16(cfg.ReplicationFactor), configs, cfg.Topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", cfg.Topic, err)
	}
	return nil
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "", "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.NoCompression(), fmt.Errorf("unknown codec %q (none, gzip, snappy, lz4, zstd)", name)
}

// TopicSpec is a topic a service makes sure exists.
type TopicSpec struct {
	Name       string
	Partitions int
	// Compacted topics keep the latest record of every key (change logs);
	// the others get the configured retention (kafka.retention).
	Compacted bool
}

// EnsureTopics creates every topic of specs that does not exist, with the
// replication factor and retention of cfg, and leaves existing ones as they
// are. Every service provisions its topics through it at start.
func EnsureTopics(ctx context.Context, adm *kadm.Client, cfg Config, specs ...TopicSpec) error {
	for _, t := range specs {
		var err error
		if t.Compacted {
			err = ensureCompactedTopic(ctx, adm, t.Name, t.Partitions, cfg.ReplicationFactor, cfg.TopicMinInsync())
		} else {
			kc := cfg
			kc.Topic, kc.Partitions = t.Name, t.Partitions
			err = EnsureTopic(ctx, adm, kc)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
