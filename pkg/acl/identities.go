package acl

import (
	"hash/maphash"
	"slices"
)

// identityIndex holds what a rules file says of each identity it names (the
// rules naming it, the groups listing it), looked up by name, in memory the
// garbage collector does not scan: a map of hashes to indexes, and flat
// arrays of names, rules and groups. A file of 100,000 identities held as a
// map of names to slices was 300,000 objects that every collection marked
// again: with it loaded, QoS 1 ingest spent a quarter of the frontend's
// CPU more in the collector (docs/benchmarks.md, access control).
type identityIndex struct {
	seed   maphash.Seed
	byHash map[uint64]int32 // hash of a name → its index: no pointers
	clash  map[string]int32 // names whose hash an earlier name has (rare)
	names  []byte           // the names, one after another
	// The ranges of identity i: names[nameAt[i]:nameAt[i+1]],
	// rules[rulesAt[i]:rulesAt[i+1]], groups[groupsAt[i]:groupsAt[i+1]].
	nameAt, rulesAt, groupsAt []int32
	rules                     []int32 // rule indexes, in file order
	groups                    []int32 // group indexes (Rules.groupNames)
}

// newIdentityIndex indexes ids: for each name, the rules naming it and the
// indexes of the groups listing it.
func newIdentityIndex(ids map[string]identity, groupIdx map[string]int32) *identityIndex {
	names := make([]string, 0, len(ids))
	for name := range ids {
		names = append(names, name)
	}
	slices.Sort(names) // the same layout for the same file
	x := &identityIndex{
		seed:     maphash.MakeSeed(),
		byHash:   make(map[uint64]int32, len(names)),
		nameAt:   make([]int32, 1, len(names)+1),
		rulesAt:  make([]int32, 1, len(names)+1),
		groupsAt: make([]int32, 1, len(names)+1),
	}
	for i, name := range names {
		h := maphash.String(x.seed, name)
		if _, taken := x.byHash[h]; taken {
			if x.clash == nil {
				x.clash = map[string]int32{}
			}
			x.clash[name] = int32(i)
		} else {
			x.byHash[h] = int32(i)
		}
		x.names = append(x.names, name...)
		x.nameAt = append(x.nameAt, int32(len(x.names)))
		m := ids[name]
		x.rules = append(x.rules, m.rules...)
		x.rulesAt = append(x.rulesAt, int32(len(x.rules)))
		for _, g := range m.groups {
			x.groups = append(x.groups, groupIdx[g])
		}
		x.groupsAt = append(x.groupsAt, int32(len(x.groups)))
	}
	return x
}

// lookup returns the rules naming id and the indexes of the groups listing
// it; ok is false when the file does not name id. The slices are shared: do
// not modify them.
func (x *identityIndex) lookup(id string) (rules, groups []int32, ok bool) {
	if x == nil {
		return nil, nil, false
	}
	i, ok := x.byHash[maphash.String(x.seed, id)]
	if !ok || string(x.names[x.nameAt[i]:x.nameAt[i+1]]) != id {
		if i, ok = x.clash[id]; !ok {
			return nil, nil, false
		}
	}
	return x.rules[x.rulesAt[i]:x.rulesAt[i+1]:x.rulesAt[i+1]], x.groups[x.groupsAt[i]:x.groupsAt[i+1]:x.groupsAt[i+1]], true
}

// len returns the number of identities.
func (x *identityIndex) len() int {
	if x == nil {
		return 0
	}
	return len(x.nameAt) - 1
}
