package auth

import (
	"container/list"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTheLRUForgetsTheLeastRecentlyUsed drives the lru and a plain model
// (container/list) with the same random operations and requires the same
// contents after each.
func TestTheLRUForgetsTheLeastRecentlyUsed(t *testing.T) {
	for _, max := range []int{1, 2, 7, 64, 300} {
		l := newLRU[int, int](max)
		model := list.New() // of [2]int{key, val}, most recent first
		find := func(k int) *list.Element {
			for e := model.Front(); e != nil; e = e.Next() {
				if e.Value.([2]int)[0] == k {
					return e
				}
			}
			return nil
		}
		r := rand.New(rand.NewPCG(1, uint64(max)))
		ops := 20_000
		if max > 100 {
			ops = 3_000 // more than one chunk of slots; the checks are O(max)
		}
		for op := 0; op < ops; op++ {
			k := r.IntN(3 * max)
			switch r.IntN(3) {
			case 0:
				v, ok := l.get(k)
				e := find(k)
				require.Equal(t, e != nil, ok, "get %d", k)
				if e != nil {
					require.Equal(t, e.Value.([2]int)[1], v)
					model.MoveToFront(e)
				}
			case 1:
				l.put(k, op)
				if e := find(k); e != nil {
					e.Value = [2]int{k, op}
					model.MoveToFront(e)
				} else {
					if model.Len() >= max {
						model.Remove(model.Back())
					}
					model.PushFront([2]int{k, op})
				}
			case 2:
				l.remove(k)
				if e := find(k); e != nil {
					model.Remove(e)
				}
			}
			require.Equal(t, model.Len(), l.len())
			// The order, most recent first, is the model's.
			i := l.head
			for e := model.Front(); e != nil; e = e.Next() {
				if i < 0 || e.Value.([2]int) != [2]int{l.slot(i).key, l.slot(i).val} {
					t.Fatalf("max %d, op %d: the order differs from the model's at %v", max, op, e.Value)
				}
				i = l.slot(i).next
			}
			if i != -1 {
				t.Fatalf("max %d, op %d: more entries than the model", max, op)
			}
		}
		require.LessOrEqual(t, int(l.n), max, "slots are reused, never more than max")
	}
}

func TestAnLRUOfNoEntriesKeepsNothing(t *testing.T) {
	l := newLRU[int, int](0)
	l.put(1, 1)
	_, ok := l.get(1)
	require.False(t, ok)
	require.Zero(t, l.len())
}
