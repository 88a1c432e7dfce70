package ingest

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfigNamesTheBadField(t *testing.T) {
	defaults := func() Config {
		var c Config
		c.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
		return c
	}
	c := defaults()
	require.NoError(t, c.Validate(), "the defaults are valid")
	for field, mutate := range map[string]func(*Config){
		"ingest.max-unacked-bytes": func(c *Config) { c.MaxUnackedBytes = 1 },
		"ingest.ack-timeout":       func(c *Config) { c.AckTimeout = 0 },
		"ingest.client-rate":       func(c *Config) { c.ClientRate = -1 },
		"ingest.client-burst":      func(c *Config) { c.ClientBurst = 0 },
		"ingest.client-byte-rate":  func(c *Config) { c.ClientByteRate = 10 },
	} {
		c := defaults()
		mutate(&c)
		require.ErrorContains(t, c.Validate(), field)
	}
	c = defaults()
	c.ClientRate, c.ClientBurst, c.ClientByteRate = 0, 0, 0
	require.NoError(t, c.Validate(), "0 turns the quotas off")
}
