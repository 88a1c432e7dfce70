package frontend

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

func TestTopicLimitsHaveTheirDefaultsAndNameTheBadField(t *testing.T) {
	var c TopicLimitsConfig
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	require.NoError(t, c.Validate())
	assert.Equal(t, topic.Limits{MaxLength: 1024, MaxLevels: 32}, c.Limits())

	for _, tc := range []struct {
		name  string
		args  []string
		field string
	}{
		{"a zero length is rejected", []string{"-mqtt.max-topic-length", "0"}, "mqtt.max-topic-length"},
		{"a length beyond the protocol's is rejected", []string{"-mqtt.max-topic-length", "65536"}, "mqtt.max-topic-length"},
		{"zero levels are rejected", []string{"-mqtt.max-topic-levels", "0"}, "mqtt.max-topic-levels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c TopicLimitsConfig
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			c.RegisterFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.field+":")
		})
	}
}
