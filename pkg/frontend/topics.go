package frontend

import (
	"errors"
	"flag"
	"fmt"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

// TopicLimitsConfig bounds the topic names of PUBLISH and the filters of
// SUBSCRIBE and UNSUBSCRIBE, below the protocol's 65,535 bytes: every level
// is a node of the dispatchers' subscription index, every byte travels with
// each record and delivery (docs/limits.md).
type TopicLimitsConfig struct {
	// MaxTopicLength is the longest topic name or filter, in bytes.
	MaxTopicLength int `yaml:"max_topic_length"`
	// MaxTopicLevels is the most levels a topic name or filter may have.
	MaxTopicLevels int `yaml:"max_topic_levels"`
}

// RegisterFlags registers mqtt.max-topic-length and mqtt.max-topic-levels.
func (c *TopicLimitsConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxTopicLength, "mqtt.max-topic-length", 1024, "Longest topic name or topic filter accepted, in bytes (a shared subscription's filter without its $share/<group>/ prefix). Longer: PUBLISH gets PUBACK/PUBREC 0x90 (MQTT 5) or a closed connection (3.1.1), nothing reaches Kafka; a SUBSCRIBE filter gets 0x8F (MQTT 5) / 0x80 (3.1.1).")
	fs.IntVar(&c.MaxTopicLevels, "mqtt.max-topic-levels", 32, "Most levels (parts between '/') of a topic name or topic filter accepted; more are answered as mqtt.max-topic-length says.")
}

// Validate names the bad field.
func (c *TopicLimitsConfig) Validate() error {
	var errs []error
	if c.MaxTopicLength < 1 || c.MaxTopicLength > topic.MaxLength {
		errs = append(errs, fmt.Errorf("mqtt.max-topic-length: %d must be between 1 and %d", c.MaxTopicLength, topic.MaxLength))
	}
	if c.MaxTopicLevels < 1 || c.MaxTopicLevels > topic.MaxLength {
		errs = append(errs, fmt.Errorf("mqtt.max-topic-levels: %d must be between 1 and %d", c.MaxTopicLevels, topic.MaxLength))
	}
	return errors.Join(errs...)
}

// Limits are the limits pkg/ingest and pkg/subscribe hold.
func (c *TopicLimitsConfig) Limits() topic.Limits {
	return topic.Limits{MaxLength: c.MaxTopicLength, MaxLevels: c.MaxTopicLevels}
}
