package archiver

import (
	"errors"
	"flag"
	"fmt"
	"github.com/fleetgate/fleetgate/pkg/gcheadroom"
	"github.com/fleetgate/fleetgate/pkg/procs"
	"time"

	"github.com/fleetgate/fleetgate/pkg/archive"
	"github.com/fleetgate/fleetgate/pkg/events"
	"github.com/fleetgate/fleetgate/pkg/kafka"
	"github.com/fleetgate/fleetgate/pkg/subscriptions"
	"github.com/fleetgate/fleetgate/pkg/telemetry"
)

// Config holds the archiver's consumer knobs; what the archive is (MongoDB,
// collections, retention, batching) is archive.Config.
type Config struct {
	// CommitInterval is how often the offsets of written batches are
	// committed, in the background; an archiver that dies has at most this
	// much written again, which the deterministic _id turns into nothing.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// SessionTimeout is the consumer group session timeout: how long the
	// partitions of an archiver that died wait before the group gives them
	// to the others.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// LagInterval is how often the consumer lag is computed (from the
	// group's committed offsets and the partitions' end offsets) for
	// fleetgate_archive_lag_records and the progress log.
	LagInterval time.Duration `yaml:"lag_interval"`
}

// RegisterFlags registers the flags under "archiver.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.CommitInterval, "archiver.commit-interval", time.Second, "How often the offsets of written batches are committed, in the background; an archiver that dies writes at most this much again (duplicates are skipped by _id).")
	fs.DurationVar(&c.SessionTimeout, "archiver.session-timeout", 10*time.Second, "Consumer group session timeout: the partitions of an archiver that died are taken over by the others after this (within the broker's group.min/max.session.timeout.ms).")
	fs.DurationVar(&c.LagInterval, "archiver.lag-interval", 5*time.Second, "How often the consumer lag (fleetgate_archive_lag_records) is computed from Kafka's end and committed offsets.")
}

// Validate checks the configuration and names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.CommitInterval <= 0 {
		errs = append(errs, fmt.Errorf("archiver.commit-interval: %s must be positive", c.CommitInterval))
	}
	if c.SessionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("archiver.session-timeout: %s must be at least 1s", c.SessionTimeout))
	}
	if c.LagInterval <= 0 {
		errs = append(errs, fmt.Errorf("archiver.lag-interval: %s must be positive", c.LagInterval))
	}
	return errors.Join(errs...)
}

// ServiceConfig is the whole configuration of an archiver process.
type ServiceConfig struct {
	Archive  archive.Config `yaml:"archive"`
	Archiver Config         `yaml:"archiver"`
	Kafka    kafka.Config   `yaml:"kafka"`
	// Events names the topic of session events and delivery receipts
	// (events.topic); empty archives none.
	Events events.Config `yaml:"events"`
	// Subscriptions names the subscription change log, which the archiver
	// always follows into the subscription collection.
	Subscriptions subscriptions.Config   `yaml:"subscriptions"`
	Log           telemetry.LogConfig    `yaml:"log"`
	GC            gcheadroom.Config      `yaml:"gc"`
	Procs         procs.Config           `yaml:"procs"`
	HTTP          telemetry.ServerConfig `yaml:"http"`
}

// RegisterFlags registers every archiver flag.
func (c *ServiceConfig) RegisterFlags(fs *flag.FlagSet) {
	c.Archive.RegisterFlags(fs)
	c.Archiver.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	c.Events.RegisterFlags(fs)
	c.Subscriptions.RegisterFlags(fs)
	c.Log.RegisterFlags(fs)
	c.GC.RegisterFlags(fs)
	c.Procs.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs, ":9466")
	if err := fs.Set("kafka.client-id", "fleetgate-archiver"); err != nil {
		panic(err)
	}
}

// Validate checks the whole configuration; errors name the field. Unlike
// the other services, which archive nothing without it, the archiver
// requires archive.mongodb-uri.
func (c *ServiceConfig) Validate() error {
	var errs []error
	if !c.Archive.Enabled() {
		errs = append(errs, errors.New("archive.mongodb-uri: required"))
	}
	errs = append(errs, c.Archive.Validate(), c.Archiver.Validate(), c.Kafka.Validate(), c.Events.Validate(),
		c.Subscriptions.Validate(), c.Log.Validate(), c.GC.Validate(), c.Procs.Validate())
	return errors.Join(errs...)
}
