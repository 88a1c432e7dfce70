package archive

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTheDeadLetterCollectionIsNamedAfterTheMessageCollectionUnlessSet(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"the default follows archive.collection", nil, "message_dead_letter"},
		{"a renamed collection renames it", []string{"-archive.collection", "msgs"}, "msgs_dead_letter"},
		{"a name of its own wins", []string{"-archive.collection", "msgs", "-archive.dead-letter-collection", "poison"}, "poison"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			c.RegisterFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			assert.Equal(t, tc.want, c.DeadLetterCollectionName())
			assert.EqualValues(t, 1<<20, c.DeadLetterValueBytes)
		})
	}
}

func TestADeadLetterValueCapOfZeroIsRefused(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"-archive.dead-letter-value-bytes", "0"}))
	assert.ErrorContains(t, c.Validate(), "archive.dead-letter-value-bytes")
}
