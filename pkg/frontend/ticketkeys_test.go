package frontend

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTicketKeyFilesAreReadStrictlyAndNeverQuoted: each mistake in a
// session ticket key file is an error naming the file and the line, and
// no error repeats a key.
func TestTicketKeyFilesAreReadStrictlyAndNeverQuoted(t *testing.T) {
	key := strings.Repeat("ab", 32)
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"a short key", "# keys\n" + key[:62] + "\n", "line 2: a key is 64 hexadecimal characters"},
		{"not hexadecimal", strings.Repeat("zz", 32) + "\n", "line 1: not hexadecimal"},
		{"an all-zero key", strings.Repeat("00", 32) + "\n", "line 1: an all-zero key"},
		{"no key at all", "# nothing yet\n\n", "no key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			require.NoError(t, os.WriteFile(p, []byte(tc.content), 0o600))
			_, err := ticketKeys(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), p)
			assert.NotContains(t, err.Error(), key[:62])
		})
	}
	p := filepath.Join(dir, "good")
	require.NoError(t, os.WriteFile(p, []byte("# rotation: the new key first\n"+key+"\n\n"+strings.Repeat("cd", 32)+"\n"), 0o600))
	keys, err := ticketKeys(p)
	require.NoError(t, err)
	require.Len(t, keys, 2)
	assert.Equal(t, byte(0xab), keys[0][0], "the first line encrypts")
}
