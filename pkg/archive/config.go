package archive

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/fleetgate/fleetgate/pkg/config"
	"github.com/fleetgate/fleetgate/pkg/kafka"
)

// Payload modes of the data field.
const (
	// PayloadAuto stores a payload that is valid UTF-8 as a string and any
	// other as BSON binary.
	PayloadAuto = "auto"
	// PayloadBinary stores every payload as BSON binary (subtype 0).
	PayloadBinary = "binary"
)

// Config is what the archive is: where MongoDB is, the names of its
// collections, retention, and how records are batched into writes.
type Config struct {
	MongoURI config.URL `yaml:"mongodb_uri"`
	Database string     `yaml:"database"`

	Collection             string `yaml:"collection"`
	ReceiptCollection      string `yaml:"receipt_collection"`
	SessionEventCollection string `yaml:"session_event_collection"`
	SubscriptionCollection string `yaml:"subscription_collection"`
	// DeadLetterCollection holds the records and documents that can never
	// be archived (refused by MongoDB, undecodable); empty is
	// "<collection>_dead_letter".
	DeadLetterCollection string `yaml:"dead_letter_collection"`
	// DeadLetterValueBytes caps the bytes of a record's value (and of a
	// refused document) a dead letter keeps.
	DeadLetterValueBytes config.ByteSize `yaml:"dead_letter_value_bytes"`

	// Retention is how long a message document is kept after created
	// (a TTL index, or the sweeper); 0 keeps them forever.
	Retention             time.Duration `yaml:"retention"`
	ReceiptRetention      time.Duration `yaml:"receipt_retention"`
	SessionEventRetention time.Duration `yaml:"session_event_retention"`
	// SweepInterval is how often the sweeper deletes expired documents
	// where the server rejects TTL indexes.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// Sweeper is "auto" (only where TTL indexes are rejected), "always" or
	// "never".
	Sweeper string `yaml:"sweeper"`

	Payload string `yaml:"payload"`

	BatchRecords  int             `yaml:"batch_records"`
	BatchBytes    config.ByteSize `yaml:"batch_bytes"`
	BatchInterval time.Duration   `yaml:"batch_interval"`

	WriteTimeout    time.Duration `yaml:"write_timeout"`
	RetryMinBackoff time.Duration `yaml:"retry_min_backoff"`
	RetryMaxBackoff time.Duration `yaml:"retry_max_backoff"`

	Group   string `yaml:"group"`
	StartAt string `yaml:"start_at"`
}

// RegisterFlags registers the flags under "archive.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(&c.MongoURI, "archive.mongodb-uri", "MongoDB connection string (mongodb:// or mongodb+srv://) of the archive; empty archives nothing (the archiver requires it).")
	fs.StringVar(&c.Database, "archive.database", "mqtt", "MongoDB database of the archive.")
	fs.StringVar(&c.Collection, "archive.collection", "message", "Collection of the messages: one document per inbound Kafka record.")
	fs.StringVar(&c.ReceiptCollection, "archive.receipt-collection", "publishedMessage", "Collection of delivery receipts: one document per QoS 1 or 2 delivery a subscriber completed.")
	fs.StringVar(&c.SessionEventCollection, "archive.session-event-collection", "session_event", "Collection of session events (connect, disconnect, subscribe, unsubscribe).")
	fs.StringVar(&c.SubscriptionCollection, "archive.subscription-collection", "subscription", "Collection of current subscriptions: one document per client id and filter.")
	fs.StringVar(&c.DeadLetterCollection, "archive.dead-letter-collection", "", "Collection of the records and documents that can never be archived (MongoDB refused the document for good, or the record does not decode), with their Kafka coordinates and the error; empty is <archive.collection>_dead_letter.")
	c.DeadLetterValueBytes = 1 << 20
	fs.Var(&c.DeadLetterValueBytes, "archive.dead-letter-value-bytes", "Most bytes of a refused document, or of the record's value when the document is larger, that a dead letter keeps; KiB/MiB suffixes.")
	fs.DurationVar(&c.Retention, "archive.retention", 30*24*time.Hour, "How long a message document is kept after its created time (TTL index, changed in place when this changes); 0 keeps them forever.")
	fs.DurationVar(&c.ReceiptRetention, "archive.receipt-retention", 7*24*time.Hour, "How long a delivery receipt is kept; 0 keeps them forever.")
	fs.DurationVar(&c.SessionEventRetention, "archive.session-event-retention", 30*24*time.Hour, "How long a session event is kept; 0 keeps them forever.")
	fs.StringVar(&c.Sweeper, "archive.sweeper", "auto", "Delete expired documents periodically: auto (only where the server rejects TTL indexes, e.g. FerretDB), always, or never.")
	fs.DurationVar(&c.SweepInterval, "archive.sweep-interval", time.Minute, "How often the sweeper deletes expired documents.")
	fs.StringVar(&c.Payload, "archive.payload", PayloadAuto, "How the data field holds the payload: auto (a string when it is valid UTF-8, else binary) or binary (always BSON binary).")
	fs.IntVar(&c.BatchRecords, "archive.batch-records", 1000, "Most records in one batch written to MongoDB.")
	c.BatchBytes = 4 << 20
	fs.Var(&c.BatchBytes, "archive.batch-bytes", "A batch is written once its records hold this many bytes (keys, values, headers); KiB/MiB suffixes.")
	fs.DurationVar(&c.BatchInterval, "archive.batch-interval", 100*time.Millisecond, "A batch is written at the latest this long after its first record arrived.")
	fs.DurationVar(&c.WriteTimeout, "archive.write-timeout", 10*time.Second, "Timeout of one write to MongoDB; a write that times out is retried.")
	fs.DurationVar(&c.RetryMinBackoff, "archive.retry-min-backoff", 100*time.Millisecond, "First wait before writing a failed batch again; it doubles per attempt.")
	fs.DurationVar(&c.RetryMaxBackoff, "archive.retry-max-backoff", 10*time.Second, "Longest wait between attempts to write a failed batch.")
	fs.StringVar(&c.Group, "archive.group", "fleetgate-archiver", "Kafka consumer group of the archivers.")
	fs.StringVar(&c.StartAt, "archive.start-at", "start", "Where a partition without a committed offset (new group, added partition, expired offsets) starts: start (archive every record Kafka still holds) or an RFC 3339 time (skip the records before it).")
}

// DeadLetterCollectionName is the collection of dead letters:
// archive.dead-letter-collection, else "<archive.collection>_dead_letter".
func (c *Config) DeadLetterCollectionName() string {
	if c.DeadLetterCollection != "" {
		return c.DeadLetterCollection
	}
	return c.Collection + "_dead_letter"
}

// Enabled reports whether an archive is configured.
func (c *Config) Enabled() bool { return c.MongoURI != "" }

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, field, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("archive."+field+": "+format, args...))
		}
	}
	if c.MongoURI != "" {
		if err := options.Client().ApplyURI(c.MongoURI.Value()).Validate(); err != nil {
			// The driver's message may quote the URI: never print its
			// password.
			errs = append(errs, fmt.Errorf("archive.mongodb-uri: not a MongoDB connection string (mongodb:// or mongodb+srv://): %s",
				redactURI(err.Error(), c.MongoURI.Value())))
		}
	}
	check(c.Database != "", "database", "must not be empty")
	for field, name := range map[string]string{"collection": c.Collection, "receipt-collection": c.ReceiptCollection,
		"session-event-collection": c.SessionEventCollection, "subscription-collection": c.SubscriptionCollection} {
		check(name != "", field, "must not be empty")
	}
	check(c.DeadLetterValueBytes >= 1, "dead-letter-value-bytes", "%d must be positive", c.DeadLetterValueBytes)
	check(c.Retention >= 0, "retention", "%s must not be negative", c.Retention)
	check(c.ReceiptRetention >= 0, "receipt-retention", "%s must not be negative", c.ReceiptRetention)
	check(c.SessionEventRetention >= 0, "session-event-retention", "%s must not be negative", c.SessionEventRetention)
	// MongoDB's expireAfterSeconds is a 32-bit int.
	for field, d := range map[string]time.Duration{"retention": c.Retention, "receipt-retention": c.ReceiptRetention,
		"session-event-retention": c.SessionEventRetention} {
		check(d.Seconds() <= 2147483647, field, "%s is longer than MongoDB's TTL allows (68 years)", d)
		check(d == 0 || d >= time.Second, field, "%s must be 0 or at least 1s", d)
	}
	check(c.Sweeper == "auto" || c.Sweeper == "always" || c.Sweeper == "never", "sweeper", "%q must be auto, always or never", c.Sweeper)
	check(c.SweepInterval > 0, "sweep-interval", "%s must be positive", c.SweepInterval)
	check(c.Payload == PayloadAuto || c.Payload == PayloadBinary, "payload", "%q must be auto or binary", c.Payload)
	check(c.BatchRecords >= 1, "batch-records", "%d must be at least 1", c.BatchRecords)
	check(c.BatchBytes >= 1, "batch-bytes", "%d must be positive", c.BatchBytes)
	check(c.BatchInterval > 0, "batch-interval", "%s must be positive", c.BatchInterval)
	check(c.WriteTimeout > 0, "write-timeout", "%s must be positive", c.WriteTimeout)
	check(c.RetryMinBackoff > 0, "retry-min-backoff", "%s must be positive", c.RetryMinBackoff)
	check(c.RetryMaxBackoff >= c.RetryMinBackoff, "retry-max-backoff", "%s must be at least archive.retry-min-backoff (%s)", c.RetryMaxBackoff, c.RetryMinBackoff)
	check(c.Group != "", "group", "must not be empty")
	if _, err := kafka.ParseStartAt(c.StartAt); err != nil {
		errs = append(errs, fmt.Errorf("archive.start-at: %w", err))
	}
	// Map iteration order must not decide the order of the messages.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// redactURI removes the password of uri from msg.
func redactURI(msg, uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return msg
	}
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "<redacted>")
	}
	return msg
}
