package subscriptions

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config configures the subscription change log.
type Config struct {
	// Topic is the compacted topic that holds the subscriptions.
	Topic string `yaml:"topic"`
	// Partitions is the partition count when fleetgate creates Topic.
	Partitions int `yaml:"partitions"`
	// WriteTimeout bounds one Subscribe or Unsubscribe: it is the delivery
	// timeout of the producer (kafka.NewChangelogProducer).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// Settle is how long a SUBACK waits after Kafka acknowledged its
	// changes (frontend), and how long a dispatcher's confirmation that
	// its index is current answers later batches (ReuseWithin). The
	// frontends' value must be at least the dispatchers'.
	Settle time.Duration `yaml:"settle"`
}

// DefaultSettle is subscriptions.settle's default.
const DefaultSettle = 10 * time.Millisecond

// RegisterFlags registers the flags under the "subscriptions." prefix.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Topic, "subscriptions.topic", "mqtt.subscriptions", "Compacted Kafka topic holding every subscription; every dispatcher reads it from the start.")
	fs.IntVar(&c.Partitions, "subscriptions.partitions", 12, "Partitions of the subscriptions topic when fleetgate creates it; records are partitioned by client id.")
	fs.DurationVar(&c.WriteTimeout, "subscriptions.write-timeout", 10*time.Second, "How long a subscription change may wait for Kafka before SUBSCRIBE / UNSUBSCRIBE fails.")
	fs.DurationVar(&c.Settle, "subscriptions.settle", DefaultSettle, "A frontend sends a SUBACK this long after Kafka acknowledged the new subscriptions; a dispatcher takes a confirmation that its subscription index is current (a listing of the change log's end offsets) as good for this long, instead of listing before every routed batch. A message published after a SUBACK is then still routed to the new subscription. Set the same value on frontends and dispatchers (a frontend's may be larger, never smaller: upgrade frontends first); 0 lists before every batch.")
}

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.Topic == "" {
		errs = append(errs, errors.New("subscriptions.topic: must not be empty"))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("subscriptions.partitions: %d must be at least 1", c.Partitions))
	}
	if c.WriteTimeout < time.Second {
		// franz-go refuses a record delivery timeout below one second.
		errs = append(errs, fmt.Errorf("subscriptions.write-timeout: %s must be at least 1s", c.WriteTimeout))
	}
	if c.Settle < 0 || c.Settle > time.Second {
		errs = append(errs, fmt.Errorf("subscriptions.settle: %s must be between 0 and 1s (it delays every SUBACK)", c.Settle))
	}
	return errors.Join(errs...)
}
