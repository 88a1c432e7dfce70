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
	// ClientRate and ClientBurst are each client's publish quota in
	// messages per second (0: none); ClientByteRate in payload and topic
	// bytes per second, with a second's worth of burst (0: none).
	ClientRate     float64         `yaml:"client_rate"`
	ClientBurst    int             `yaml:"client_burst"`
	ClientByteRate config.ByteSize `yaml:"client_byte_rate"`
}

// RegisterFlags registers the flags under "ingest.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.MaxUnackedBytes = 64 << 20
	fs.Var(&c.MaxUnackedBytes, "ingest.max-unacked-bytes", "Bound on the bytes of PUBLISHes this node has read but Kafka has not yet acknowledged. When reached, the node stops reading from client sockets until Kafka catches up.")
	fs.Float64Var(&c.ClientRate, "ingest.client-rate", 10000, "Each client's publish quota, messages per second: over it the node stops reading the client's socket until the quota has room (throttling; nothing is lost). 0: no quota.")
	fs.IntVar(&c.ClientBurst, "ingest.client-burst", 10000, "Publishes a client may send at once beyond ingest.client-rate before it is throttled.")
	c.ClientByteRate = 64 << 20
	fs.Var(&c.ClientByteRate, "ingest.client-byte-rate", "Each client's publish quota in payload and topic bytes per second, with a second's worth of burst; throttled as ingest.client-rate. 0: no quota.")
	fs.DurationVar(&c.AckTimeout, "ingest.ack-timeout", 30*time.Second, "Deadline from receiving a PUBLISH to answering it. When Kafka has not taken the record by then, an MQTT 5 client gets PUBACK/PUBREC 0x80 (Kafka failed) or 0x97 (node over its byte bound) and an MQTT 3.1.1 client is disconnected; a success ack is never sent for an unwritten record.")
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxUnackedBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("ingest.max-unacked-bytes: %s must be at least 64KiB", c.MaxUnackedBytes.String()))
	}
	if c.ClientRate < 0 {
		errs = append(errs, fmt.Errorf("ingest.client-rate: %g must not be negative", c.ClientRate))
	}
	if c.ClientRate > 0 && c.ClientBurst < 1 {
		errs = append(errs, fmt.Errorf("ingest.client-burst: %d must be at least 1 with ingest.client-rate set", c.ClientBurst))
	}
	if c.ClientByteRate < 0 || (c.ClientByteRate > 0 && c.ClientByteRate < 1<<10) {
		errs = append(errs, fmt.Errorf("ingest.client-byte-rate: %s must be 0 or at least 1KiB", c.ClientByteRate.String()))
	}
	if c.AckTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("ingest.ack-timeout: %s must be at least 100ms", c.AckTimeout))
	}
	return errors.Join(errs...)
}
