package delivery

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config configures sessions and delivery on a frontend node.
type Config struct {
	// MaxInflight bounds the outbound QoS 1 and 2 messages awaiting their
	// acknowledgement per connection, below the client's Receive Maximum
	// (MQTT 3.1.1 clients announce none).
	MaxInflight int `yaml:"max_inflight"`
	// PollInterval is how often a connected session's queue is checked
	// without a notice: the safety net for notices lost while the node's
	// Redis subscription was down.
	PollInterval time.Duration `yaml:"poll_interval"`
	// StoreTimeout bounds one session store (Redis) or change log (Kafka)
	// operation done for a client packet: CONNECT, SUBSCRIBE, UNSUBSCRIBE.
	StoreTimeout time.Duration `yaml:"store_timeout"`
	// StorePipelines bounds the Redis pipelines in flight that carry the
	// delivery rounds of the node's sessions (taking queued messages,
	// recording acknowledgements); rounds arriving while all are busy
	// share the next one.
	StorePipelines int `yaml:"store_pipelines"`
	// AckDelay is how long acknowledgements may wait to be recorded with
	// the session's next round that takes messages, or else with other
	// sessions' in the node's next ack sweep; 0 records each at once.
	AckDelay time.Duration `yaml:"ack_delay"`
	// TopicAliases bounds the outbound topic aliases of one MQTT 5
	// connection (also capped by the client's Topic Alias Maximum); 0
	// sends none.
	TopicAliases int `yaml:"topic_aliases"`
}

// RegisterFlags registers the flags under "delivery.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxInflight, "delivery.max-inflight", 100, "Most outbound QoS 1/2 messages awaiting acknowledgement per connection (also capped by the client's Receive Maximum).")
	fs.DurationVar(&c.PollInterval, "delivery.poll-interval", 30*time.Second, "How often a connected session's queue is checked without a notice from a dispatcher.")
	fs.DurationVar(&c.StoreTimeout, "delivery.store-timeout", 10*time.Second, "Bound on the Redis and Kafka writes behind CONNACK, SUBACK and UNSUBACK; past it the client gets a failure code.")
	fs.DurationVar(&c.AckDelay, "delivery.ack-delay", 50*time.Millisecond, "How long a subscriber's PUBACKs and PUBCOMPs may wait to be recorded in Redis: with the session's next delivery round (one script instead of two), or else with the other sessions' in the node's next ack sweep (shared pipelines); 0 records each at once. A node that crashes within it sends those messages again.")
	fs.IntVar(&c.TopicAliases, "delivery.topic-aliases", 10, "Most topic aliases the node assigns on one MQTT 5 connection whose CONNECT allows them (Topic Alias Maximum): a topic sent a second time gets the next free alias, and later messages on it carry the alias instead of the topic name. 0 sends full topic names always.")
	fs.IntVar(&c.StorePipelines, "delivery.store-pipelines", 2, "Most Redis pipelines in flight carrying the delivery rounds of this node's sessions; rounds that arrive while all are busy share the next one.")
}

// Validate names the bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		errs = append(errs, fmt.Errorf("delivery.max-inflight: %d must be between 1 and 65535", c.MaxInflight))
	}
	if c.PollInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("delivery.poll-interval: %s must be at least 10ms", c.PollInterval))
	}
	if c.StorePipelines < 1 || c.StorePipelines > 1024 {
		errs = append(errs, fmt.Errorf("delivery.store-pipelines: %d must be between 1 and 1024", c.StorePipelines))
	}
	if c.AckDelay < 0 || c.AckDelay > time.Minute {
		errs = append(errs, fmt.Errorf("delivery.ack-delay: %s must be between 0 and 1m", c.AckDelay))
	}
	if c.TopicAliases < 0 || c.TopicAliases > 65535 {
		errs = append(errs, fmt.Errorf("delivery.topic-aliases: %d must be between 0 and 65535", c.TopicAliases))
	}
	if c.StoreTimeout <= 0 {
		errs = append(errs, fmt.Errorf("delivery.store-timeout: %s must be positive", c.StoreTimeout))
	}
	return errors.Join(errs...)
}
