package acl

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/pkg/topic"
)

// Subject is who a Policy decides for: one connection.
type Subject struct {
	// Identity is the authenticated identity (the username, or a token's
	// subject); it replaces IdentityPlaceholder. Empty for an anonymous
	// client, which no rule naming identities applies to.
	Identity string
	// ClientID is the MQTT client identifier, as assigned when the client
	// sent none; it replaces ClientIDPlaceholder.
	ClientID string
	// Groups are groups the subject belongs to besides the groups of the
	// rules file that list its identity, e.g. from a token.
	Groups []string
	// Extra are rules of the subject alone, e.g. from a token (see
	// ParseTokenRules), evaluated before the rules of the file. They may not
	// have Identities or Groups.
	Extra []Rule
}

// cacheSize is the number of topic decisions (publish and read) a Policy
// remembers. A device publishes to a few topics and receives on a few; a
// gateway that uses more evaluates the rules on each miss.
const cacheSize = 8

// Policy decides what one subject may publish and subscribe to. Make it once
// per connection (Holder.For) and ask it for every PUBLISH and SUBSCRIBE.
//
// The rules are evaluated in order and the first that matches decides:
// rules of Subject.Extra first, then the rules of the file. With no match
// the answer is no, except in open mode (no rules file, AllowAll) where a
// subject without Extra rules may do everything. A subject with Extra rules
// is held to them in open mode too, and denied what they do not allow.
//
// A Policy made by Holder.For follows the Holder's reloads: on its next
// call after a reload it derives its decisions again from the new rules.
// It is safe for concurrent use.
type Policy struct {
	holder   *Holder // nil: fixed to the rules it was made from
	identity string
	clientID string
	x        *subjectRules // nil for a subject with no groups or rules of its own (most devices)

	mu sync.Mutex // serializes derive when the rules changed
	d  atomic.Pointer[derived]
}

// subjectRules is what a Subject brings besides its identity and client id.
type subjectRules struct {
	groups []string
	extra  []entry // Subject.Extra, substituted
	held   bool    // Subject.Extra had rules: no open mode for this subject
}

// groups returns Subject.Groups.
func (p *Policy) groups() []string {
	if p.x == nil {
		return nil
	}
	return p.x.groups
}

// extra returns the entries of Subject.Extra, substituted.
func (p *Policy) extra() []entry {
	if p.x == nil {
		return nil
	}
	return p.x.extra
}

// held reports that Subject.Extra had rules: no open mode for the subject.
func (p *Policy) held() bool { return p.x != nil && p.x.held }

// derived is what a Policy decides under one generation of rules. Only its
// cache changes after it is made.
type derived struct {
	rules *Rules
	// steps are the runs of entries to evaluate, in order: of the Rules'
	// shared entries or of the policy's own (Policy.extra). A run of
	// adjacent entries is one step: a device under 1,000 rules has about
	// seven. Shared by the policies of subjects to whom the same rules
	// apply (Rules.internSteps); nil for none.
	steps *[]step
	cache [cacheSize]atomic.Pointer[cachedTopic]
	// quota is the subject's publish quota from the rules file, nil for
	// none.
	quota    *Quota
	next     atomic.Uint32 // the cache slot to fill next, round robin
	allowAll bool
}

// step is a run of entries to evaluate: Rules.entries[lo:hi], or with own
// the policy's extra entries [lo:hi]. 12 bytes where a slice header is 24
// and would point into two arrays.
type step struct {
	lo, hi int32
	own    bool
}

// entries returns the entries of s, of the rules or of extra, the
// policy's own.
func (d *derived) entries(s step, extra []entry) []entry {
	if s.own {
		return extra[s.lo:s.hi]
	}
	return d.rules.entries[s.lo:s.hi]
}

// stepList returns the steps of d.
func (d *derived) stepList() []step {
	if d.steps == nil {
		return nil
	}
	return *d.steps
}

// cachedTopic is a publish or read decision remembered.
type cachedTopic struct {
	name  string
	act   acts // actPublish or actSubscribe (read)
	allow bool
}

// newPolicy makes the policy of s under r, following h if it is not nil.
func newPolicy(h *Holder, r *Rules, s Subject) (*Policy, error) {
	p := &Policy{holder: h, identity: s.Identity, clientID: s.ClientID}
	eb := entryBuilder{identity: s.Identity, clientID: s.ClientID}
	for i, x := range s.Extra {
		path := fmt.Sprintf("extra[%d]", i)
		if len(x.Identities) > 0 || len(x.Groups) > 0 {
			return nil, &ParseError{Source: "subject", Path: path, Err: errExtraScope}
		}
		c, field, err := compileRule(x)
		if err != nil {
			return nil, &ParseError{Source: "subject", Path: path + "." + field, Err: err}
		}
		eb.add(&c)
	}
	if len(s.Groups) > 0 || len(s.Extra) > 0 {
		p.x = &subjectRules{groups: slices.Clone(s.Groups)}
		if len(eb.entries) > 0 {
			p.x.extra = eb.finish()
		}
		// Even if placeholders left every extra rule out, the subject is
		// held to them.
		p.x.held = len(s.Extra) > 0
	}
	p.d.Store(r.derive(p))
	return p, nil
}

// current returns the decisions under the current rules, deriving them
// again if the holder's rules changed.
func (p *Policy) current() *derived {
	d := p.d.Load()
	if p.holder != nil && p.holder.cur.Load() != d.rules {
		return p.rederive()
	}
	return d
}

// rederive derives the decisions under the holder's current rules, once
// for all goroutines that noticed the change.
func (p *Policy) rederive() *derived {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.holder.cur.Load()
	d := p.d.Load()
	if d.rules != r {
		d = r.derive(p)
		p.d.Store(d)
	}
	return d
}

// AllowPublish reports whether the subject may publish to the topic name
// name: the first rule for publish whose filter matches name decides. An
// invalid name is not allowed.
//
// It remembers the last few topics it decided: asked again about one, it
// allocates nothing and evaluates no rule.
func (p *Policy) AllowPublish(name string) bool {
	return p.decide(actPublish, name)
}

// AllowRead reports whether the subject may receive a message published to
// the topic name name, through any of its subscriptions: the first rule for
// subscribe whose filter matches name decides, as it would decide a
// SUBSCRIBE to name itself. A subscription granted under earlier rules
// (before a reload, or on an earlier connection of a persistent session)
// may match topics the rules no longer allow; asking this for every
// message delivered stops those at once. An invalid name is not allowed.
//
// It shares AllowPublish's memory of recent topics: asked again about one,
// it allocates nothing and evaluates no rule.
func (p *Policy) AllowRead(name string) bool {
	return p.decide(actSubscribe, name)
}

// decide is AllowPublish (act actPublish) and AllowRead (actSubscribe).
func (p *Policy) decide(act acts, name string) bool {
	d := p.current()
	if d.allowAll {
		return true
	}
	for i := range d.cache {
		if c := d.cache[i].Load(); c != nil && c.name == name && c.act == act {
			return c.allow
		}
	}
	if topic.ValidateName(name) != nil {
		return false
	}
	allow := p.first(d, act, name)
	// Clone: name may share memory with a packet buffer that the cache
	// would keep alive.
	slot := d.next.Add(1) % cacheSize
	d.cache[slot].Store(&cachedTopic{name: strings.Clone(name), act: act, allow: allow})
	return allow
}

// first evaluates the rules for act on the topic name name: the first rule
// for act whose filter matches name decides; none is a denial.
func (p *Policy) first(d *derived, act acts, name string) bool {
	head, _, _ := strings.Cut(name, "/")
	var buf [64]byte
	extra := p.extra()
	for _, st := range d.stepList() {
		s := d.entries(st, extra)
		for i := range s {
			e := &s[i]
			if e.acts&act == 0 || e.disjointHead(head) {
				continue
			}
			if e.matches(buf[:0], p.identity, p.clientID, name) {
				return e.allow
			}
		}
	}
	return false
}

// AllowSubscribe reports whether the subject may subscribe to filter, which
// may be a shared subscription "$share/{group}/{filter}" (the filter inside
// is decided). It is allowed only when every topic name the filter can
// match would be allowed, so it is decided by filter containment, never by
// matching the filter as a topic name: a subject allowed "devices/%c/#" may
// not subscribe to "devices/#", "#" or "+/x/#".
//
// The rules for subscribe are walked in order: a deny rule whose filter
// overlaps filter denies (some name it matches is denied); an allow rule
// whose filter contains filter allows (no earlier rule denies any name it
// matches, and this one allows all of them); an allow rule that only
// overlaps is passed, since a later rule may allow the rest. No decision is
// a denial. That is sound. It is conservative where no single allow rule
// covers the filter before a deny rule touches it: with allow "a/x" and
// allow "a/+", "a/+" is allowed by the second, but with allow "a/x" and
// allow "a/y", "a/+" is refused, and so it is with allow "a/x", deny "a/x",
// allow "a/+" (the deny is shadowed, but it overlaps).
//
// An invalid filter is not allowed, except in open mode.
func (p *Policy) AllowSubscribe(filter string) bool {
	d := p.current()
	if d.allowAll {
		return true
	}
	_, f, _, err := topic.ParseShared(filter)
	if err != nil {
		return false
	}
	head, _, _ := strings.Cut(f, "/")
	wild := head == "+" || head == "#"
	var buf [64]byte
	extra := p.extra()
	for _, st := range d.stepList() {
		s := d.entries(st, extra)
		for i := range s {
			e := &s[i]
			if e.acts&actSubscribe == 0 || (!wild && e.disjointHead(head)) {
				// Different literal first levels: neither overlap nor
				// containment.
				continue
			}
			if e.touches(buf[:0], p.identity, p.clientID, f) {
				// A deny entry overlaps f, or an allow entry contains it.
				return e.allow
			}
		}
	}
	return false
}

// Generation returns the generation of the rules the policy decided under
// last (see Rules.Generation).
func (p *Policy) Generation() uint64 {
	return p.d.Load().rules.gen
}
