package topic

import "strings"

// Contains reports whether the topic filter outer matches every topic name
// that the topic filter inner matches, so that a decision made for outer
// holds for everything a subscription to inner can receive. Authorization
// uses it to allow a SUBSCRIBE: matching inner as if it were a topic name
// would let "devices/#" through a rule for "devices/+/#".
//
// Both filters must be valid and without a "$share/{group}/" prefix (see
// ParseShared). Filters starting with a wildcard do not match topic names
// starting with "$" [MQTT-4.7.2-1], so "#" does not contain "$SYS/x". The
// answer is exact, not only safe: when it is false, some topic name is
// matched by inner and not by outer. It allocates nothing.
func Contains(outer, inner string) bool {
	// Every name inner matches begins with "$"; outer matches none of them.
	if dollarFirst(inner) && wildcardFirst(outer) {
		return false // [MQTT-4.7.2-1]
	}
	for first := true; ; first = false {
		o, orest, omore := strings.Cut(outer, "/")
		if o == "#" {
			return true // this level and everything below it
		}
		i, irest, imore := strings.Cut(inner, "/")
		if i == "#" {
			// inner "#" matches the parent level and any number of levels
			// below it; outer, with a level here that is not "#", needs at
			// least one more level. Except as the whole filter: a name has
			// at least one level, so "#" and "+/#" match the same names.
			return first && o == "+" && orest == "#"
		}
		// A literal outer level covers only itself, not an inner "+".
		if o != "+" && o != i {
			return false
		}
		switch {
		case !omore && !imore:
			return true
		case !imore:
			// inner ends here; outer matches the same names only if all it
			// has left is "#", which matches its parent level: "a/#"
			// contains "a" (section 4.7.1.2).
			return orest == "#"
		case !omore:
			// outer ends here; inner goes on, so it matches longer names.
			return false
		}
		outer, inner = orest, irest
	}
}

// Overlap reports whether some topic name is matched by both topic filters
// a and b. Authorization uses it to refuse a SUBSCRIBE that a deny rule
// touches anywhere: "devices/#" overlaps "+/secret".
//
// Both filters must be valid and without a "$share/{group}/" prefix. As in
// Contains, [MQTT-4.7.2-1] applies: "+/x" and "$SYS/x" do not overlap. The
// answer is exact. It allocates nothing.
func Overlap(a, b string) bool {
	if (dollarFirst(a) && wildcardFirst(b)) || (dollarFirst(b) && wildcardFirst(a)) {
		return false // [MQTT-4.7.2-1]
	}
	for {
		x, xrest, xmore := strings.Cut(a, "/")
		y, yrest, ymore := strings.Cut(b, "/")
		if x == "#" || y == "#" {
			// "#" matches any rest of a name, and the other filter matches
			// at least one.
			return true
		}
		if x != "+" && y != "+" && x != y {
			return false
		}
		switch {
		case !xmore && !ymore:
			return true
		case !xmore:
			// a ends here: the name ends here too, which b allows only if
			// all it has left is "#".
			return yrest == "#"
		case !ymore:
			return xrest == "#"
		}
		a, b = xrest, yrest
	}
}

// dollarFirst reports whether filter's first level is a literal beginning
// with "$", so that every name it matches begins with "$".
func dollarFirst(filter string) bool {
	return strings.HasPrefix(filter, "$")
}

// wildcardFirst reports whether filter's first level is "+" or "#". In a
// valid filter a wildcard occupies a whole level, so the first byte tells.
func wildcardFirst(filter string) bool {
	return strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")
}
