package acl

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

// Permission is what a rule decides: Allow or Deny.
type Permission string

// The permissions of a rule.
const (
	Allow Permission = "allow"
	Deny  Permission = "deny"
)

// Action is what a rule is about: Publish, Subscribe or All (both).
type Action string

// The actions of a rule.
const (
	Publish   Action = "publish"
	Subscribe Action = "subscribe"
	All       Action = "all"
)

// Placeholders a topic filter of a rule may hold as a whole level; each is
// replaced by a value of the Subject (see Subject).
const (
	IdentityPlaceholder = "%u"
	ClientIDPlaceholder = "%c"
)

// Rule is one rule as written in a rules file or a token claim. Rules are
// evaluated in order and the first that matches decides (see Policy).
type Rule struct {
	// Permission is Allow or Deny.
	Permission Permission
	// Action is Publish, Subscribe or All.
	Action Action
	// Topics are topic filters, without a "$share/{group}/" prefix; a level
	// may be a placeholder (IdentityPlaceholder, ClientIDPlaceholder).
	Topics []string
	// Identities, when set, limit the rule to these identities (and to the
	// members of Groups). Only for rules of a rules file.
	Identities []string
	// Groups, when set, limit the rule to the members of these groups (and
	// to Identities). Only for rules of a rules file.
	Groups []string
}

// ParseError is a rules file or a token claim that cannot be used. Its text
// names where the problem is:
//
//	rules.yaml: rules[3].topics[0]: "a/#/b": invalid topic filter: '#' at byte 2 is not the last character (line 12)
type ParseError struct {
	// Source is the file name, or "token" or "subject".
	Source string
	// Path is the field, "rules[3].topics[0]"; empty when the problem is the
	// whole source.
	Path string
	// Line is the line in the file, 0 when unknown.
	Line int
	// Err is the problem; it wraps topic.ErrInvalidFilter for a bad topic
	// filter.
	Err error
}

// Error returns the source, the field, the problem and the line.
func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	if e.Line > 0 {
		b.WriteString(" (line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns Err.
func (e *ParseError) Unwrap() error { return e.Err }

// Errors of rule fields, wrapped in a ParseError.
var (
	errPermission  = errors.New(`want "allow" or "deny"`)
	errAction      = errors.New(`want "publish", "subscribe" or "all"`)
	errNoTopics    = errors.New("no topic filters")
	errShared      = fmt.Errorf("a rule names the filter inside %s{group}/: leave the prefix out", topic.SharePrefix)
	errPlaceholder = fmt.Errorf("placeholders %s and %s must be a whole topic level", IdentityPlaceholder, ClientIDPlaceholder)
)

// acts is a set of actions.
type acts uint8

const (
	actPublish acts = 1 << iota
	actSubscribe
)

// rule is a compiled Rule, without whom it applies to.
type rule struct {
	allow  bool
	acts   acts
	topics []pattern
	// first is where the entries of the rule start in Rules.entries (-1
	// for a subject's own rules, which have none there).
	first int32
}

// pattern is a topic filter of a rule.
type pattern struct {
	filter string
	// placeholders: filter has IdentityPlaceholder or ClientIDPlaceholder
	// levels.
	placeholders bool
}

// entry is one topic filter of a rule: what a Policy evaluates. 24 bytes.
type entry struct {
	// filter is the topic filter; with subst, a rule's filter whose
	// placeholders are substituted for the subject each time the entry is
	// evaluated (substituteFilter), so that the entry serves every subject.
	filter string
	// headLen is the length of the first level of filter, unless wild: a
	// name whose first level differs cannot match, which costs a string
	// comparison to tell.
	headLen uint16
	wild    bool // the first level of filter is "+" or "#"
	allow   bool
	acts    acts
	subst   bool
}

// newEntry returns the entry of filter.
func newEntry(filter string, allow bool, a acts) entry {
	head, _, _ := strings.Cut(filter, "/")
	e := entry{filter: filter, wild: head == "+" || head == "#", allow: allow, acts: a}
	if len(head) > math.MaxUint16 {
		// Longer than any MQTT string, so not from a client; taken as
		// wild, the entry is always matched in full: slower, never wrong.
		e.wild = true
	}
	e.headLen = uint16(len(head))
	return e
}

// newPatternEntry returns the entry of p, a filter of a rule, whose
// placeholders are substituted as it is evaluated. A placeholder in its
// first level leaves that level unknown until then: the entry counts as
// wild.
func newPatternEntry(p pattern, allow bool, a acts) entry {
	e := newEntry(p.filter, allow, a)
	if p.placeholders {
		e.subst = true
		if head, _, _ := strings.Cut(p.filter, "/"); head == IdentityPlaceholder || head == ClientIDPlaceholder {
			e.wild = true
		}
	}
	return e
}

// matches reports whether the filter of e, for the subject
// identity/clientID, matches the topic name name. Placeholders are
// substituted into buf, scratch space of the caller; an allow entry the
// substitution leaves out (substituteFilter) matches nothing.
func (e *entry) matches(buf []byte, identity, clientID, name string) bool {
	f := e.filter
	if e.subst {
		b, ok := substituteFilter(buf, e.filter, identity, clientID, e.allow)
		if !ok {
			return false
		}
		f = string(b) // does not escape: up to 32 bytes on the stack
	}
	return topic.MatchFilter(f, name)
}

// touches reports, for a subscription to the filter f, whether the filter
// of e for the subject contains f (an allow entry: it allows all of f) or
// overlaps it (a deny entry: it denies some of f); see matches.
func (e *entry) touches(buf []byte, identity, clientID, f string) bool {
	ef := e.filter
	if e.subst {
		b, ok := substituteFilter(buf, e.filter, identity, clientID, e.allow)
		if !ok {
			return false
		}
		ef = string(b)
	}
	if e.allow {
		return topic.Contains(ef, f)
	}
	return topic.Overlap(ef, f)
}

// disjointHead reports whether no name whose first level is head can match
// the filter of e.
func (e *entry) disjointHead(head string) bool {
	return !e.wild && (int(e.headLen) != len(head) || e.filter[:e.headLen] != head)
}

// compilePermission checks a permission.
func compilePermission(s string) (allow bool, err error) {
	switch Permission(s) {
	case Allow:
		return true, nil
	case Deny:
		return false, nil
	}
	return false, fmt.Errorf("%q: %w", s, errPermission)
}

// compileAction checks an action.
func compileAction(s string) (acts, error) {
	switch Action(s) {
	case Publish:
		return actPublish, nil
	case Subscribe:
		return actSubscribe, nil
	case All:
		return actPublish | actSubscribe, nil
	}
	return 0, fmt.Errorf("%q: %w", s, errAction)
}

// compilePattern checks a topic filter of a rule and locates its
// placeholders.
func compilePattern(filter string) (pattern, error) {
	if strings.HasPrefix(filter, topic.SharePrefix) {
		return pattern{}, fmt.Errorf("%q: %w", filter, errShared)
	}
	p := pattern{filter: filter}
	if strings.Contains(filter, IdentityPlaceholder) || strings.Contains(filter, ClientIDPlaceholder) {
		p.placeholders = true
		levels := strings.Split(filter, "/")
		check := make([]string, len(levels))
		for i, l := range levels {
			check[i] = l
			switch {
			case l == IdentityPlaceholder || l == ClientIDPlaceholder:
				check[i] = "x" // any literal: the filter must be valid around it
			case strings.Contains(l, IdentityPlaceholder) || strings.Contains(l, ClientIDPlaceholder):
				return pattern{}, fmt.Errorf("%q: %w", filter, errPlaceholder)
			}
		}
		if err := topic.ValidateFilter(strings.Join(check, "/")); err != nil {
			return pattern{}, fmt.Errorf("%q: %w", filter, err)
		}
		return p, nil
	}
	if err := topic.ValidateFilter(filter); err != nil {
		return pattern{}, fmt.Errorf("%q: %w", filter, err)
	}
	return p, nil
}

// compileRule checks r, but not whom it applies to. On error it returns the
// field that is wrong, "topics[2]".
func compileRule(r Rule) (rule, string, error) {
	allow, err := compilePermission(string(r.Permission))
	if err != nil {
		return rule{}, "permission", err
	}
	a, err := compileAction(string(r.Action))
	if err != nil {
		return rule{}, "action", err
	}
	if len(r.Topics) == 0 {
		return rule{}, "topics", errNoTopics
	}
	c := rule{allow: allow, acts: a, topics: make([]pattern, len(r.Topics)), first: -1}
	for i, f := range r.Topics {
		if c.topics[i], err = compilePattern(f); err != nil {
			return rule{}, fmt.Sprintf("topics[%d]", i), err
		}
	}
	return c, "", nil
}

// entryBuilder makes the entries of a subject's own rules (Subject.Extra),
// substituting placeholders. The filters it substitutes share one string:
// one allocation for a policy, not one per filter.
type entryBuilder struct {
	identity, clientID string
	entries            []entry
	buf                []byte
	ends               []int // for an entry with a substituted filter: where it ends in buf; -1 otherwise
}

// add appends the entries of r.
func (b *entryBuilder) add(r *rule) {
	for i := range r.topics {
		p := &r.topics[i]
		if !p.placeholders {
			b.entries = append(b.entries, newEntry(p.filter, r.allow, r.acts))
			b.ends = append(b.ends, -1)
			continue
		}
		buf, ok := substituteFilter(b.buf, p.filter, b.identity, b.clientID, r.allow)
		if !ok {
			continue
		}
		b.buf = buf
		b.entries = append(b.entries, entry{allow: r.allow, acts: r.acts})
		b.ends = append(b.ends, len(b.buf))
	}
}

// finish returns the entries, their filters filled in.
func (b *entryBuilder) finish() []entry {
	all := string(b.buf)
	start := 0
	for i, end := range b.ends {
		if end >= 0 {
			e := &b.entries[i]
			*e = newEntry(all[start:end], e.allow, e.acts)
			start = end
		}
	}
	return b.entries
}

// substituteFilter appends filter, a filter of a rule, with its
// placeholders (whole levels) replaced to buf.
//
// A value that is empty or holds "/", "+", "#" or NUL would change the shape
// of the filter (a client id "#" would turn "devices/%c/#" into
// "devices/#/#", an identity "a/b" would add a level), so it must never
// widen what the rule allows: an allow filter with such a value is left out
// (ok false, buf unchanged), as mosquitto does; a deny filter gets "+" at
// that level instead, which denies at least what any value there would have.
func substituteFilter(buf []byte, filter, identity, clientID string, allow bool) ([]byte, bool) {
	n := len(buf)
	for i, rest := 0, filter; ; i++ {
		l, more, found := strings.Cut(rest, "/")
		if i > 0 {
			buf = append(buf, '/')
		}
		v := l
		switch l {
		case IdentityPlaceholder:
			v = identity
		case ClientIDPlaceholder:
			v = clientID
		default:
			buf = append(buf, l...)
			if !found {
				return buf, true
			}
			rest = more
			continue
		}
		if v == "" || strings.ContainsAny(v, "/+#\x00") {
			if allow {
				return buf[:n], false
			}
			v = "+"
		}
		buf = append(buf, v...)
		if !found {
			return buf, true
		}
		rest = more
	}
}
