package acl

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTokenRules(t *testing.T) {
	rules, err := ParseTokenRules([]byte(`[{"permission": "allow", "action": "all", "topics": ["fleet/%c/#", "news"]}]`))
	require.NoError(t, err)
	assert.Equal(t, []Rule{{Permission: Allow, Action: All, Topics: []string{"fleet/%c/#", "news"}}}, rules)

	rules, err = ParseTokenRules([]byte(`null`))
	require.NoError(t, err)
	assert.Nil(t, rules)
}

func TestParseTokenRulesErrors(t *testing.T) {
	cases := []struct {
		name string
		json string
		want string
	}{
		{"identities are not a token's to give", `[{"permission": "allow", "action": "all", "topics": ["a"], "identities": ["x"]}]`,
			`token: rules[0]: json: unknown field "identities"`},
		{"groups are not a token's to give", `[{"permission": "allow", "action": "all", "topics": ["a"], "groups": ["x"]}]`,
			`token: rules[0]: json: unknown field "groups"`},
		{"a bad topic filter", `[{"permission": "allow", "action": "all", "topics": ["a"]}, {"permission": "deny", "action": "all", "topics": ["a", "b#"]}]`,
			`token: rules[1].topics[1]: "b#": invalid topic filter: '#' at byte 1 does not occupy a whole level`},
		{"a missing permission", `[{"action": "all", "topics": ["a"]}]`,
			`token: rules[0].permission: "": want "allow" or "deny"`},
		{"no topics", `[{"permission": "allow", "action": "all"}]`,
			`token: rules[0].topics: no topic filters`},
		{"an object, not an array", `{"permission": "allow"}`,
			`token: rules: json: cannot unmarshal object into Go value of type []json.RawMessage`},
		{"a null rule", `[null]`,
			`token: rules[0]: want an object, not null`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseTokenRules([]byte(c.json))
			require.EqualError(t, err, c.want)
		})
	}
}
