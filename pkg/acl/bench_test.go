package acl

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// The fleet of the benchmarks: 100,000 identities in 100 groups, and 1,000
// rules: 10 for everyone, 490 for a group each, 490 for 100 identities
// each, and last the rule that lets each device own its subtree.
const (
	benchIdentities = 100_000
	benchGroups     = 100
)

// benchIdentity names identity i of the fleet.
func benchIdentity(i int) string { return fmt.Sprintf("dev-%06d", i) }

var fleetFile = sync.OnceValue(func() string {
	var b strings.Builder
	b.WriteString("groups:\n")
	for g := 0; g < benchGroups; g++ {
		fmt.Fprintf(&b, "  fleet-%02d:\n", g)
		for i := g; i < benchIdentities; i += benchGroups {
			fmt.Fprintf(&b, "    - %s\n", benchIdentity(i))
		}
	}
	b.WriteString("rules:\n")
	n := 0
	rule := func(perm, action, topic, scope string) {
		fmt.Fprintf(&b, "  - {permission: %s, action: %s, topics: [%q]%s}\n", perm, action, topic, scope)
		n++
	}
	rule("deny", "publish", "$SYS/#", "")
	for i := 1; i < 10; i++ {
		rule("deny", "all", fmt.Sprintf("restricted/%d/#", i), "")
	}
	for k := 0; k < 980; k++ {
		if k%2 == 0 {
			rule("allow", "all", fmt.Sprintf("tenants/t%03d/%%u/#", k), fmt.Sprintf(", groups: [fleet-%02d]", k%benchGroups))
			continue
		}
		ids := make([]string, 0, 100)
		for i := 0; i < 100; i++ {
			ids = append(ids, benchIdentity((k*100+i)%benchIdentities))
		}
		rule("allow", "subscribe", fmt.Sprintf("regions/r%03d/#", k), ", identities: ["+strings.Join(ids, ", ")+"]")
	}
	for n < 999 {
		rule("deny", "all", fmt.Sprintf("legacy/%d/#", n), "")
	}
	rule("allow", "all", "devices/%u/#", "")
	return b.String()
})

// fleetHolder loads the fleet's rules file.
func fleetHolder(b *testing.B) *Holder {
	b.Helper()
	h := loadHolder(b, fleetFile())
	require.Equal(b, 1000, h.Rules().Len())
	require.Equal(b, benchIdentities, h.Rules().Identities())
	return h
}

func BenchmarkAllowPublish(b *testing.B) {
	h := fleetHolder(b)
	id := benchIdentity(42_424)
	subject := Subject{Identity: id, ClientID: id}
	own := []string{"devices/" + id + "/telemetry", "devices/" + id + "/status", "devices/" + id + "/events/alarm"}

	run := func(b *testing.B, p *Policy, topics []string) {
		b.Helper()
		for _, name := range topics {
			if !p.AllowPublish(name) {
				b.Fatalf("%s denied", name)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			p.AllowPublish(topics[i%len(topics)])
		}
	}

	b.Run("no-authorization", func(b *testing.B) {
		p, err := AllowAll().For(subject)
		require.NoError(b, err)
		run(b, p, own)
	})
	b.Run("cached", func(b *testing.B) {
		p, err := h.For(subject)
		require.NoError(b, err)
		run(b, p, own)
	})
	b.Run("cached-parallel", func(b *testing.B) {
		// Policies of many devices used at once, as by the read goroutines
		// of many connections.
		b.ReportAllocs()
		var next sync.Mutex
		k := 0
		b.RunParallel(func(pb *testing.PB) {
			next.Lock()
			k++
			id := benchIdentity(k * 997 % benchIdentities)
			next.Unlock()
			p, err := h.For(Subject{Identity: id, ClientID: id})
			if err != nil {
				b.Error(err)
				return
			}
			name := "devices/" + id + "/telemetry"
			for pb.Next() {
				if !p.AllowPublish(name) {
					b.Error("denied")
					return
				}
			}
		})
	})
	b.Run("uncached", func(b *testing.B) {
		// A gateway publishing for more sub-devices than the cache holds.
		p, err := h.For(subject)
		require.NoError(b, err)
		topics := make([]string, 4*cacheSize)
		for i := range topics {
			topics[i] = fmt.Sprintf("devices/%s/sub/%d/telemetry", id, i)
		}
		run(b, p, topics)
	})
	b.Run("uncached-1000-rules-for-everyone", func(b *testing.B) {
		// The worst case of a miss: every rule applies and only the last
		// matches.
		var f strings.Builder
		f.WriteString("rules:\n")
		for i := 0; i < 999; i++ {
			fmt.Fprintf(&f, "  - {permission: deny, action: all, topics: [\"legacy/%d/#\"]}\n", i)
		}
		f.WriteString("  - {permission: allow, action: all, topics: [\"devices/%u/#\"]}\n")
		p, err := mustParse(b, f.String()).For(subject)
		require.NoError(b, err)
		topics := make([]string, 4*cacheSize)
		for i := range topics {
			topics[i] = fmt.Sprintf("devices/%s/sub/%d/telemetry", id, i)
		}
		run(b, p, topics)
	})
}

func BenchmarkAllowSubscribe(b *testing.B) {
	h := fleetHolder(b)
	id := benchIdentity(42_424)
	p, err := h.For(Subject{Identity: id, ClientID: id})
	require.NoError(b, err)
	filter := "devices/" + id + "/commands/#"
	require.True(b, p.AllowSubscribe(filter))
	b.ReportAllocs()
	for b.Loop() {
		p.AllowSubscribe(filter)
	}
}

// BenchmarkFor is the cost of a CONNECT (and of a reconnect storm): the
// policy of one device of the fleet.
func BenchmarkFor(b *testing.B) {
	h := fleetHolder(b)
	subjects := make([]Subject, 4096)
	for i := range subjects {
		id := benchIdentity(i * 24_413 % benchIdentities)
		subjects[i] = Subject{Identity: id, ClientID: id}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := h.For(subjects[i%len(subjects)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseRules is the cost of a (re)load of the fleet's file.
func BenchmarkParseRules(b *testing.B) {
	data := []byte(fleetFile())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRules("rules.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowRead is the check of every message written to a
// subscriber (docs/security.md): a device reading its own commands (a few
// topics, cached), and a backend reading every device's telemetry, where
// nearly every message is a topic the cache has not seen.
func BenchmarkAllowRead(b *testing.B) {
	backendRule := "  - {permission: allow, action: subscribe, topics: [\"devices/+/telemetry\"], identities: [backend-1]}\n"
	h := loadHolder(b, fleetFile()+backendRule)
	id := benchIdentity(42_424)
	b.Run("no-authorization", func(b *testing.B) {
		p, err := AllowAll().For(Subject{Identity: id, ClientID: id})
		require.NoError(b, err)
		name := "devices/" + id + "/commands/reboot"
		b.ReportAllocs()
		for b.Loop() {
			p.AllowRead(name)
		}
	})
	b.Run("device-cached", func(b *testing.B) {
		p, err := h.For(Subject{Identity: id, ClientID: id})
		require.NoError(b, err)
		topics := []string{"devices/" + id + "/commands/reboot", "devices/" + id + "/commands/config"}
		for _, name := range topics {
			require.True(b, p.AllowRead(name))
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			p.AllowRead(topics[i%len(topics)])
		}
	})
	b.Run("backend-every-device", func(b *testing.B) {
		p, err := h.For(Subject{Identity: "backend-1", ClientID: "backend-1"})
		require.NoError(b, err)
		topics := make([]string, 4096)
		for i := range topics {
			topics[i] = "devices/" + benchIdentity(i*24_413%benchIdentities) + "/telemetry"
		}
		require.True(b, p.AllowRead(topics[0]))
		require.False(b, p.AllowRead("devices/x/status"))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			p.AllowRead(topics[i%len(topics)])
		}
	})
}
