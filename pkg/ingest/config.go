package ingest

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/fleetgate/fleetgate/pkg/config"
)

// Config configures the ingest path.
type Config struct {
	MaxUnackedBytes config.ByteSize `yaml:"max_unacked_bytes"`
	AckTimeout      time.Duration   `yaml:"ack_timeout"`
}

// RegisterFlags registers the flags under "ingest.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.MaxUnackedBytes = 64 << 20
	fs.Var(&c.MaxUnackedBytes, "ingest.max-unacked-bytes", "Bound on the bytes of PUBLISHes this node has read but Kafka has not yet acknowledged. When reached, the node stops reading from client sockets until Kafka catches up.")
	fs.DurationVar(&c.AckTimeout, "ingest.ack-timeout", 30*time.Second, "Deadline from receiving a PUBLISH to answering it. When Kafka has not taken the record by then, an MQTT 5 client gets PUBACK/PUBREC 0x80 (Kafka failed) or 0x97 (node over its byte bound) and an MQTT 3.1.1 client is disconnected; a success ack is never sent for an unwritten record.")
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxUnackedBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("ingest.max-unacked-bytes: %s must be at least 64KiB", c.MaxUnackedBytes.String()))
	}
	if c.AckTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("ingest.ack-timeout: %s must be at least 100ms", c.AckTimeout))
	}
	return errors.Join(errs...)
}
