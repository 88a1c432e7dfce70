package service

import (
	"bytes"
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type testConfig struct {
	Brokers string `yaml:"brokers"`
}

func (c *testConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Brokers, "kafka.brokers", "localhost:9092", "brokers")
}

func TestLoadRejectsAMisspelledEnvironmentVariable(t *testing.T) {
	t.Setenv("FLEETGATE_KAFKA_BROKER", "x:9092")
	var cfg testConfig
	done, err := Load("svc", "test", &cfg, nil, &bytes.Buffer{}, &bytes.Buffer{})
	assert.True(t, done)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "FLEETGATE_KAFKA_BROKER")
}

func TestLoadAppliesAKnownEnvironmentVariable(t *testing.T) {
	t.Setenv("FLEETGATE_KAFKA_BROKERS", "x:9092")
	var cfg testConfig
	done, err := Load("svc", "test", &cfg, nil, &bytes.Buffer{}, &bytes.Buffer{})
	require.NoError(t, err)
	assert.False(t, done)
	assert.Equal(t, "x:9092", cfg.Brokers)
}

func TestVerifyPrintsTheConfigurationAndStops(t *testing.T) {
	var cfg testConfig
	var out bytes.Buffer
	done, err := Load("svc", "test", &cfg, []string{"-config.verify", "-kafka.brokers", "b:1"}, &out, &bytes.Buffer{})
	require.NoError(t, err)
	assert.True(t, done)
	assert.Contains(t, out.String(), "configuration is valid")
	assert.Contains(t, out.String(), "brokers: b:1")
}

func TestHelpStopsWithoutError(t *testing.T) {
	var cfg testConfig
	var errOut bytes.Buffer
	done, err := Load("svc", "test", &cfg, []string{"-help"}, &bytes.Buffer{}, &errOut)
	require.NoError(t, err)
	assert.True(t, done)
	assert.Contains(t, errOut.String(), "FLEETGATE_KAFKA_BROKERS")
}
