package config

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestASecretIsUsableButNeverPrinted(t *testing.T) {
	var s Secret
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(&s, "kafka.sasl.password", "password")
	require.NoError(t, fs.Parse([]string{"-kafka.sasl.password", "hunter2"}))
	assert.Equal(t, "hunter2", s.Value())
	assert.Equal(t, "<redacted>", s.String())
	out, err := yaml.Marshal(struct {
		Password Secret `yaml:"password"`
	}{s})
	require.NoError(t, err)
	assert.NotContains(t, string(out), "hunter2")
	assert.Contains(t, string(out), "<redacted>")

	var empty Secret
	assert.Empty(t, empty.String(), "an unset secret shows as unset")
}
