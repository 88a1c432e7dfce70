package acl

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"sync"
)

// Rules are the compiled rules of one rules file, or the open mode of no
// file (see AllowAll). They are immutable (but for the steps they share
// among policies) and safe for concurrent use; a Holder swaps them on
// reload.
//
// Rules find the rules of a subject by maps (identity → rules, identity →
// groups, group → rules), not by scanning the identities of the file, so a
// fleet of 100,000 identities costs For a few map lookups.
type Rules struct {
	name string
	gen  uint64
	open bool
	sum  [sha256.Size]byte // of the file, to tell an unchanged file on reload

	rules []rule
	// entries holds the entries of every rule, rule after rule
	// (rule.first): the policies of all subjects share them, placeholders
	// and all (entry.subst).
	entries    []entry
	everyone   []int32        // rules with neither identities nor groups
	identities *identityIndex // every identity the file names
	// The groups of the file and those its rules name: groupIdx gives a
	// name's index, groupNames the name of an index, groupRules the rules
	// naming the group.
	groupIdx   map[string]int32
	groupNames []string
	groupRules [][]int32
	groups     int
	quotas     []fileQuota // the quotas section, in file order

	// allowAll is the decisions of every subject of the open mode that has
	// no extra rules and no quota, shared: it holds nothing particular to
	// a subject, and every connection needs one.
	allowAll *derived

	// stepSets holds the steps of policies (internSteps), by their bytes.
	stepsMu  sync.Mutex
	stepSets map[string]*[]step
}

// identity is what the file says of one identity, while the rules are
// built (identityIndex holds it after).
type identity struct {
	rules  []int32  // rules naming it
	groups []string // groups of the file listing it
}

// openRules is the open mode: no rules file, everything allowed.
var openRules = newOpenRules()

func newOpenRules() *Rules {
	r := &Rules{open: true}
	r.allowAll = &derived{rules: r, allowAll: true}
	return r
}

// ParseRules compiles the rules file data; name is the file name, for
// errors. Errors are a *ParseError.
func ParseRules(name string, data []byte) (*Rules, error) {
	p, err := parseFile(name, data)
	if err != nil {
		return nil, err
	}
	r := build(p)
	r.name = name
	r.gen = 1
	r.sum = sha256.Sum256(data)
	return r, nil
}

// ReadRules reads and compiles the rules file at path.
func ReadRules(path string) (*Rules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading authorization rules: %w", err)
	}
	return ParseRules(path, data)
}

// build indexes the rules of p by whom they apply to.
func build(p *parsed) *Rules {
	r := &Rules{
		rules:    make([]rule, len(p.rules)),
		groupIdx: map[string]int32{},
		groups:   len(p.groups),
		quotas:   p.quotas,
	}
	group := func(name string) int32 {
		g, ok := r.groupIdx[name]
		if !ok {
			g = int32(len(r.groupNames))
			r.groupIdx[name] = g
			r.groupNames = append(r.groupNames, name)
			r.groupRules = append(r.groupRules, nil)
		}
		return g
	}
	byIdentity := map[string]identity{}
	for i, fr := range p.rules {
		ru := fr.rule
		ru.first = int32(len(r.entries))
		for _, pat := range ru.topics {
			r.entries = append(r.entries, newPatternEntry(pat, ru.allow, ru.acts))
		}
		r.rules[i] = ru
		if len(fr.identities) == 0 && len(fr.groups) == 0 {
			r.everyone = append(r.everyone, int32(i))
		}
		for _, id := range fr.identities {
			m := byIdentity[id]
			if len(m.rules) == 0 || m.rules[len(m.rules)-1] != int32(i) {
				m.rules = append(m.rules, int32(i))
				byIdentity[id] = m
			}
		}
		for _, name := range fr.groups {
			g := group(name)
			if l := r.groupRules[g]; len(l) == 0 || l[len(l)-1] != int32(i) {
				r.groupRules[g] = append(l, int32(i))
			}
		}
	}
	// In the order of the group names, so that the result does not depend on
	// map order.
	names := make([]string, 0, len(p.groups))
	for name := range p.groups {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		group(name)
		for _, id := range p.groups[name] {
			m := byIdentity[id]
			if len(m.groups) == 0 || m.groups[len(m.groups)-1] != name {
				m.groups = append(m.groups, name)
				byIdentity[id] = m
			}
		}
	}
	r.identities = newIdentityIndex(byIdentity, r.groupIdx)
	return r
}

// Name returns the file the rules were read from, empty in open mode.
func (r *Rules) Name() string { return r.name }

// Generation counts the rules a Holder has loaded: 1 for the first file, one
// more for each reload that changed it; 0 in open mode.
func (r *Rules) Generation() uint64 { return r.gen }

// Open reports whether these are the rules of no file, which allow
// everything (see AllowAll).
func (r *Rules) Open() bool { return r.open }

// Len returns the number of rules.
func (r *Rules) Len() int { return len(r.rules) }

// Identities returns the number of identities the file names, in groups or
// in rules.
func (r *Rules) Identities() int { return r.identities.len() }

// Groups returns the number of groups the file defines.
func (r *Rules) Groups() int { return r.groups }

// For returns the policy of s under these rules; it does not follow a
// Holder's reloads (Holder.For does). The error, a *ParseError, is for bad
// s.Extra rules.
func (r *Rules) For(s Subject) (*Policy, error) {
	return newPolicy(nil, r, s)
}

// applicable returns the indexes of the rules that apply to a subject, in
// order. The result may be shared: do not modify it.
func (r *Rules) applicable(id string, groups []string) []int32 {
	lists := make([][]int32, 0, 4)
	addList := func(l []int32) {
		if len(l) > 0 {
			lists = append(lists, l)
		}
	}
	addList(r.everyone)
	if rules, fileGroups, ok := r.identities.lookup(id); ok {
		addList(rules)
		for _, g := range fileGroups {
			addList(r.groupRules[g])
		}
	}
	for _, name := range groups {
		if g, ok := r.groupIdx[name]; ok {
			addList(r.groupRules[g])
		}
	}
	switch len(lists) {
	case 0:
		return nil
	case 1:
		return lists[0]
	}
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	all := make([]int32, 0, n)
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// derive makes the decisions of policy p under r: p's extra entries, then
// the entries of the rules that apply to its subject.
//
// The rules' entries are slices of r.entries, shared by every policy, those
// with placeholders too (substituted as they are evaluated), and so are the
// steps of subjects to whom the same rules apply (internSteps): a policy
// costs memory for its extra rules, not for the rules that apply to it.
func (r *Rules) derive(p *Policy) *derived {
	quota := r.quotaOf(p.identity, p.groups())
	if r.open && !p.held() {
		if quota == nil && r.allowAll != nil {
			return r.allowAll
		}
		return &derived{rules: r, allowAll: true, quota: quota}
	}
	d := &derived{rules: r, quota: quota}
	// Adjacent runs of one array are one step. Gathered on the stack.
	var buf [16]step
	steps := buf[:0]
	appendRun := func(lo, hi int32, isOwn bool) {
		if hi == lo {
			return
		}
		if n := len(steps); n > 0 && steps[n-1].own == isOwn && steps[n-1].hi == lo {
			steps[n-1].hi = hi
			return
		}
		steps = append(steps, step{lo: lo, hi: hi, own: isOwn})
	}
	appendRun(0, int32(len(p.extra())), true)
	for _, i := range r.applicable(p.identity, p.groups()) {
		ru := &r.rules[i]
		appendRun(ru.first, ru.first+int32(len(ru.topics)), false)
	}
	d.steps = r.internSteps(steps)
	return d
}

// maxStepSets bounds the distinct steps internSteps keeps for one Rules:
// past it (a file whose rules name most identities one by one) a policy
// keeps its own.
const maxStepSets = 1 << 16

// internSteps returns steps, or an equal list made before: subjects to whom
// the same rules apply (a fleet's devices, by their groups) share one.
func (r *Rules) internSteps(steps []step) *[]step {
	if len(steps) == 0 {
		return nil
	}
	var kb [16 * 9]byte
	key := kb[:0]
	for _, s := range steps {
		key = binary.LittleEndian.AppendUint32(key, uint32(s.lo))
		key = binary.LittleEndian.AppendUint32(key, uint32(s.hi))
		own := byte(0)
		if s.own {
			own = 1
		}
		key = append(key, own)
	}
	r.stepsMu.Lock()
	defer r.stepsMu.Unlock()
	if shared, ok := r.stepSets[string(key)]; ok {
		return shared
	}
	kept := slices.Clone(steps)
	if len(r.stepSets) < maxStepSets {
		if r.stepSets == nil {
			r.stepSets = map[string]*[]step{}
		}
		r.stepSets[string(key)] = &kept
	}
	return &kept
}
