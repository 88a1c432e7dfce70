package acl

import (
	"slices"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/pkg/topic"
	"github.com/stretchr/testify/require"
)

// fuzzLevels are the levels fuzzed filters are made of; each byte picks one.
// Rules' filters also take the placeholders (fuzzRuleLevels), which the
// fuzzed subject's identity and client id turn into levels of the names.
var (
	fuzzLevels     = []string{"a", "b", "$a", "+", "#", "a", "+", "b"}
	fuzzRuleLevels = append(slices.Clone(fuzzLevels), IdentityPlaceholder, ClientIDPlaceholder)
)

// The fuzzed subject: its placeholders become levels the names have.
const fuzzIdentity, fuzzClientID = "a", "b"

// fuzzNameLevels are the levels of the names decisions are checked on: the
// literals of fuzzLevels and a fresh value of each kind, which stands for
// every other (see topic.FuzzContainsAndOverlap).
var fuzzNameLevels = []string{"a", "b", "$a", "z", "$z"}

// fuzzFilter reads a filter of up to four levels from b, cut after "#".
func fuzzFilter(b []byte) string { return fuzzFilterOf(fuzzLevels, b) }

// fuzzFilterOf is fuzzFilter over the levels of alphabet.
func fuzzFilterOf(alphabet []string, b []byte) string {
	var levels []string
	for _, c := range b {
		if len(levels) == 4 {
			break
		}
		l := alphabet[int(c)%len(alphabet)]
		levels = append(levels, l)
		if l == "#" {
			break
		}
	}
	return strings.Join(levels, "/")
}

// fuzzNames returns every name of up to five levels over fuzzNameLevels.
func fuzzNames() []string {
	var names []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		for _, l := range fuzzNameLevels {
			name := l
			if depth > 0 {
				name = prefix + "/" + l
			}
			names = append(names, name)
			if depth < 4 {
				gen(name, depth+1)
			}
		}
	}
	gen("", 0)
	return names
}

// reference decides a name the plain way: the first rule for the action with
// a filter that matches the name.
func reference(rules []Rule, action Action, name string) bool {
	for _, r := range rules {
		if r.Action != All && r.Action != action {
			continue
		}
		for _, f := range r.Topics {
			f = strings.NewReplacer(IdentityPlaceholder, fuzzIdentity, ClientIDPlaceholder, fuzzClientID).Replace(f)
			if topic.MatchFilter(f, name) {
				return r.Permission == Allow
			}
		}
	}
	return false
}

// FuzzDecisionsAgreeWithNameByNameMatching checks a policy against the
// plain reading of its rules, name by name: publishing is exactly the
// reference; a subscription allowed is one whose every name the reference
// allows (soundness), and a subscription to a filter without wildcards is
// exactly the reference.
func FuzzDecisionsAgreeWithNameByNameMatching(f *testing.F) {
	f.Add([]byte{0, 3, 0, 4, 0xff, 1, 0, 4}, []byte{0, 4})
	f.Add([]byte{1, 3, 0, 1, 4, 0xff, 0, 3, 4}, []byte{3, 1})
	f.Add([]byte{1, 1, 2, 4, 0xff, 0, 3, 3, 4}, []byte{2, 4})
	// With placeholders: own entries between shared ones, adjacent own
	// rules (one step), a deny of the subject's own subtree.
	f.Add([]byte{7, 0, 8, 4, 0xff, 6, 1, 4, 0xff, 1, 9, 4, 0xff, 7, 8, 4}, []byte{0, 4})
	f.Add([]byte{0, 8, 1, 0xff, 7, 8, 4, 0xff, 7, 9, 3}, []byte{0, 1})
	names := fuzzNames()
	f.Fuzz(func(t *testing.T, spec, sub []byte) {
		// spec: rules separated by 0xff; in each, the first byte is the
		// permission (bit 0) and the action (bits 1-2), the rest a filter.
		var rules []Rule
		for _, part := range strings.Split(string(spec), "\xff") {
			if len(part) < 2 || len(rules) == 6 {
				continue
			}
			r := Rule{Permission: Deny, Action: []Action{Publish, Subscribe, All, All}[part[0]>>1&3], Topics: []string{fuzzFilterOf(fuzzRuleLevels, []byte(part[1:]))}}
			if part[0]&1 == 1 {
				r.Permission = Allow
			}
			rules = append(rules, r)
		}
		filter := fuzzFilter(sub)
		if filter == "" {
			return
		}
		p := &parsed{}
		for _, r := range rules {
			c, _, err := compileRule(r)
			require.NoError(t, err)
			p.rules = append(p.rules, fileRule{rule: c})
		}
		pol, err := build(p).For(Subject{Identity: fuzzIdentity, ClientID: fuzzClientID})
		require.NoError(t, err)
		for _, name := range names {
			if got, want := pol.AllowPublish(name), reference(rules, Publish, name); got != want {
				t.Fatalf("rules %+v: publish %q: %v, the reference says %v", rules, name, got, want)
			}
		}
		allowed := pol.AllowSubscribe(filter)
		if allowed {
			for _, name := range names {
				if topic.MatchFilter(filter, name) && !reference(rules, Subscribe, name) {
					t.Fatalf("rules %+v: subscribe %q allowed, but the reference denies %q", rules, filter, name)
				}
			}
		}
		if !strings.ContainsAny(filter, "+#") {
			if want := reference(rules, Subscribe, filter); allowed != want {
				t.Fatalf("rules %+v: subscribe %q: %v, the reference says %v", rules, filter, allowed, want)
			}
		}
	})
}

// FuzzParseRules feeds the parser arbitrary files: it returns rules or a
// ParseError, never panics, and rules it returns decide without panicking.
func FuzzParseRules(f *testing.F) {
	f.Add([]byte(fleetRules))
	f.Add([]byte("rules: []\n"))
	f.Add([]byte("groups: {a: &x [b, c]}\nrules:\n  - {permission: deny, action: all, topics: [\"%u/%c/#\"], groups: [a], identities: *x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRules("rules.yaml", data)
		if err != nil {
			var pe *ParseError
			require.ErrorAs(t, err, &pe)
			return
		}
		p, err := r.For(Subject{Identity: "b", ClientID: "c", Groups: []string{"a"}})
		require.NoError(t, err)
		p.AllowPublish("b/c/x")
		p.AllowSubscribe("#")
	})
}
