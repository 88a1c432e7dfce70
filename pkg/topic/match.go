package topic

import (
	"slices"
	"strings"
	"sync"
)

// Result is what a topic name matched in an Index: one ClientMatch per
// client with matching non-shared subscriptions, and one GroupMatch per
// matching shared subscription.
//
// A Result may be reused through Index.MatchInto, which keeps its buffers:
// the slices it holds are then valid until the next MatchInto or Reset. It
// is not safe for concurrent use.
type Result struct {
	// Clients has one entry per client, in no particular order.
	Clients []ClientMatch
	// Groups has one entry per matching shared subscription, in no
	// particular order.
	Groups []GroupMatch

	ids     []uint32       // backing array of every Identifiers
	filters []string       // backing array of every Filters
	members []Subscription // backing array of every Members
	scratch *scratch       // kept by MatchInto; nil in a Result from Match
}

// scratch holds the working memory of one match. Match borrows one from
// scratchPool, MatchInto keeps one in its Result, so that neither allocates
// it per call.
type scratch struct {
	hits     []entry          // matching non-shared subscriptions, copied
	filters  []string         // filters[i] is the filter of hits[i]
	hcounts  []int32          // hits per client
	groups   []*group         // matching shared subscriptions; read under the lock only
	slots    []int32          // hits[i] belongs to client slots[i]
	firsts   []int32          // the first hit of each client
	counts   []int32          // identifiers per client
	byClient map[string]int32 // ClientID to client, for large results
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// ClientMatch is one delivery to one client: the aggregate of all of its
// non-shared subscriptions that match the topic name.
//
// fleetgate sends a client one copy of a message however many of its
// subscriptions overlap. MQTT 5 would allow one copy per subscription
// ([MQTT-3.3.4-2]: the Server MAY deliver further copies), but one copy keeps
// the delivery, its packet id and its ordering per session simple, costs one
// slot of the client's Receive Maximum instead of several, and is what MQTT
// 3.1.1 clients expect. The fields follow from that choice:
type ClientMatch struct {
	// ClientID identifies the session.
	ClientID string
	// QoS is the largest granted QoS of the matching subscriptions: the
	// Server MUST deliver the message to the Client respecting the maximum
	// QoS of all the matching subscriptions [MQTT-3.3.4-2] (v5) /
	// [MQTT-3.3.5-1] (v3.1.1). The message goes out at the lower of this and
	// its own QoS.
	QoS byte
	// RetainAsPublished is true if any matching subscription asked for it.
	// With one copy the RETAIN flag cannot follow each subscription
	// ([MQTT-3.3.1-12], [MQTT-3.3.1-13]); a client (typically a bridge) asks
	// for the flag as published to learn something it cannot recover once
	// cleared, while a set flag tells a client that did not ask nothing
	// harmful, so the flag is kept.
	RetainAsPublished bool
	// Identifiers are the Subscription Identifiers of every matching
	// subscription that has one, in no particular order: if the Server sends
	// a single copy of the message it MUST include in the PUBLISH packet the
	// Subscription Identifiers for all matching subscriptions which have a
	// Subscription Identifiers, their order is not significant
	// [MQTT-3.3.4-4] (and [MQTT-3.3.4-3]). An identifier that several
	// matching subscriptions share appears once per subscription, as the
	// spec says the PUBLISH will then carry "multiple identical Subscription
	// Identifiers" (section 3.3.4). nil when there are none. Its capacity is
	// its length, so appending to it never overwrites another client's.
	Identifiers []uint32
	// Filters are the filters of the matching subscriptions, one per
	// subscription, so that the receiver of the delivery can check the
	// session still holds one of them. Its capacity is its length.
	Filters []string
}

// GroupMatch is one matching shared subscription. The caller delivers the
// message to ONE of its members, the way MQTT 5 section 4.8.2 shares a
// subscription's messages among its sessions, at that member's granted QoS
// [MQTT-4.8.2-3] and with that member's Subscription Identifier alone
// (section 3.3.4: for a shared subscription only the identifiers from the
// receiving client's SUBSCRIBE are returned).
//
// A shared subscription is identified by its Group and Filter together:
// "$share/g/a/+" and "$share/g/a/#" are two groups even though their names
// agree, and a message matching both goes to one member of each. A client's
// shared and non-shared subscriptions never merge.
type GroupMatch struct {
	Group  string
	Filter string
	// Members are the subscriptions of the group, in no particular order.
	// Never empty. Its capacity is its length.
	Members []Subscription
}

// Empty reports whether nothing matched.
func (r *Result) Empty() bool {
	return len(r.Clients) == 0 && len(r.Groups) == 0
}

// Reset empties r for reuse, keeping its buffers.
func (r *Result) Reset() {
	// Clear, not just truncate, so the buffers keep no client alive.
	clear(r.Clients)
	clear(r.Groups)
	clear(r.members)
	clear(r.filters)
	r.filters = r.filters[:0]
	r.Clients = r.Clients[:0]
	r.Groups = r.Groups[:0]
	r.ids = r.ids[:0]
	r.members = r.members[:0]
}

// Match returns the subscriptions topic matches. topic must be a valid topic
// name (ValidateName); publisher is the ClientID of the session that
// published the message, or empty when it did not come from a session (a
// backend's cloud-to-device record).
//
// Matching follows MQTT section 4.7: "+" matches exactly one level, an empty
// one included; "#" matches its parent level and any number of levels below
// it; levels are compared byte for byte, without normalisation
// [MQTT-4.7.3-4]; a filter beginning with "+" or "#" does not match a topic
// name beginning with "$" [MQTT-4.7.2-1].
//
// No Local is applied here, before the per-client aggregation of
// ClientMatch: a subscription of publisher with NoLocal set is left out as
// if it did not exist, so it adds neither its QoS nor its identifier to a
// copy that another, overlapping subscription still sends [MQTT-3.8.3-3].
//
// Match allocates only the result (at most four slices, each of its exact
// size); MatchInto with a reused Result allocates nothing.
func (ix *Index) Match(topic, publisher string) Result {
	var r Result
	s := scratchPool.Get().(*scratch)
	ix.match(&r, s, topic, publisher)
	s.reset()
	scratchPool.Put(s)
	return r
}

// MatchInto is Match writing into r, which it resets first. Once r's buffers
// have grown to the sizes the results need, it allocates nothing.
func (ix *Index) MatchInto(r *Result, topic, publisher string) {
	r.Reset()
	if r.scratch == nil {
		r.scratch = new(scratch)
	}
	ix.match(r, r.scratch, topic, publisher)
	r.scratch.reset()
}

// match walks the trie and builds r, under the read lock: the groups the
// walk collects point into the index.
func (ix *Index) match(r *Result, s *scratch, topic, publisher string) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	m := matcher{s: s, dollar: strings.HasPrefix(topic, "$"), publisher: publisher}
	m.walk(&ix.root, topic, true)
	r.addClients(s)
	r.addGroups(s.groups, publisher)
}

// matcher walks the trie for one match.
type matcher struct {
	s         *scratch
	dollar    bool // the topic name begins with "$"
	publisher string
}

// walk matches the levels of rest, the part of the topic name not yet
// matched, against the next levels of n. rest holds at least one level,
// possibly an empty one. first is true for the first level of the name.
// It allocates nothing per node: levels are substrings of the name, what
// matched is appended to the scratch buffers, and the recursion is only as
// deep as the name has levels that the trie follows.
//
// The Index's read lock must be held.
func (m *matcher) walk(n *node, rest string, first bool) {
	level, tail, more := strings.Cut(rest, "/")
	// The Server MUST NOT match Topic Filters starting with a wildcard
	// character (# or +) with Topic Names beginning with a $ character
	// [MQTT-4.7.2-1].
	if !first || !m.dollar {
		// "#" matches this level and every level below it.
		m.collect(n.hash)
		if n.plus != nil {
			// "+" matches exactly one level, an empty one too.
			m.next(n.plus, tail, more)
		}
	}
	if c := n.literal(level); c != nil {
		m.next(c, tail, more)
	}
}

// next continues at c, whose level matched: it collects c's subscriptions if
// that was the name's last level, and walks on otherwise.
func (m *matcher) next(c *node, tail string, more bool) {
	if more {
		m.walk(c, tail, false)
		return
	}
	m.collect(c.exact)
	// The multi-level wildcard represents the parent and any number of child
	// levels: "sport/#" matches "sport" (section 4.7.1.2; [MQTT-4.7.1-1] (v5)
	// / [MQTT-4.7.1-2] (v3.1.1)).
	m.collect(c.hash)
}

// collect gathers the subscriptions of l, which may be nil.
func (m *matcher) collect(l *leaf) {
	if l == nil {
		return
	}
	for _, e := range l.subs.items {
		if e.flags&flagNoLocal != 0 && e.clientID == m.publisher {
			continue // [MQTT-3.8.3-3]
		}
		m.s.hits = append(m.s.hits, e)
		m.s.filters = append(m.s.filters, l.filter)
	}
	if l.groups != nil {
		m.s.groups = append(m.s.groups, *l.groups...)
	}
}

// linearLimit is the number of hits up to which addClients finds a client by
// scanning the clients found so far rather than through a map.
const linearLimit = 16

// addClients aggregates s.hits into r.Clients, one entry per client.
func (r *Result) addClients(s *scratch) {
	hits := s.hits
	if len(hits) == 0 {
		return
	}
	useMap := len(hits) > linearLimit
	if useMap {
		if s.byClient == nil {
			s.byClient = make(map[string]int32, len(hits))
		}
	}
	// First pass: which client each hit belongs to, and how many identifiers
	// each client gets, so that the output is allocated at its exact size.
	total := 0
	for i, h := range hits {
		slot := -1
		if useMap {
			if k, ok := s.byClient[h.clientID]; ok {
				slot = int(k)
			}
		} else {
			for k, f := range s.firsts {
				if hits[f].clientID == h.clientID {
					slot = k
					break
				}
			}
		}
		if slot < 0 {
			slot = len(s.firsts)
			s.firsts = append(s.firsts, int32(i))
			s.counts = append(s.counts, 0)
			s.hcounts = append(s.hcounts, 0)
			if useMap {
				s.byClient[h.clientID] = int32(slot)
			}
		}
		s.slots = append(s.slots, int32(slot))
		s.hcounts[slot]++
		if h.identifier != 0 {
			s.counts[slot]++
			total++
		}
	}
	n := len(s.firsts)
	r.Clients = slices.Grow(r.Clients[:0], n)[:n]
	// Every client's identifiers side by side in one array: one allocation
	// (none on reuse) instead of one per client.
	r.ids = slices.Grow(r.ids[:0], total)[:total]
	r.filters = slices.Grow(r.filters[:0], len(hits))[:len(hits)]
	off, foff := int32(0), int32(0)
	for k, f := range s.firsts {
		r.Clients[k] = ClientMatch{ClientID: hits[f].clientID}
		if c := s.counts[k]; c > 0 {
			r.Clients[k].Identifiers = r.ids[off : off : off+c]
			off += c
		}
		c := s.hcounts[k]
		r.Clients[k].Filters = r.filters[foff : foff : foff+c]
		foff += c
	}
	// Second pass: merge.
	for i, h := range hits {
		cm := &r.Clients[s.slots[i]]
		cm.QoS = max(cm.QoS, h.qos) // [MQTT-3.3.4-2]
		if h.flags&flagRetainAsPublished != 0 {
			cm.RetainAsPublished = true // any
		}
		if h.identifier != 0 {
			cm.Identifiers = append(cm.Identifiers, h.identifier) // within capacity: [MQTT-3.3.4-4]
		}
		cm.Filters = append(cm.Filters, s.filters[i]) // within capacity
	}
}

// addGroups copies the members of the matching shared subscriptions into
// r.Groups.
//
// The Index's read lock must be held: groups point into the index.
func (r *Result) addGroups(groups []*group, publisher string) {
	if len(groups) == 0 {
		return
	}
	// No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4]
	// that Subscription.Validate rejects; the check stays so that the rule
	// holds for every entry.
	skip := func(e entry) bool { return e.flags&flagNoLocal != 0 && e.clientID == publisher }
	total := 0
	for _, g := range groups {
		for _, e := range g.members.items {
			if !skip(e) {
				total++
			}
		}
	}
	r.members = slices.Grow(r.members[:0], total)
	r.Groups = slices.Grow(r.Groups[:0], len(groups))
	for _, g := range groups {
		start := len(r.members)
		for _, e := range g.members.items {
			if !skip(e) {
				r.members = append(r.members, e.subscription(g.filter, g.name))
			}
		}
		if end := len(r.members); end > start {
			r.Groups = append(r.Groups, GroupMatch{Group: g.name, Filter: g.filter, Members: r.members[start:end:end]})
		}
	}
}

// reset empties s for reuse, keeping its buffers but no client.
func (s *scratch) reset() {
	clear(s.hits)
	clear(s.groups)
	clear(s.filters)
	s.filters = s.filters[:0]
	s.hcounts = s.hcounts[:0]
	s.hits = s.hits[:0]
	s.groups = s.groups[:0]
	s.slots = s.slots[:0]
	s.firsts = s.firsts[:0]
	s.counts = s.counts[:0]
	if len(s.byClient) > 0 {
		clear(s.byClient)
	}
}

// MatchFilter reports whether the topic name topic matches the topic filter
// filter, by the rules of Index.Match. Both must be valid; filter is without
// a "$share/{group}/" prefix. It allocates nothing.
func MatchFilter(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false // [MQTT-4.7.2-1]
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true // this level and everything below it
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		switch {
		case !fmore:
			return !tmore
		case !tmore:
			return frest == "#" // "sport/#" matches "sport"
		}
		filter, topic = frest, trest
	}
}
