package load

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeCreds writes lines to a credentials file in a temporary directory.
func writeCreds(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "creds")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	return path
}

func TestACredentialsFileGivesClientIItsLineI(t *testing.T) {
	path := writeCreds(t, "# devices", "dev-0:pw0", "", "dev-1:a:b:c", "dev-2:", "dev-3:eyJ.a-b.c_d\r")
	creds, n, err := ReadCredentialsFile(path)
	require.NoError(t, err)
	require.Equal(t, 4, n, "comments and blank lines are not clients")
	for i, want := range [][2]string{{"dev-0", "pw0"}, {"dev-1", "a:b:c"}, {"dev-2", ""}, {"dev-3", "eyJ.a-b.c_d"}, {"", ""}} {
		u, p := creds(i)
		require.Equal(t, want, [2]string{u, p}, "client %d", i)
	}
}

func TestABadCredentialsFileIsRefusedWithoutPrintingTheLine(t *testing.T) {
	for _, tc := range []struct{ name, line, want string }{
		{"a line without a colon", "s3cret-password", "line 2: want username:password"},
		{"a line without a username", ":s3cret-password", "line 2: want username:password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadCredentialsFile(writeCreds(t, "dev-0:pw", tc.line))
			require.ErrorIs(t, err, ErrCredentials)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "s3cret")
		})
	}
	_, _, err := ReadCredentialsFile(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, ErrCredentials)
}

func TestCredentialsAreResolvedFunctionFirstThenFileThenFlags(t *testing.T) {
	fn := func(i int) (string, string) { return fmt.Sprint("fn-", i), "x" }
	file := writeCreds(t, "file-0:a", "file-1:b")

	c, err := resolveCredentials(fn, file, "flag", "pw", 2)
	require.NoError(t, err)
	u, _ := c(1)
	require.Equal(t, "fn-1", u)

	c, err = resolveCredentials(nil, file, "", "", 2)
	require.NoError(t, err)
	u, p := c(1)
	require.Equal(t, [2]string{"file-1", "b"}, [2]string{u, p})

	_, err = resolveCredentials(nil, file, "", "", 3)
	require.ErrorContains(t, err, "2 lines for 3 clients")

	c, err = resolveCredentials(nil, "", "flag", "pw", 5)
	require.NoError(t, err)
	u, p = c(4)
	require.Equal(t, [2]string{"flag", "pw"}, [2]string{u, p})

	c, err = resolveCredentials(nil, "", "", "", 5)
	require.NoError(t, err)
	u, p = c(0)
	require.Empty(t, u+p, "by default clients connect anonymously")
}
