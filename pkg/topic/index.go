package topic

import (
	"slices"
	"strings"
	"sync"
)

// Index holds every subscription of every session in a trie keyed by topic
// level, and finds the subscriptions a topic name matches (see Match).
//
// It keeps one subscription per (ClientID, Group, Filter): adding the same
// triple again replaces the options [MQTT-3.8.4-3].
//
// Index is safe for concurrent use: Add, Remove and RemoveClient take the
// write lock, Match, Len and Subscriptions the read lock. The zero value is an
// empty index ready to use. An Index must not be copied after first use.
type Index struct {
	mu      sync.RWMutex
	root    node               // the level before the first; guarded by mu
	clients map[string]*client // by ClientID; guarded by mu
	count   int                // subscriptions; guarded by mu
}

// node is one topic level of a filter; its children are the next level. A
// "#" level is not a node of its own: it has no children, so the
// subscriptions of "a/b/#" are held by node "a/b" in hash.
type node struct {
	parent *node
	level  string           // the level in the filter: literal or "+"
	kids   []*node          // literal next levels while there are at most kidsMax
	kidMap map[string]*node // literal next levels when there are more; kids is then nil
	plus   *node            // the "+" next level
	exact  *leaf            // subscriptions whose filter ends at this level; nil if none
	hash   *leaf            // subscriptions whose filter ends in "#" after this level; nil if none
}

// kidsMax is the number of literal next levels a node keeps in a slice. Most
// levels of device topics have one next level ("{device}/cmd"), where a slice
// costs 8 bytes and a map a few hundred; a short linear scan is also faster
// than hashing.
const kidsMax = 8

// leaf holds the subscriptions to one filter.
type leaf struct {
	subs   subList   // non-shared subscriptions
	groups *[]*group // shared subscriptions, rare, so behind a pointer; nil if none
	filter string    // the filter, for ClientMatch.Filters
}

// place is where the subscriptions to one filter are: n.exact, or n.hash
// for a filter ending in "#".
type place struct {
	n    *node
	hash bool
}

// group is a shared subscription: a ShareName and a filter.
type group struct {
	name    string
	filter  string
	members subList
}

// entry is one subscription as a leaf stores it; the filter and group are
// implied by where it is stored.
type entry struct {
	clientID   string // interned in Index.clients
	identifier uint32
	qos        byte
	flags      byte
}

// Flags of an entry.
const (
	flagNoLocal           = 1 << 0
	flagRetainAsPublished = 1 << 1
	flagRetainHandling    = 3 << 2 // two bits, RetainHandling << 2
)

// client lists where the subscriptions of one session are stored, for
// RemoveClient and Subscriptions.
type client struct {
	id   string // the interned ClientID every entry of this client shares
	refs []ref
}

// ref locates one subscription of a client.
type ref struct {
	place
	group string // empty for a non-shared subscription
}

// subList holds the subscriptions of one leaf (or group), at most one per
// client. A slice keeps Match a linear scan; past indexThreshold entries a map
// from ClientID to position keeps Add and Remove constant-time, for filters
// that thousands of clients share.
type subList struct {
	items    []entry
	byClient map[string]int32
}

// indexThreshold is the length past which a subList builds its map.
const indexThreshold = 16

// Add stores s, replacing the options of the subscription with the same
// ClientID, Group and Filter if there is one, and reports whether it
// replaced one. The replacement happens under the write lock, so a message
// matched concurrently sees either the old or the new subscription, never
// neither: Application Messages MUST NOT be lost due to the replacement of
// the Subscription [MQTT-3.8.4-3].
//
// s must pass Subscription.Validate; Add returns its error otherwise and
// stores nothing.
func (ix *Index) Add(s Subscription) (replaced bool, err error) {
	if err := s.Validate(); err != nil {
		return false, err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.clients == nil {
		ix.clients = make(map[string]*client)
	}
	c := ix.clients[s.ClientID]
	if c == nil {
		// Clone: s.ClientID may point into a larger buffer (a packet) that the
		// index would otherwise keep alive.
		c = &client{id: strings.Clone(s.ClientID)}
		ix.clients[c.id] = c
	}
	p := ix.insert(s.Filter)
	l := p.leaf()
	if l == nil {
		l = &leaf{filter: strings.Clone(s.Filter)}
		p.setLeaf(l)
	}
	e := entry{
		clientID:   c.id,
		identifier: s.Identifier,
		qos:        s.QoS,
		flags:      s.RetainHandling << 2,
	}
	if s.NoLocal {
		e.flags |= flagNoLocal
	}
	if s.RetainAsPublished {
		e.flags |= flagRetainAsPublished
	}
	if s.Group == "" {
		replaced = l.subs.put(e)
	} else {
		g := l.group(s.Group)
		if g == nil {
			g = &group{name: strings.Clone(s.Group), filter: strings.Clone(s.Filter)}
			if l.groups == nil {
				l.groups = new([]*group)
			}
			*l.groups = append(*l.groups, g)
		}
		replaced = g.members.put(e)
	}
	if !replaced {
		c.refs = append(c.refs, ref{place: p, group: s.Group})
		ix.count++
	}
	return replaced, nil
}

// Remove deletes the subscription of clientID to filter in group (empty for
// a non-shared subscription) and reports whether there was one. filter is
// without the "$share/{group}/" prefix, as in Subscription.
func (ix *Index) Remove(clientID, group, filter string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	c := ix.clients[clientID]
	if c == nil {
		return false
	}
	p, ok := ix.find(filter)
	if !ok || !p.remove(clientID, group) {
		return false
	}
	// A client rarely holds many subscriptions, so a linear scan is cheap.
	for i, r := range c.refs {
		if r.place == p && r.group == group {
			last := len(c.refs) - 1
			c.refs[i] = c.refs[last]
			c.refs[last] = ref{}
			c.refs = c.refs[:last]
			break
		}
	}
	if len(c.refs) == 0 {
		delete(ix.clients, clientID)
	}
	ix.count--
	p.n.prune()
	return true
}

// RemoveClient deletes every subscription of clientID, for a session that
// ended, and returns how many there were.
func (ix *Index) RemoveClient(clientID string) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	c := ix.clients[clientID]
	if c == nil {
		return 0
	}
	for _, r := range c.refs {
		r.remove(clientID, r.group)
		r.n.prune()
	}
	delete(ix.clients, clientID)
	ix.count -= len(c.refs)
	return len(c.refs)
}

// Len returns the number of subscriptions.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.count
}

// Subscriptions returns the subscriptions of clientID, in no particular
// order.
func (ix *Index) Subscriptions(clientID string) []Subscription {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	c := ix.clients[clientID]
	if c == nil {
		return nil
	}
	subs := make([]Subscription, 0, len(c.refs))
	for _, r := range c.refs {
		l := &r.leaf().subs
		if r.group != "" {
			l = &r.leaf().group(r.group).members
		}
		subs = append(subs, l.items[l.find(clientID)].subscription(r.filter(), r.group))
	}
	return subs
}

// insert returns the place of filter, creating the missing levels. The
// levels it creates are substrings of one copy of the part of filter from
// the first missing level on: the index keeps no caller memory, and shares
// the levels that existed.
//
// ix.mu must be held for writing.
func (ix *Index) insert(filter string) place {
	n := &ix.root
	var owned string // the copy, of filter[base:]
	base := -1
	for rest := filter; ; {
		level, tail, more := strings.Cut(rest, "/")
		if level == "#" {
			return place{n: n, hash: true} // "#" is the last level
		}
		next := n.child(level)
		if next == nil {
			at := len(filter) - len(rest) // rest is a suffix of filter
			if base < 0 {
				base, owned = at, strings.Clone(filter[at:])
			}
			next = &node{parent: n, level: owned[at-base : at-base+len(level)]}
			n.link(next)
		}
		n = next
		if !more {
			return place{n: n}
		}
		rest = tail
	}
}

// find returns the place of filter and whether it exists.
//
// ix.mu must be held.
func (ix *Index) find(filter string) (place, bool) {
	n := &ix.root
	for rest := filter; ; {
		level, tail, more := strings.Cut(rest, "/")
		if level == "#" {
			return place{n: n, hash: true}, true
		}
		if n = n.child(level); n == nil {
			return place{}, false
		}
		if !more {
			return place{n: n}, true
		}
		rest = tail
	}
}

// child returns the next level named level (literal or "+"), nil if there is
// none.
func (n *node) child(level string) *node {
	if level == "+" {
		return n.plus
	}
	return n.literal(level)
}

// literal returns the literal next level named level, nil if there is none.
// Match calls it for every level of a topic name.
func (n *node) literal(level string) *node {
	if n.kidMap != nil {
		return n.kidMap[level]
	}
	for _, k := range n.kids {
		if k.level == level {
			return k
		}
	}
	return nil
}

// link makes c, whose level n does not have yet, a next level of n.
func (n *node) link(c *node) {
	switch {
	case c.level == "+":
		n.plus = c
	case n.kidMap != nil:
		n.kidMap[c.level] = c
	case len(n.kids) < kidsMax:
		n.kids = append(n.kids, c)
	default:
		n.kidMap = make(map[string]*node, 2*kidsMax)
		for _, k := range n.kids {
			n.kidMap[k.level] = k
		}
		n.kidMap[c.level] = c
		n.kids = nil
	}
}

// unlink removes c from the next levels of n.
func (n *node) unlink(c *node) {
	switch {
	case n.plus == c:
		n.plus = nil
	case n.kidMap != nil:
		delete(n.kidMap, c.level)
		if len(n.kidMap) <= kidsMax/2 { // hysteresis: no churn at the boundary
			n.kids = nil
			for _, k := range n.kidMap {
				n.kids = append(n.kids, k)
			}
			n.kidMap = nil
		}
	default:
		for i, k := range n.kids {
			if k == c {
				last := len(n.kids) - 1
				n.kids[i] = n.kids[last]
				n.kids[last] = nil
				n.kids = n.kids[:last]
				break
			}
		}
		if len(n.kids) == 0 {
			n.kids = nil
		}
	}
}

// prune unlinks n and then its ancestors while they hold nothing, so that
// unsubscribed filters cost no memory and no Match time.
func (n *node) prune() {
	for n.parent != nil && n.empty() {
		p := n.parent
		p.unlink(n)
		n.parent = nil
		n = p
	}
}

// empty reports whether n holds no subscription and has no next level.
func (n *node) empty() bool {
	return n.exact == nil && n.hash == nil && n.plus == nil && len(n.kids) == 0 && n.kidMap == nil
}

// leaf returns the subscriptions of p, nil if there are none.
func (p place) leaf() *leaf {
	if p.hash {
		return p.n.hash
	}
	return p.n.exact
}

// setLeaf stores the subscriptions of p.
func (p place) setLeaf(l *leaf) {
	if p.hash {
		p.n.hash = l
	} else {
		p.n.exact = l
	}
}

// remove deletes the subscription of clientID in group ("" for non-shared)
// at p and reports whether there was one. An emptied group or leaf is
// dropped; the caller prunes p.n.
func (p place) remove(clientID, groupName string) bool {
	l := p.leaf()
	if l == nil {
		return false
	}
	removed := false
	if groupName == "" {
		removed = l.subs.remove(clientID)
	} else if g := l.group(groupName); g != nil {
		removed = g.members.remove(clientID)
		if len(g.members.items) == 0 {
			l.dropGroup(g)
		}
	}
	if len(l.subs.items) == 0 && l.groups == nil {
		p.setLeaf(nil)
	}
	return removed
}

// filter rebuilds the filter of p from the levels on its path.
func (p place) filter() string {
	var levels []string
	for m := p.n; m.parent != nil; m = m.parent {
		levels = append(levels, m.level)
	}
	slices.Reverse(levels)
	if p.hash {
		levels = append(levels, "#")
	}
	return strings.Join(levels, "/")
}

// group returns the shared group named name, nil if there is none. A filter
// has few groups, so a linear scan beats a map.
func (l *leaf) group(name string) *group {
	if l.groups == nil {
		return nil
	}
	for _, g := range *l.groups {
		if g.name == name {
			return g
		}
	}
	return nil
}

// dropGroup removes g from l.
func (l *leaf) dropGroup(g *group) {
	gs := *l.groups
	i := slices.Index(gs, g)
	last := len(gs) - 1
	gs[i] = gs[last]
	gs[last] = nil
	*l.groups = gs[:last]
	if last == 0 {
		l.groups = nil
	}
}

// subscription turns e back into the Subscription it was made from.
func (e entry) subscription(filter, group string) Subscription {
	return Subscription{
		ClientID:          e.clientID,
		Filter:            filter,
		Group:             group,
		QoS:               e.qos,
		NoLocal:           e.flags&flagNoLocal != 0,
		RetainAsPublished: e.flags&flagRetainAsPublished != 0,
		RetainHandling:    (e.flags & flagRetainHandling) >> 2,
		Identifier:        e.identifier,
	}
}

// find returns the position of clientID's entry, -1 if there is none.
func (l *subList) find(clientID string) int {
	if l.byClient != nil {
		if i, ok := l.byClient[clientID]; ok {
			return int(i)
		}
		return -1
	}
	for i := range l.items {
		if l.items[i].clientID == clientID {
			return i
		}
	}
	return -1
}

// put stores e, replacing the entry of the same client, and reports whether
// it replaced one.
func (l *subList) put(e entry) (replaced bool) {
	if i := l.find(e.clientID); i >= 0 {
		l.items[i] = e
		return true
	}
	l.items = append(l.items, e)
	switch {
	case l.byClient != nil:
		l.byClient[e.clientID] = int32(len(l.items) - 1)
	case len(l.items) > indexThreshold:
		l.byClient = make(map[string]int32, len(l.items))
		for i, it := range l.items {
			l.byClient[it.clientID] = int32(i)
		}
	}
	return false
}

// remove deletes clientID's entry and reports whether there was one. The
// last entry takes its place: order is not significant.
func (l *subList) remove(clientID string) bool {
	i := l.find(clientID)
	if i < 0 {
		return false
	}
	last := len(l.items) - 1
	if i != last {
		l.items[i] = l.items[last]
		if l.byClient != nil {
			l.byClient[l.items[i].clientID] = int32(i)
		}
	}
	l.items[last] = entry{}
	l.items = l.items[:last]
	if l.byClient != nil {
		delete(l.byClient, clientID)
		if len(l.items) <= indexThreshold/2 { // hysteresis: no rebuild churn at the threshold
			l.byClient = nil
		}
	}
	switch {
	case len(l.items) == 0:
		l.items = nil
	case cap(l.items) > 2*indexThreshold && len(l.items) < cap(l.items)/4:
		// Give back the memory of a filter most clients left.
		l.items = append([]entry(nil), l.items...)
	}
	return true
}
