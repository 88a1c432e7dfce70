package acl

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeRules writes a rules file.
func writeRules(t testing.TB, path, yaml string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
}

// loadHolder writes yaml to a rules file in a temporary directory and loads
// it.
func loadHolder(t testing.TB, yaml string) *Holder {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeRules(t, path, yaml)
	h, err := Load(path)
	require.NoError(t, err)
	return h
}

const deviceRules = `
rules:
  - {permission: allow, action: all, topics: ["devices/%c/#"]}
`

func TestLoadRefusesAMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestLoadRefusesABrokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeRules(t, path, "rules:\n  - permission: allow\n")
	_, err := Load(path)
	var pe *ParseError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, path, pe.Source)
}

func TestABrokenFileOnReloadKeepsTheOldDecisions(t *testing.T) {
	h := loadHolder(t, deviceRules)
	p, err := h.For(Subject{ClientID: "c1"})
	require.NoError(t, err)
	require.True(t, p.AllowPublish("devices/c1/x"))
	require.False(t, p.AllowPublish("open/door"))

	for _, broken := range []string{
		"rules:\n  - {permission: allow, action: all, topics: [\"a/#/b\"]}\n",
		"", // truncated
		"rules: [{permission: allow, action: all, topics: [\"#\"]}", // cut short
		"rulez: []\n",
	} {
		writeRules(t, h.Path(), broken)
		err := h.Reload()
		require.Error(t, err, "%q", broken)
		assert.Contains(t, err.Error(), "keeping generation 1")
		assert.True(t, p.AllowPublish("devices/c1/x"))
		assert.False(t, p.AllowPublish("open/door"), "a broken file opens no door")
		assert.False(t, p.AllowSubscribe("#"))
	}
	assert.Equal(t, uint64(1), h.Generation())
	assert.Equal(t, uint64(4), h.ReloadFailures())

	p2, err := h.For(Subject{ClientID: "c2"})
	require.NoError(t, err)
	assert.True(t, p2.AllowPublish("devices/c2/x"), "new policies get the old rules too")
}

func TestAMissingFileOnReloadKeepsTheOldDecisions(t *testing.T) {
	h := loadHolder(t, deviceRules)
	p, err := h.For(Subject{ClientID: "c1"})
	require.NoError(t, err)
	require.NoError(t, os.Remove(h.Path()))
	err = h.Reload()
	require.True(t, errors.Is(err, fs.ErrNotExist), "%v", err)
	assert.True(t, p.AllowPublish("devices/c1/x"))
	assert.False(t, p.AllowPublish("devices/c2/x"))
	assert.Equal(t, uint64(1), h.Generation())
	assert.Equal(t, uint64(1), h.ReloadFailures())
}

func TestPoliciesFollowAReload(t *testing.T) {
	h := loadHolder(t, deviceRules)
	p, err := h.For(Subject{ClientID: "c1"})
	require.NoError(t, err)
	require.True(t, p.AllowPublish("devices/c1/x")) // cached
	require.False(t, p.AllowPublish("fleet/x"))     // cached
	require.True(t, p.AllowRead("devices/c1/x"))    // cached
	require.Equal(t, uint64(1), p.Generation())

	writeRules(t, h.Path(), `
rules:
  - {permission: deny, action: all, topics: ["devices/%c/x"]}
  - {permission: allow, action: all, topics: ["devices/%c/#", "fleet/#"]}
`)
	require.NoError(t, h.Reload())
	assert.Equal(t, uint64(2), h.Generation())
	assert.False(t, p.AllowPublish("devices/c1/x"), "the cache of the old rules is gone")
	assert.False(t, p.AllowRead("devices/c1/x"), "nor may the client receive it through a subscription granted before")
	assert.True(t, p.AllowPublish("fleet/x"))
	assert.True(t, p.AllowSubscribe("fleet/#"))
	assert.Equal(t, uint64(2), p.Generation())
}

func TestReloadingAnUnchangedFileKeepsTheGeneration(t *testing.T) {
	h := loadHolder(t, deviceRules)
	before := h.Rules()
	require.NoError(t, h.Reload())
	assert.Equal(t, uint64(1), h.Generation())
	assert.Same(t, before, h.Rules(), "the policies have nothing to derive again")
}

func TestAHolderDescribesItsRules(t *testing.T) {
	h := loadHolder(t, fleetRules)
	assert.False(t, h.Open())
	r := h.Rules()
	assert.Equal(t, h.Path(), r.Name())
	assert.Equal(t, 7, r.Len())
	assert.Equal(t, 1, r.Groups())
	assert.Equal(t, 2, r.Identities())
	assert.Equal(t, uint64(1), r.Generation())
}
