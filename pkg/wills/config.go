package wills

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config configures the sweeper that publishes the wills of dead nodes.
type Config struct {
	// SweepInterval is how often the sweeper looks for dead nodes. A will
	// of a dead node is published up to this much after it is due.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// ProduceTimeout bounds the wait for Kafka to acknowledge a will; a
	// will Kafka did not take in time is put back and retried.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
}

// RegisterFlags registers the flags under "wills.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.SweepInterval, "wills.sweep-interval", time.Second, "How often to look for dead frontend nodes and publish the wills of their clients that are due.")
	fs.DurationVar(&c.ProduceTimeout, "wills.produce-timeout", 10*time.Second, "How long to wait for Kafka to acknowledge a will of a dead node's client before putting it back for the next sweep.")
}

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.SweepInterval <= 0 {
		errs = append(errs, fmt.Errorf("wills.sweep-interval: %s must be positive", c.SweepInterval))
	}
	if c.ProduceTimeout <= 0 {
		errs = append(errs, fmt.Errorf("wills.produce-timeout: %s must be positive", c.ProduceTimeout))
	}
	return errors.Join(errs...)
}
