package acl

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRulesApplyToTheirIdentitiesAndGroups(t *testing.T) {
	r := mustParse(t, `
groups:
  fleet-a: [dev-1, dev-2]
  fleet-b: [dev-3]
rules:
  - {permission: allow, action: all, topics: ["a/#"], groups: [fleet-a]}
  - {permission: allow, action: all, topics: ["b/#"], groups: [fleet-b, from-token]}
  - {permission: allow, action: all, topics: ["gw/#"], identities: [gw-1], groups: [fleet-b]}
  - {permission: allow, action: all, topics: ["all/#"]}
`)
	cases := []struct {
		name    string
		subject Subject
		topic   string
		want    bool
	}{
		{"a member of a file group gets its rules", Subject{Identity: "dev-2"}, "a/x", true},
		{"a member of a file group gets no other group's rules", Subject{Identity: "dev-2"}, "b/x", false},
		{"a group passed by the caller counts", Subject{Identity: "dev-2", Groups: []string{"from-token"}}, "b/x", true},
		{"a group the file does not define may be passed by the caller", Subject{Identity: "x", Groups: []string{"from-token"}}, "b/x", true},
		{"a rule applies to an identity it names", Subject{Identity: "gw-1"}, "gw/x", true},
		{"a rule applies to members of a group it names beside identities", Subject{Identity: "dev-3"}, "gw/x", true},
		{"a rule with neither identities nor groups applies to everyone", Subject{Identity: "stranger"}, "all/x", true},
		{"an anonymous subject gets the rules for everyone", Subject{}, "all/x", true},
		{"an anonymous subject gets no group's rules", Subject{}, "a/x", false},
		{"an identity is not a group", Subject{Identity: "fleet-a"}, "a/x", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, mustPolicy(t, r, c.subject).AllowPublish(c.topic))
		})
	}
}

// TestPoliciesShareTheEntriesOfTheirRules holds the memory of a policy to
// what is particular to its subject: 1,000 rules for everyone, one with a
// placeholder among them, cost a policy no entry of its own (the
// placeholder is substituted as the entry is evaluated), and subjects to
// whom the same rules apply share their steps.
func TestPoliciesShareTheEntriesOfTheirRules(t *testing.T) {
	var f strings.Builder
	f.WriteString("rules:\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&f, "  - {permission: deny, action: all, topics: [\"legacy/%d/#\"]}\n", i)
	}
	f.WriteString("  - {permission: allow, action: all, topics: [\"devices/%c/#\"]}\n")
	f.WriteString("  - {permission: allow, action: publish, topics: [\"gw/#\"], identities: [gw-1]}\n")
	for i := 500; i < 1000; i++ {
		fmt.Fprintf(&f, "  - {permission: deny, action: all, topics: [\"legacy/%d/#\"]}\n", i)
	}
	r := mustParse(t, f.String())

	p1 := mustPolicy(t, r, Subject{Identity: "dev-1", ClientID: "c1"})
	d := p1.d.Load()
	require.Equal(t, []step{{0, 501, false}, {502, 1002, false}}, d.stepList(),
		"the rules before the gateway's, the device's among them, and the rules after")
	assert.Same(t, &r.entries[0], &d.entries(d.stepList()[0], nil)[0])
	assert.Equal(t, "devices/%c/#", d.entries(d.stepList()[0], nil)[500].filter, "the entry of the rule, placeholder and all")
	assert.Nil(t, p1.x, "nothing of its own")
	assert.True(t, p1.AllowPublish("devices/c1/telemetry"))
	assert.True(t, p1.AllowSubscribe("devices/c1/#"))
	assert.False(t, p1.AllowPublish("devices/c2/telemetry"))
	assert.False(t, p1.AllowSubscribe("devices/+/telemetry"))
	assert.False(t, p1.AllowPublish("legacy/7/x"))

	p2 := mustPolicy(t, r, Subject{Identity: "dev-2", ClientID: "c2"})
	assert.Same(t, d.steps, p2.d.Load().steps, "subjects to whom the same rules apply share their steps")
	assert.True(t, p2.AllowPublish("devices/c2/telemetry"))
	assert.False(t, p2.AllowPublish("devices/c1/telemetry"))

	d = mustPolicy(t, r, Subject{Identity: "gw-1", ClientID: "g1"}).d.Load()
	require.Equal(t, []step{{0, 1002, false}}, d.stepList(), "the gateway's rule joins the runs around it")
}

// TestAdjacentRulesOfAPolicyAreOneStep: the rules of one subject that
// follow each other are evaluated as one run, after its token rules (its
// own entries, substituted); the order stays the file's.
func TestAdjacentRulesOfAPolicyAreOneStep(t *testing.T) {
	r := mustParse(t, `rules:
  - {permission: deny, action: publish, topics: ["devices/%u/commands/#"]}
  - {permission: allow, action: subscribe, topics: ["devices/%u/commands/#", "devices/%u/config/#"]}
  - {permission: deny, action: all, topics: ["admin/#"]}
  - {permission: allow, action: publish, topics: ["status/%u"]}
  - {permission: allow, action: all, topics: ["devices/%u/#"]}
`)
	extra, err := ParseTokenRules([]byte(`[{"permission": "deny", "action": "publish", "topics": ["devices/%u/telemetry/secret"]}]`))
	require.NoError(t, err)
	p := mustPolicy(t, r, Subject{Identity: "dev-1", ClientID: "c1", Extra: extra})
	d := p.d.Load()
	require.Equal(t, []step{{0, 1, true}, {0, 6, false}}, d.stepList())
	assert.Equal(t, []string{"devices/dev-1/telemetry/secret"}, filters(p.extra()))
	assert.False(t, p.AllowPublish("devices/dev-1/telemetry/secret"), "the token's rule first")
	assert.False(t, p.AllowPublish("devices/dev-1/commands/reboot"))
	assert.True(t, p.AllowSubscribe("devices/dev-1/commands/#"))
	assert.False(t, p.AllowPublish("admin/x"))
	assert.True(t, p.AllowPublish("status/dev-1"))
	assert.True(t, p.AllowPublish("devices/dev-1/telemetry"))
	assert.False(t, p.AllowPublish("devices/dev-2/telemetry"))
	assert.EqualValues(t, 24, unsafe.Sizeof(entry{}), "an entry is a string header and five small fields")
	assert.EqualValues(t, 12, unsafe.Sizeof(step{}))
	// Every connection holds a Policy and its derived decisions: 64 and 96
	// bytes, size classes of their own (groups and token rules behind a
	// pointer, steps shared, the quota a pointer into the rules).
	assert.EqualValues(t, 64, unsafe.Sizeof(Policy{}))
	assert.EqualValues(t, 96, unsafe.Sizeof(derived{}))
}

// filters returns the filters of entries.
func filters(entries []entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.filter)
	}
	return out
}
