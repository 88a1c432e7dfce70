package acl

import (
	"fmt"
	"hash/maphash"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTheIdentityIndexFindsEveryNameItHoldsAndNoOther(t *testing.T) {
	ids := map[string]identity{}
	for i := range 20000 {
		ids[fmt.Sprintf("dev-%d", i)] = identity{rules: []int32{int32(i % 7), int32(i%7 + 1)}, groups: []string{fmt.Sprintf("g%d", i%3)}}
	}
	ids[""] = identity{rules: []int32{9}}
	ids["alone"] = identity{}
	groupIdx := map[string]int32{"g0": 0, "g1": 1, "g2": 2}
	x := newIdentityIndex(ids, groupIdx)
	require.Equal(t, len(ids), x.len())
	for name, want := range ids {
		rules, groups, ok := x.lookup(name)
		require.True(t, ok, name)
		assert.Equal(t, len(want.rules), len(rules), name)
		for k, r := range want.rules {
			assert.Equal(t, r, rules[k], name)
		}
		require.Len(t, groups, len(want.groups), name)
		for k, g := range want.groups {
			assert.Equal(t, groupIdx[g], groups[k], name)
		}
	}
	for _, absent := range []string{"dev-20000", "dev-", "Dev-1", "dev-1 ", "alone2"} {
		_, _, ok := x.lookup(absent)
		assert.False(t, ok, absent)
	}
	var none *identityIndex
	_, _, ok := none.lookup("dev-1")
	assert.False(t, ok)
	assert.Zero(t, none.len())
}

// Two names with one hash: the second is found through clash, and a name
// whose hash points at another's entry is not taken for it.
func TestTheIdentityIndexTellsNamesWithTheSameHashApart(t *testing.T) {
	x := newIdentityIndex(map[string]identity{
		"a": {rules: []int32{1}},
		"b": {rules: []int32{2}},
	}, nil)
	// Make b's hash collide with a's: b's entry moves to clash, and its
	// hash now names a (index 0, the names are sorted).
	hb := maphash.String(x.seed, "b")
	x.clash = map[string]int32{"b": x.byHash[hb]}
	x.byHash[hb] = 0
	rules, _, ok := x.lookup("b")
	require.True(t, ok)
	assert.Equal(t, []int32{2}, rules)
	rules, _, ok = x.lookup("a")
	require.True(t, ok)
	assert.Equal(t, []int32{1}, rules)
	delete(x.clash, "b")
	_, _, ok = x.lookup("b")
	assert.False(t, ok, "a's entry under b's hash is not b")
}
