package acl

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mustParse compiles a rules file or fails the test.
func mustParse(t testing.TB, yaml string) *Rules {
	t.Helper()
	r, err := ParseRules("rules.yaml", []byte(yaml))
	require.NoError(t, err)
	return r
}

// mustPolicy returns the policy of s under r or fails the test.
func mustPolicy(t testing.TB, r *Rules, s Subject) *Policy {
	t.Helper()
	p, err := r.For(s)
	require.NoError(t, err)
	return p
}

// fleetRules are the rules of the package documentation's example: devices
// own their subtree, backends read everything and command every device,
// nobody writes $SYS.
const fleetRules = `
groups:
  backends: [analytics, ops]
rules:
  - permission: deny
    action: publish
    topics: ["$SYS/#"]
  - permission: allow
    action: subscribe
    topics: ["$SYS/broker/#"]
    groups: [backends]
  - permission: deny
    action: all
    topics: ["devices/+/secrets/#"]
  - permission: allow
    action: all
    topics: ["devices/%c/#"]
  - permission: allow
    action: subscribe
    topics: ["devices/#", "fleet/#"]
    groups: [backends]
  - permission: allow
    action: publish
    topics: ["devices/+/commands/#"]
    groups: [backends]
  - permission: allow
    action: subscribe
    topics: ["fleet/broadcast"]
`

func TestPublishDecisions(t *testing.T) {
	r := mustParse(t, fleetRules)
	device := Subject{Identity: "dev-1", ClientID: "c1"}
	backend := Subject{Identity: "ops", ClientID: "ops-worker-3"}
	checkTopics(t, r, (*Policy).AllowPublish, []topicCase{
		{"a device publishes in its own subtree", device, "devices/c1/telemetry", true},
		{"a device publishes to its subtree's root", device, "devices/c1", true},
		{"a device does not publish in another device's subtree", device, "devices/c2/telemetry", false},
		{"a device does not publish where no rule says so", device, "fleet/broadcast", false},
		{"an earlier deny rule wins over a later allow", device, "devices/c1/secrets/key", false},
		{"a device does not publish to $SYS", device, "$SYS/broker/load", false},
		{"a backend commands any device", backend, "devices/c9/commands/reboot", true},
		{"a backend does not publish a device's telemetry", backend, "devices/c9/telemetry", false},
		{"a backend may not publish to $SYS either", backend, "$SYS/broker/load", false},
		{"an invalid topic name is not allowed", device, "devices/c1/+", false},
		{"an empty topic name is not allowed", device, "", false},
	})
}

// topicCase is one decision about a topic name.
type topicCase struct {
	name    string
	subject Subject
	topic   string
	want    bool
}

// checkTopics asks decide about each case's topic under r, twice: the
// second answer comes from the policy's cache.
func checkTopics(t *testing.T, r *Rules, decide func(*Policy, string) bool, cases []topicCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustPolicy(t, r, c.subject)
			assert.Equal(t, c.want, decide(p, c.topic))
			assert.Equal(t, c.want, decide(p, c.topic), "asked again, from the cache")
		})
	}
}

func TestSubscribeDecisions(t *testing.T) {
	r := mustParse(t, fleetRules)
	device := Subject{Identity: "dev-1", ClientID: "c1"}
	backend := Subject{Identity: "analytics", ClientID: "a1"}
	cases := []struct {
		name    string
		subject Subject
		filter  string
		want    bool
	}{
		{"a device subscribes to a subtree of its own", device, "devices/c1/commands/#", true},
		{"a deny rule inside a device's subtree keeps it from subscribing to all of it", device, "devices/c1/#", false},
		{"a device subscribes to one topic of its own", device, "devices/c1/commands/reboot", true},
		{"a device subscribes with wildcards inside its subtree", device, "devices/c1/commands/+", true},
		{"a device does not subscribe with a wildcard over a level a deny rule names", device, "devices/c1/+/x", false},
		{"a device does not subscribe to every device", device, "devices/#", false},
		{"a device does not subscribe to everything", device, "#", false},
		{"a device does not subscribe with a leading wildcard", device, "+/x/#", false},
		{"a device does not subscribe to a wildcard over devices", device, "devices/+/telemetry", false},
		{"a device does not subscribe to another device", device, "devices/c2/#", false},
		{"a device does not subscribe to a subtree a deny rule touches", device, "devices/c1/secrets/#", false},
		{"a device does not subscribe to its subtree while a deny rule touches part of it", device, "devices/c1/+/key", false},
		{"a device subscribes to the broadcast topic", device, "fleet/broadcast", true},
		{"a device subscribes to a subtree of its own as a shared subscription", device, "$share/g/devices/c1/commands/#", true},
		{"a device does not subscribe to everything as a shared subscription", device, "$share/g/#", false},
		{"an invalid filter is not allowed", device, "devices/c1/#/x", false},
		{"a backend does not subscribe to all devices while a deny rule covers secrets", backend, "devices/#", false},
		{"a backend subscribes to every device's telemetry", backend, "devices/+/telemetry", true},
		{"a backend subscribes to the broker's $SYS topics", backend, "$SYS/broker/#", true},
		{"a backend does not subscribe to all $SYS topics", backend, "$SYS/#", false},
		{"a device does not subscribe to $SYS", device, "$SYS/broker/#", false},
		{"a backend subscribes to all of fleet", backend, "fleet/#", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustPolicy(t, r, c.subject)
			assert.Equal(t, c.want, p.AllowSubscribe(c.filter))
		})
	}
}

func TestReadDecisions(t *testing.T) {
	r := mustParse(t, fleetRules)
	device := Subject{Identity: "dev-1", ClientID: "c1"}
	backend := Subject{Identity: "analytics", ClientID: "a1"}
	checkTopics(t, r, (*Policy).AllowRead, []topicCase{
		{"a device receives in its own subtree", device, "devices/c1/commands/reboot", true},
		{"a device does not receive another device's messages", device, "devices/c2/commands/reboot", false},
		{"an earlier deny rule wins over a later allow", device, "devices/c1/secrets/key", false},
		{"a device receives the broadcast topic", device, "fleet/broadcast", true},
		{"a device does not receive the rest of fleet", device, "fleet/other", false},
		{"a backend receives any device's commands through its subscribe rule", backend, "devices/c9/commands/reboot", true},
		{"a backend receives every device's telemetry", backend, "devices/c9/telemetry", true},
		{"a backend does not receive secrets", backend, "devices/c9/secrets/key", false},
		{"a backend receives the broker's $SYS topics", backend, "$SYS/broker/load", true},
		{"a backend does not receive the rest of $SYS", backend, "$SYS/other", false},
		{"an invalid topic name is not allowed", device, "devices/c1/+", false},
		{"an empty topic name is not allowed", device, "", false},
	})
}

// A topic name is a filter that matches itself: reading it is allowed
// exactly when subscribing to it would be.
func TestReadingATopicIsDecidedAsSubscribingToIt(t *testing.T) {
	r := mustParse(t, fleetRules)
	for _, s := range []Subject{{Identity: "dev-1", ClientID: "c1"}, {Identity: "ops", ClientID: "o1"}, {ClientID: "anon"}} {
		p := mustPolicy(t, r, s)
		for _, name := range []string{"devices/c1/x", "devices/c1/secrets/k", "devices/o1/y", "devices/c2/telemetry",
			"fleet/broadcast", "fleet/x", "$SYS/broker/load", "$SYS/x", "other"} {
			assert.Equal(t, p.AllowSubscribe(name), p.AllowRead(name), "%s reading %s", s.ClientID, name)
		}
	}
}

// The cache holds publish and read decisions side by side: a topic one may
// publish to and not read (or the reverse) gets both answers right.
func TestTheCacheKeepsPublishAndReadApart(t *testing.T) {
	r := mustParse(t, `
rules:
  - {permission: allow, action: publish, topics: ["up/%c"]}
  - {permission: allow, action: subscribe, topics: ["down/%c"]}
`)
	p := mustPolicy(t, r, Subject{ClientID: "c"})
	for round := 0; round < 3; round++ {
		assert.True(t, p.AllowPublish("up/c"))
		assert.False(t, p.AllowRead("up/c"))
		assert.True(t, p.AllowRead("down/c"))
		assert.False(t, p.AllowPublish("down/c"))
	}
}

func TestAnAllowRuleThatOnlyOverlapsLeavesTheDecisionToLaterRules(t *testing.T) {
	r := mustParse(t, `
rules:
  - {permission: allow, action: subscribe, topics: ["a/x"]}
  - {permission: allow, action: subscribe, topics: ["a/+"]}
  - {permission: allow, action: subscribe, topics: ["b/x", "b/y"]}
`)
	p := mustPolicy(t, r, Subject{Identity: "u", ClientID: "c"})
	assert.True(t, p.AllowSubscribe("a/+"), "the second rule contains a/+")
	assert.True(t, p.AllowSubscribe("a/x"))
	assert.False(t, p.AllowSubscribe("b/+"), "no single filter contains b/+")
}

func TestAnActionLimitsARule(t *testing.T) {
	r := mustParse(t, `
rules:
  - {permission: allow, action: publish, topics: ["up/%c"]}
  - {permission: allow, action: subscribe, topics: ["down/%c"]}
`)
	p := mustPolicy(t, r, Subject{ClientID: "c1"})
	assert.True(t, p.AllowPublish("up/c1"))
	assert.False(t, p.AllowSubscribe("up/c1"))
	assert.False(t, p.AllowPublish("down/c1"))
	assert.True(t, p.AllowSubscribe("down/c1"))
}

func TestExtraRulesComeBeforeTheRulesOfTheFile(t *testing.T) {
	r := mustParse(t, `
rules:
  - {permission: allow, action: all, topics: ["devices/%c/#"]}
`)
	extra, err := ParseTokenRules([]byte(`[
		{"permission": "deny", "action": "publish", "topics": ["devices/%c/config"]},
		{"permission": "allow", "action": "subscribe", "topics": ["firmware/%u/#"]}
	]`))
	require.NoError(t, err)
	p := mustPolicy(t, r, Subject{Identity: "model-x", ClientID: "c1", Extra: extra})
	assert.False(t, p.AllowPublish("devices/c1/config"), "the token's deny comes first")
	assert.True(t, p.AllowPublish("devices/c1/telemetry"), "the file's rules follow")
	assert.True(t, p.AllowSubscribe("firmware/model-x/#"))
	assert.False(t, p.AllowSubscribe("firmware/#"))
}

func TestExtraRulesMayNotNameWhomTheyApplyTo(t *testing.T) {
	r := mustParse(t, "rules: []\n")
	_, err := r.For(Subject{Extra: []Rule{{Permission: Allow, Action: All, Topics: []string{"#"}, Groups: []string{"admins"}}}})
	require.ErrorIs(t, err, errExtraScope)
	_, err = r.For(Subject{Extra: []Rule{{Permission: Allow, Action: "read", Topics: []string{"#"}}}})
	require.EqualError(t, err, `subject: extra[0].action: "read": want "publish", "subscribe" or "all"`)
}

func TestOpenModeAllowsEverything(t *testing.T) {
	h := AllowAll()
	require.True(t, h.Open())
	require.Zero(t, h.Generation())
	require.NoError(t, h.Reload(), "nothing to reload")
	p, err := h.For(Subject{Identity: "anyone", ClientID: "c"})
	require.NoError(t, err)
	assert.True(t, p.AllowPublish("$SYS/x"))
	assert.True(t, p.AllowPublish("anything/at/all"))
	assert.True(t, p.AllowSubscribe("#"))
	assert.True(t, p.AllowSubscribe("$share/g/#"))
}

func TestOpenModeHoldsASubjectToItsExtraRules(t *testing.T) {
	p, err := AllowAll().For(Subject{ClientID: "c1", Extra: []Rule{
		{Permission: Allow, Action: All, Topics: []string{"devices/%c/#"}},
	}})
	require.NoError(t, err)
	assert.True(t, p.AllowPublish("devices/c1/x"))
	assert.False(t, p.AllowPublish("devices/c2/x"), "rules were given for this subject: no match is a denial")
	assert.False(t, p.AllowSubscribe("#"))
}

func TestOpenModeHoldsASubjectToExtraRulesItsPlaceholdersLeftOut(t *testing.T) {
	p, err := AllowAll().For(Subject{ClientID: "a/b", Extra: []Rule{
		{Permission: Allow, Action: All, Topics: []string{"devices/%c/#"}},
	}})
	require.NoError(t, err)
	assert.False(t, p.AllowPublish("devices/a/b/x"))
	assert.False(t, p.AllowPublish("other"))
}

func TestAFileWithNoRulesDeniesEverything(t *testing.T) {
	p := mustPolicy(t, mustParse(t, "rules: []\n"), Subject{Identity: "u", ClientID: "c"})
	assert.False(t, p.AllowPublish("a"))
	assert.False(t, p.AllowSubscribe("a"))
}

func TestTheCacheKeepsDecisionsApart(t *testing.T) {
	r := mustParse(t, `
rules:
  - {permission: allow, action: publish, topics: ["t/+/even"]}
`)
	p := mustPolicy(t, r, Subject{ClientID: "c"})
	// More topics than the cache holds, asked round after round: every
	// answer stays right whether it comes from the cache or the rules.
	for round := 0; round < 3; round++ {
		for i := 0; i < 3*cacheSize; i++ {
			suffix := "odd"
			if i%2 == 0 {
				suffix = "even"
			}
			name := fmt.Sprintf("t/%d/%s", i, suffix)
			require.Equal(t, i%2 == 0, p.AllowPublish(name), name)
			require.Equal(t, i%2 == 0, p.AllowPublish(name), name)
		}
	}
}

// TestACachedPublishDecisionAllocatesNothing holds the hot path of ingest
// allocation-free; it runs under -race too.
func TestACachedPublishDecisionAllocatesNothing(t *testing.T) {
	h := loadHolder(t, fleetRules)
	p, err := h.For(Subject{Identity: "dev-1", ClientID: "c1"})
	require.NoError(t, err)
	topics := []string{"devices/c1/telemetry", "devices/c1/status", "devices/c2/telemetry"}
	for _, name := range topics {
		p.AllowPublish(name)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, name := range topics {
			p.AllowPublish(name)
		}
	})
	assert.Zero(t, allocs)
	for _, name := range topics {
		p.AllowRead(name)
	}
	allocs = testing.AllocsPerRun(1000, func() {
		for _, name := range topics {
			p.AllowRead(name)
		}
	})
	assert.Zero(t, allocs, "nor a cached read decision (delivery)")
}

func TestAPolicyIsSafeForConcurrentUseAcrossReloads(t *testing.T) {
	h := loadHolder(t, `
rules:
  - {permission: allow, action: all, topics: ["devices/%c/#"]}
`)
	p, err := h.For(Subject{ClientID: "c1"})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Go(func() {
			for i := 0; i < 2000; i++ {
				name := fmt.Sprintf("devices/c1/%d", i%(2*cacheSize))
				// Every generation allows the device's own subtree.
				if !p.AllowPublish(name) {
					t.Errorf("%s denied", name)
					return
				}
				if p.AllowSubscribe("devices/#") {
					t.Errorf("devices/# allowed")
					return
				}
			}
		})
	}
	for i := 0; i < 20; i++ {
		writeRules(t, h.Path(), fmt.Sprintf(`
rules:
  - {permission: deny, action: all, topics: ["other/%d"]}
  - {permission: allow, action: all, topics: ["devices/%%c/#"]}
`, i))
		require.NoError(t, h.Reload())
	}
	wg.Wait()
	assert.Equal(t, uint64(21), h.Generation())
}
