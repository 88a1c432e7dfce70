package auth

// lru is a map of at most max entries that forgets the least recently used
// one to make room. It is not safe for concurrent use: its owner locks.
//
// Its entries live in chunks of lruChunk slots, linked by index, and the
// map holds an index: an entry costs its key and value, two int32 and a map
// slot, and no allocation of its own, and the slots grow a chunk at a time
// rather than by doubling a slice (a verified token or password is
// remembered per device, so this is memory per connection of a fleet).
type lru[K comparable, V any] struct {
	max    int
	items  map[K]int32
	chunks [][]lruSlot[K, V]
	n      int32 // slots in use or free: the next new one is slot n
	// head and tail are the most and least recently used slots, -1 when
	// empty; free is a list of removed slots, linked by next, -1 if none.
	head, tail, free int32
}

// lruChunk is the slots allocated at once.
const lruChunk = 256

type lruSlot[K comparable, V any] struct {
	key        K
	val        V
	prev, next int32
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, items: map[K]int32{}, head: -1, tail: -1, free: -1}
}

// get returns the value of k and marks it used.
func (l *lru[K, V]) get(k K) (V, bool) {
	i, ok := l.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	l.toFront(i)
	return l.slot(i).val, true
}

// put sets the value of k, marks it used, and forgets the least recently
// used entry when that makes room. With max 0 it keeps nothing.
func (l *lru[K, V]) put(k K, v V) {
	if l.max <= 0 {
		return
	}
	if i, ok := l.items[k]; ok {
		l.slot(i).val = v
		l.toFront(i)
		return
	}
	var i int32
	switch {
	case len(l.items) >= l.max:
		// Reuse the least recently used slot.
		i = l.tail
		delete(l.items, l.slot(i).key)
		l.unlink(i)
	case l.free >= 0:
		i = l.free
		l.free = l.slot(i).next
	default:
		if int(l.n)%lruChunk == 0 {
			l.chunks = append(l.chunks, make([]lruSlot[K, V], lruChunk))
		}
		i = l.n
		l.n++
	}
	s := l.slot(i)
	s.key, s.val = k, v
	l.pushFront(i)
	l.items[k] = i
}

func (l *lru[K, V]) remove(k K) {
	i, ok := l.items[k]
	if !ok {
		return
	}
	delete(l.items, k)
	l.unlink(i)
	*l.slot(i) = lruSlot[K, V]{next: l.free} // drop what the value references
	l.free = i
}

func (l *lru[K, V]) len() int { return len(l.items) }

func (l *lru[K, V]) slot(i int32) *lruSlot[K, V] { return &l.chunks[i/lruChunk][i%lruChunk] }

func (l *lru[K, V]) toFront(i int32) {
	if l.head == i {
		return
	}
	l.unlink(i)
	l.pushFront(i)
}

func (l *lru[K, V]) unlink(i int32) {
	s := l.slot(i)
	if s.prev >= 0 {
		l.slot(s.prev).next = s.next
	} else {
		l.head = s.next
	}
	if s.next >= 0 {
		l.slot(s.next).prev = s.prev
	} else {
		l.tail = s.prev
	}
}

func (l *lru[K, V]) pushFront(i int32) {
	s := l.slot(i)
	s.prev, s.next = -1, l.head
	if l.head >= 0 {
		l.slot(l.head).prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
}
