package topic

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestContains(t *testing.T) {
	cases := []struct {
		name         string
		outer, inner string
		want         bool
	}{
		{"a filter contains itself", "devices/c1/#", "devices/c1/#", true},
		{"a literal filter contains itself", "a/b", "a/b", true},
		{"a multi-level wildcard contains the levels below it", "devices/c1/#", "devices/c1/telemetry", true},
		{"a multi-level wildcard contains its parent level", "devices/c1/#", "devices/c1", true},
		{"a multi-level wildcard contains a deeper one", "devices/#", "devices/c1/#", true},
		{"a multi-level wildcard contains single-level wildcards below it", "devices/#", "devices/+/+", true},
		{"a device's subtree does not contain the whole tree", "devices/c1/#", "devices/#", false},
		{"a device's subtree does not contain every filter", "devices/c1/#", "#", false},
		{"a device's subtree does not contain a leading single-level wildcard", "devices/c1/#", "+/c1/#", false},
		{"a device's subtree does not contain another device's", "devices/c1/#", "devices/c2/#", false},
		{"a literal level does not contain a single-level wildcard", "devices/c1/x", "devices/+/x", false},
		{"a single-level wildcard contains a literal level", "devices/+/x", "devices/c1/x", true},
		{"a single-level wildcard contains a single-level wildcard", "devices/+/x", "devices/+/x", true},
		{"a single-level wildcard contains an empty level", "a/+/b", "a//b", true},
		{"a single-level wildcard does not contain a multi-level wildcard", "devices/+", "devices/#", false},
		{"a single-level wildcard with # below does not contain the parent of its level", "a/+/#", "a/#", false},
		{"a filter does not contain a longer one", "a/b", "a/b/c", false},
		{"a filter does not contain a shorter one", "a/b/c", "a/b", false},
		{"a filter does not contain its parent level with a multi-level wildcard", "a/b", "a/b/#", false},
		{"a multi-level wildcard contains every filter not starting with $", "#", "+/x/#", true},
		{"a leading single-level wildcard above # contains every filter not starting with $", "+/#", "#", true},
		{"a multi-level wildcard does not contain $SYS topics", "#", "$SYS/x", false},
		{"a multi-level wildcard does not contain all $SYS topics", "#", "$SYS/#", false},
		{"a leading single-level wildcard does not contain $ topics", "+/x", "$SYS/x", false},
		{"a $ filter contains its own $ topics", "$SYS/#", "$SYS/broker/load", true},
		{"a $ filter does not contain non-$ topics", "$SYS/#", "#", false},
		{"a $ filter does not contain a leading single-level wildcard", "$SYS/#", "+/#", false},
		{"a wildcard below a $ level contains $ topics", "$SYS/+", "$SYS/x", true},
		{"a $ level below the first is an ordinary literal", "+/$x", "a/$x", true},
		{"an empty first level is an ordinary literal", "+/a", "/a", true},
		{"the empty filter level does not contain a named one", "a//b", "a/x/b", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.NoError(t, ValidateFilter(c.outer))
			require.NoError(t, ValidateFilter(c.inner))
			assert.Equal(t, c.want, Contains(c.outer, c.inner))
			assert.Equal(t, c.want, bruteContains(c.outer, c.inner), "brute force disagrees with the table")
		})
	}
}

func TestOverlap(t *testing.T) {
	cases := []struct {
		name string
		a, b string
		want bool
	}{
		{"a filter overlaps itself", "a/b", "a/b", true},
		{"different literals do not overlap", "a/b", "a/c", false},
		{"a single-level wildcard overlaps a literal", "a/+", "a/b", true},
		{"a multi-level wildcard overlaps its parent level", "a/#", "a", true},
		{"a multi-level wildcard overlaps a deeper filter", "a/#", "a/b/c/+", true},
		{"filters of different lengths do not overlap", "a/b", "a/b/c", false},
		{"a longer filter ending in # overlaps a shorter literal", "a/b/#", "a/b", true},
		{"single-level wildcards at different places overlap", "+/b/c", "a/+/c", true},
		{"a deny on a subtree overlaps the whole tree", "devices/c1/#", "#", true},
		{"a deny on a subtree overlaps a wildcard over devices", "devices/c1/#", "devices/+/telemetry", true},
		{"a deny on one device does not overlap another device", "devices/c1/#", "devices/c2/#", false},
		{"a multi-level wildcard does not overlap $ topics", "#", "$SYS/#", false},
		{"a leading single-level wildcard does not overlap $ topics", "+/x", "$SYS/x", false},
		{"two $ filters overlap", "$SYS/#", "$SYS/broker/+", true},
		{"two different $ filters do not overlap", "$SYS/#", "$other/#", false},
		{"an empty first level overlaps a leading wildcard", "/a", "+/a", true},
		{"two leading wildcards overlap", "+", "#", true},
		{"a single level does not overlap two levels", "+", "+/+", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.NoError(t, ValidateFilter(c.a))
			require.NoError(t, ValidateFilter(c.b))
			assert.Equal(t, c.want, Overlap(c.a, c.b))
			assert.Equal(t, c.want, Overlap(c.b, c.a), "overlap is symmetric")
			assert.Equal(t, c.want, bruteOverlap(c.a, c.b), "brute force disagrees with the table")
		})
	}
}

// TestContainsAndOverlapAgreeWithMatchingOnEverySmallFilter checks every
// pair of filters of up to three levels over a small alphabet against brute
// force, in both directions.
func TestContainsAndOverlapAgreeWithMatchingOnEverySmallFilter(t *testing.T) {
	var filters []string
	var gen func(prefix []string)
	gen = func(prefix []string) {
		if len(prefix) > 0 {
			if f := strings.Join(prefix, "/"); f != "" {
				filters = append(filters, f)
			}
			if prefix[len(prefix)-1] == "#" || len(prefix) == 3 {
				return
			}
		}
		for _, l := range []string{"a", "$a", "+", "#", ""} {
			gen(append(prefix, l))
		}
	}
	gen(nil)
	for _, a := range filters {
		require.NoError(t, ValidateFilter(a))
		for _, b := range filters {
			if got, want := Contains(a, b), bruteContains(a, b); got != want {
				t.Errorf("Contains(%q, %q) = %v, brute force says %v", a, b, got, want)
			}
			if got, want := Overlap(a, b), bruteOverlap(a, b); got != want {
				t.Errorf("Overlap(%q, %q) = %v, brute force says %v", a, b, got, want)
			}
		}
	}
}

func TestContainsAndOverlapAllocateNothing(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		Contains("devices/+/#", "devices/c1/telemetry")
		Overlap("devices/c1/#", "+/+/telemetry")
	})
	assert.Zero(t, allocs)
}

// fuzzLevels are the levels FuzzContainsAndOverlap builds filters from: each
// input byte picks one. "$a" below the first level is an ordinary literal.
var fuzzLevels = []string{"a", "b", "", "$a", "+", "#", "+", "a"}

// fuzzFilter turns bytes into a valid filter of at most five levels, cut after
// a "#"; ok is false for no bytes, or the one invalid filter, "".
func fuzzFilter(b []byte) (string, bool) {
	var levels []string
	for _, c := range b {
		if len(levels) == 5 {
			break
		}
		l := fuzzLevels[int(c)%len(fuzzLevels)]
		levels = append(levels, l)
		if l == "#" {
			break
		}
	}
	f := strings.Join(levels, "/")
	return f, f != ""
}

// FuzzContainsAndOverlap checks Contains and Overlap against brute-force
// matching. bruteContains and bruteOverlap are exact (see topicsFor), so the
// fuzz asserts equality, which holds the two properties that authorization
// relies on: Contains(F, S) implies every name S matches is matched by F, and
// !Overlap(F, S) implies no name is matched by both.
func FuzzContainsAndOverlap(f *testing.F) {
	f.Add([]byte{0, 1, 5}, []byte{0, 5})
	f.Add([]byte{5}, []byte{3, 0})
	f.Add([]byte{4, 0, 5}, []byte{0, 4, 4})
	f.Add([]byte{3, 5}, []byte{4, 5})
	f.Add([]byte{2, 2, 4}, []byte{4, 2})
	f.Fuzz(func(t *testing.T, x, y []byte) {
		a, ok := fuzzFilter(x)
		if !ok {
			return
		}
		b, ok := fuzzFilter(y)
		if !ok {
			return
		}
		require.NoError(t, ValidateFilter(a))
		require.NoError(t, ValidateFilter(b))
		if got, want := Contains(a, b), bruteContains(a, b); got != want {
			t.Fatalf("Contains(%q, %q) = %v, brute force says %v", a, b, got, want)
		}
		if got, want := Overlap(a, b), bruteOverlap(a, b); got != want {
			t.Fatalf("Overlap(%q, %q) = %v, brute force says %v", a, b, got, want)
		}
	})
}

// topicsFor generates the topic names that decide how filters a and b
// relate: every name of up to one level more than the longer filter, whose
// levels are the literals of the filters plus one fresh value and one fresh
// "$" value. That is exact: in a name that tells the filters apart (or that
// both match) a level that is none of the literals can be replaced by the
// fresh value of its kind, and levels past the longer filter's length plus
// one dropped, and the name still does.
func topicsFor(a, b string) []string {
	var alphabet []string
	maxLevels := 0
	for _, f := range []string{a, b} {
		levels := strings.Split(f, "/")
		maxLevels = max(maxLevels, len(levels))
		for _, l := range levels {
			if l != "+" && l != "#" && !slices.Contains(alphabet, l) {
				alphabet = append(alphabet, l)
			}
		}
	}
	fresh := "fresh"
	for slices.Contains(alphabet, fresh) || slices.Contains(alphabet, "$"+fresh) {
		fresh += "_"
	}
	alphabet = append(alphabet, fresh, "$"+fresh)
	var names []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		for _, l := range alphabet {
			name := l
			if depth > 0 {
				name = prefix + "/" + l
			}
			names = append(names, name)
			if depth+1 < maxLevels+1 {
				gen(name, depth+1)
			}
		}
	}
	gen("", 0)
	return names
}

// bruteContains reports whether every generated name that inner matches is
// matched by outer.
func bruteContains(outer, inner string) bool {
	for _, name := range topicsFor(outer, inner) {
		if MatchFilter(inner, name) && !MatchFilter(outer, name) {
			return false
		}
	}
	return true
}

// bruteOverlap reports whether some generated name is matched by both.
func bruteOverlap(a, b string) bool {
	for _, name := range topicsFor(a, b) {
		if MatchFilter(a, name) && MatchFilter(b, name) {
			return true
		}
	}
	return false
}
