package subscriptions

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func defaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	return c
}

func TestConfig(t *testing.T) {
	t.Run("the defaults are valid and name the design's topic", func(t *testing.T) {
		c := defaultConfig()
		require.NoError(t, c.Validate())
		assert.Equal(t, "mqtt.subscriptions", c.Topic)
		assert.Equal(t, 12, c.Partitions)
		assert.Equal(t, 10*time.Millisecond, c.Settle, "frontends and dispatchers share the flag and its default")
	})
	t.Run("flags set the fields", func(t *testing.T) {
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.RegisterFlags(fs)
		require.NoError(t, fs.Parse([]string{"-subscriptions.topic=subs", "-subscriptions.partitions=3"}))
		assert.Equal(t, "subs", c.Topic)
		assert.Equal(t, 3, c.Partitions)
	})
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"an empty topic is refused", func(c *Config) { c.Topic = "" }, "subscriptions.topic"},
		{"zero partitions are refused", func(c *Config) { c.Partitions = 0 }, "subscriptions.partitions"},
		{"a zero write timeout is refused", func(c *Config) { c.WriteTimeout = 0 }, "subscriptions.write-timeout"},
		{"a write timeout below franz-go's minimum is refused", func(c *Config) { c.WriteTimeout = 500 * time.Millisecond }, "subscriptions.write-timeout"},
		{"a negative settle is refused", func(c *Config) { c.Settle = -time.Millisecond }, "subscriptions.settle"},
		{"a settle over a second is refused", func(c *Config) { c.Settle = 2 * time.Second }, "subscriptions.settle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig()
			tc.edit(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.field)
		})
	}
}
