package delivery

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func defaults(t *testing.T) Config {
	t.Helper()
	var c Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	return c
}

func TestDefaultsAreValid(t *testing.T) {
	c := defaults(t)
	require.NoError(t, c.Validate())
	assert.Equal(t, 100, c.MaxInflight)
	assert.Equal(t, 2, c.StorePipelines)
	assert.Equal(t, 50*time.Millisecond, c.AckDelay)
}

func TestValidateNamesTheBadField(t *testing.T) {
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"delivery.max-inflight", func(c *Config) { c.MaxInflight = 0 }},
		{"delivery.max-inflight", func(c *Config) { c.MaxInflight = 65536 }},
		{"delivery.poll-interval", func(c *Config) { c.PollInterval = time.Millisecond }},
		{"delivery.topic-aliases", func(c *Config) { c.TopicAliases = -1 }},
		{"delivery.store-timeout", func(c *Config) { c.StoreTimeout = 0 }},
		{"delivery.store-pipelines", func(c *Config) { c.StorePipelines = 0 }},
		{"delivery.ack-delay", func(c *Config) { c.AckDelay = -time.Millisecond }},
		{"delivery.ack-delay", func(c *Config) { c.AckDelay = 2 * time.Minute }},
	} {
		c := defaults(t)
		tc.mutate(&c)
		assert.ErrorContains(t, c.Validate(), tc.field)
	}
	c := defaults(t)
	c.AckDelay = 0
	assert.NoError(t, c.Validate(), "0 records every acknowledgement at once")
}
