package acl

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const quotaFile = `groups:
  meters: [meter-1, meter-2]
  gateways: [gw-1]
rules:
  - {permission: allow, action: all, topics: ["devices/%u/#"]}
quotas:
  - identities: [meter-2]
    publish-rate: 100
  - groups: [meters]
    publish-rate: 0.5
    publish-burst: 2
    publish-byte-rate: 4KiB
  - groups: [gateways, bridges]
    publish-byte-rate: 0
`

func TestQuotasGoToTheFirstEntryThatNamesTheSubject(t *testing.T) {
	r, err := ParseRules("rules.yaml", []byte(quotaFile))
	require.NoError(t, err)
	quota := func(s Subject) (Quota, bool) {
		p, err := r.For(s)
		require.NoError(t, err)
		return p.Quota()
	}

	q, ok := quota(Subject{Identity: "meter-1"})
	require.True(t, ok, "by a group of the file")
	assert.Equal(t, 0.5, *q.Rate)
	assert.Equal(t, 2, *q.Burst)
	assert.Equal(t, int64(4<<10), *q.ByteRate)

	q, ok = quota(Subject{Identity: "meter-2"})
	require.True(t, ok)
	assert.Equal(t, 100.0, *q.Rate, "the first entry that applies decides, not the most specific")
	assert.Nil(t, q.Burst, "a field the entry leaves out keeps the node's value")
	assert.Nil(t, q.ByteRate)

	q, ok = quota(Subject{Identity: "gw-1"})
	require.True(t, ok)
	assert.Equal(t, int64(0), *q.ByteRate, "0 is no bound, not unset")

	q, ok = quota(Subject{Identity: "bridge-7", Groups: []string{"bridges"}})
	require.True(t, ok, "by a group the token grants")
	assert.Equal(t, int64(0), *q.ByteRate)

	_, ok = quota(Subject{Identity: "other"})
	assert.False(t, ok, "no entry: the node's quota")
	_, ok = quota(Subject{})
	assert.False(t, ok, "anonymous: the node's quota")

	open, err := AllowAll().For(Subject{Identity: "meter-1"})
	require.NoError(t, err)
	_, ok = open.Quota()
	assert.False(t, ok, "no rules file, no quotas")
}

func TestAnEntryForEveryoneAppliesToAnonymousClientsToo(t *testing.T) {
	r, err := ParseRules("rules.yaml", []byte("rules: []\nquotas:\n  - publish-rate: 5\n"))
	require.NoError(t, err)
	p, err := r.For(Subject{})
	require.NoError(t, err)
	q, ok := p.Quota()
	require.True(t, ok)
	assert.Equal(t, 5.0, *q.Rate)
}

func TestQuotaErrorsNameTheFieldAndTheLine(t *testing.T) {
	for _, c := range []struct{ name, quotas, want string }{
		{"a negative rate", "  - {publish-rate: -1}\n",
			`rules.yaml: quotas[0].publish-rate: "-1" is not a rate: want publishes per second, 0 for no bound (line 3)`},
		{"a burst of 0", "  - {groups: [g], publish-burst: 0}\n",
			`rules.yaml: quotas[0].publish-burst: "0" is not a burst: want a whole number of publishes, at least 1 (line 3)`},
		{"a byte rate under 1 KiB", "  - {publish-byte-rate: 100}\n",
			`rules.yaml: quotas[0].publish-byte-rate: "100" is not a byte rate: want bytes per second (examples: 65536, 512KiB, 8MiB), 0 for no bound or at least 1KiB (line 3)`},
		{"an entry that sets nothing", "  - {identities: [a]}\n",
			`rules.yaml: quotas[0]: sets no quota: want publish-rate, publish-burst or publish-byte-rate (line 3)`},
		{"an unknown field", "  - {publish_rate: 5}\n",
			`rules.yaml: quotas[0]: unknown field "publish_rate", want one of [identities groups publish-rate publish-burst publish-byte-rate] (line 3)`},
		{"an empty group list", "  - {groups: [], publish-rate: 5}\n",
			`rules.yaml: quotas[0].groups: empty list: leave the field out for a rule that applies to everyone (line 3)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRules("rules.yaml", []byte("rules: []\nquotas:\n"+c.quotas))
			require.EqualError(t, err, c.want)
		})
	}
}

func TestAReloadChangesTheQuotaOfAConnectedSubject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	require.NoError(t, os.WriteFile(path, []byte("rules: []\nquotas:\n  - {identities: [d], publish-rate: 5}\n"), 0o600))
	h, err := Load(path)
	require.NoError(t, err)
	p, err := h.For(Subject{Identity: "d"})
	require.NoError(t, err)
	q, ok := p.Quota()
	require.True(t, ok)
	assert.Equal(t, 5.0, *q.Rate)
	gen := p.Generation()

	require.NoError(t, os.WriteFile(path, []byte("rules: []\nquotas:\n  - {identities: [d], publish-rate: 7}\n"), 0o600))
	now := time.Now().Add(time.Second)
	require.NoError(t, os.Chtimes(path, now, now))
	require.NoError(t, h.Reload())
	q, ok = p.Quota()
	require.True(t, ok)
	assert.Equal(t, 7.0, *q.Rate)
	assert.NotEqual(t, gen, p.Generation(), "the caller sees the generation change and makes the buckets again")
}
