package dispatch

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func defaultConfig(t *testing.T) Config {
	t.Helper()
	var c Config
	c.RegisterFlags(flag.NewFlagSet("t", flag.PanicOnError))
	return c
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, func() error { c := defaultConfig(t); return c.Validate() }(), "the defaults are valid")
	require.Equal(t, "fleetgate-dispatcher", defaultConfig(t).Group)
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		field  string
	}{
		{name: "an empty group is refused", mutate: func(c *Config) { c.Group = "" }, field: "dispatch.group"},
		{name: "zero records per poll is refused", mutate: func(c *Config) { c.MaxPollRecords = 0 }, field: "dispatch.max-poll-records"},
		{name: "an unknown start position is refused", mutate: func(c *Config) { c.StartAt = "middle" }, field: "dispatch.start-at"},
		{name: "a zero backoff is refused", mutate: func(c *Config) { c.RetryMinBackoff = 0 }, field: "dispatch.retry-min-backoff"},
		{name: "a maximum backoff below the minimum is refused", mutate: func(c *Config) { c.RetryMaxBackoff = time.Millisecond }, field: "dispatch.retry-max-backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig(t)
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.field)
		})
	}
}
