package acl

import (
	"os"
	"regexp"
	"testing"

	"github.com/fleetgate/fleetgate/pkg/topic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseErrorsNameTheFileTheFieldAndTheLine(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want string
	}{
		{
			"a # that is not the last level",
			"rules:\n" +
				"  - {permission: allow, action: all, topics: [a]}\n" +
				"  - {permission: allow, action: all, topics: [a]}\n" +
				"  - {permission: allow, action: all, topics: [a]}\n" +
				"  - permission: allow\n" +
				"    action: all\n" +
				"    topics: [\"a/#/b\"]\n",
			`rules.yaml: rules[3].topics[0]: "a/#/b": invalid topic filter: '#' at byte 2 is not the last character (line 7)`,
		},
		{
			"an unknown field of a rule",
			"rules:\n  - {permission: allow, action: all, topics: [a], identity: [x]}\n",
			`rules.yaml: rules[0]: unknown field "identity", want one of [permission action topics identities groups] (line 2)`,
		},
		{
			"an unknown field at the top",
			"rules: []\nrule: []\n",
			`rules.yaml: unknown field "rule", want one of [groups rules quotas] (line 2)`,
		},
		{
			"a missing permission",
			"rules:\n  - {action: all, topics: [a]}\n",
			`rules.yaml: rules[0]: missing field "permission" (line 2)`,
		},
		{
			"a missing action",
			"rules:\n  - {permission: allow, topics: [a]}\n",
			`rules.yaml: rules[0]: missing field "action" (line 2)`,
		},
		{
			"missing topics",
			"rules:\n  - {permission: allow, action: all}\n",
			`rules.yaml: rules[0]: missing field "topics" (line 2)`,
		},
		{
			"an unknown permission",
			"rules:\n  - {permission: permit, action: all, topics: [a]}\n",
			`rules.yaml: rules[0].permission: "permit": want "allow" or "deny" (line 2)`,
		},
		{
			"an unknown action",
			"rules:\n  - {permission: allow, action: write, topics: [a]}\n",
			`rules.yaml: rules[0].action: "write": want "publish", "subscribe" or "all" (line 2)`,
		},
		{
			"an empty list of topics",
			"rules:\n  - {permission: allow, action: all, topics: []}\n",
			`rules.yaml: rules[0].topics: no topic filters (line 2)`,
		},
		{
			"a topic that is one string, not a list",
			"rules:\n  - {permission: allow, action: all, topics: a/b}\n",
			`rules.yaml: rules[0].topics: want a list of strings (line 2)`,
		},
		{
			"an unquoted # read as a comment",
			"rules:\n  - permission: allow\n    action: all\n    topics:\n      - #\n",
			`rules.yaml: rules[0].topics[0]: want a string (quote topic filters with # in them) (line 5)`,
		},
		{
			"an empty list of identities",
			"rules:\n  - {permission: allow, action: all, topics: [a], identities: []}\n",
			`rules.yaml: rules[0].identities: empty list: leave the field out for a rule that applies to everyone (line 2)`,
		},
		{
			"an empty identity",
			"rules:\n  - {permission: allow, action: all, topics: [a], identities: [\"\"]}\n",
			`rules.yaml: rules[0].identities[0]: empty string (line 2)`,
		},
		{
			"a placeholder that is part of a level",
			"rules:\n  - {permission: allow, action: all, topics: [\"devices/dev-%c/#\"]}\n",
			`rules.yaml: rules[0].topics[0]: "devices/dev-%c/#": placeholders %u and %c must be a whole topic level (line 2)`,
		},
		{
			"a filter invalid around a placeholder",
			"rules:\n  - {permission: allow, action: all, topics: [\"%c/#/x\"]}\n",
			`rules.yaml: rules[0].topics[0]: "%c/#/x": invalid topic filter: '#' at byte 2 is not the last character (line 2)`,
		},
		{
			"a shared subscription prefix",
			"rules:\n  - {permission: allow, action: all, topics: [\"$share/g/a\"]}\n",
			`rules.yaml: rules[0].topics[0]: "$share/g/a": a rule names the filter inside $share/{group}/: leave the prefix out (line 2)`,
		},
		{
			"a group that is not a list",
			"groups:\n  backends: ops\nrules: []\n",
			`rules.yaml: groups.backends: want a list of strings (line 2)`,
		},
		{
			"a group defined twice",
			"groups:\n  backends: [a]\n  backends: [b]\nrules: []\n",
			`rules.yaml: groups: duplicate group "backends" (line 3)`,
		},
		{
			"a field given twice",
			"rules:\n  - {permission: allow, permission: deny, action: all, topics: [a]}\n",
			`rules.yaml: rules[0]: duplicate field "permission" (line 2)`,
		},
		{
			"no rules field",
			"groups:\n  a: [b]\n",
			`rules.yaml: no "rules" field: write "rules: []" to deny everything (line 1)`,
		},
		{
			"an empty file",
			"",
			`rules.yaml: empty file: write "rules: []" to deny everything`,
		},
		{
			"a file of comments only",
			"# nothing yet\n",
			`rules.yaml: empty file: write "rules: []" to deny everything`,
		},
		{
			"two YAML documents",
			"rules: []\n---\nrules: []\n",
			`rules.yaml: more than one YAML document (line 3)`,
		},
		{
			"a list at the top",
			"- permission: allow\n",
			`rules.yaml: want a mapping with the fields [groups rules quotas] (line 1)`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRules("rules.yaml", []byte(c.yaml))
			require.EqualError(t, err, c.want)
			var pe *ParseError
			require.ErrorAs(t, err, &pe)
		})
	}
}

func TestABadTopicFilterWrapsTheTopicError(t *testing.T) {
	_, err := ParseRules("rules.yaml", []byte("rules:\n  - {permission: allow, action: all, topics: [\"a+\"]}\n"))
	require.ErrorIs(t, err, topic.ErrInvalidFilter)
}

func TestYAMLAliasesAndNumbersAreRead(t *testing.T) {
	r := mustParse(t, `
groups:
  fleet: &fleet [007, dev-2]
rules:
  - {permission: allow, action: all, topics: ["devices/%u/#"], identities: *fleet}
`)
	assert.True(t, mustPolicy(t, r, Subject{Identity: "007"}).AllowPublish("devices/007/x"), "007 is the identity as written")
	assert.True(t, mustPolicy(t, r, Subject{Identity: "dev-2"}).AllowPublish("devices/dev-2/x"))
	assert.False(t, mustPolicy(t, r, Subject{Identity: "7"}).AllowPublish("devices/7/x"))
}

// TestTheExampleOfTheDocsParsesAndMeansWhatItSays keeps
// docs/authorization.md true.
func TestTheExampleOfTheDocsParsesAndMeansWhatItSays(t *testing.T) {
	doc, err := os.ReadFile("../../docs/authorization.md")
	require.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	require.NotEmpty(t, blocks)
	r, err := ParseRules("docs/authorization.md", blocks[0][1])
	require.NoError(t, err)

	device := mustPolicy(t, r, Subject{Identity: "sensor-0001", ClientID: "sensor-0001"})
	assert.True(t, device.AllowPublish("devices/sensor-0001/telemetry"))
	assert.True(t, device.AllowSubscribe("devices/sensor-0001/commands/#"))
	assert.False(t, device.AllowPublish("devices/sensor-0002/telemetry"))
	assert.False(t, device.AllowSubscribe("devices/#"))
	assert.False(t, device.AllowPublish("devices/sensor-0001/commands/reboot"), "only backends command devices")

	backend := mustPolicy(t, r, Subject{Identity: "analytics", ClientID: "analytics-1"})
	assert.True(t, backend.AllowSubscribe("$share/analytics/devices/+/telemetry"))
	assert.True(t, backend.AllowPublish("devices/sensor-0001/commands/reboot"))
	assert.False(t, backend.AllowPublish("devices/sensor-0001/telemetry"), "no forging telemetry")

	stranger := mustPolicy(t, r, Subject{Identity: "stranger", ClientID: "x"})
	assert.False(t, stranger.AllowPublish("devices/x/telemetry"), "not in the fleet")
}
