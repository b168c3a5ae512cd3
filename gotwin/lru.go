package gotwin

// lru is a bounded map with exact least-recently-used eviction. It stands
// in for BPF_MAP_TYPE_LRU_HASH (see the package doc for how the kernel's
// approximate LRU differs).
type lru[K comparable, V any] struct {
	cap     int
	items   map[K]*lruNode[K, V]
	head    lruNode[K, V] // sentinel: head.next is most recent
	evicted uint64
}

type lruNode[K comparable, V any] struct {
	key        K
	val        V
	prev, next *lruNode[K, V]
}

func newLRU[K comparable, V any](capacity int) *lru[K, V] {
	l := &lru[K, V]{cap: capacity, items: make(map[K]*lruNode[K, V])}
	l.head.next, l.head.prev = &l.head, &l.head
	return l
}

func (l *lru[K, V]) unlink(n *lruNode[K, V]) {
	n.prev.next, n.next.prev = n.next, n.prev
}

func (l *lru[K, V]) pushFront(n *lruNode[K, V]) {
	n.prev, n.next = &l.head, l.head.next
	l.head.next.prev = n
	l.head.next = n
}

// lookup returns a pointer to the value (mutable in place, like a map
// value pointer in BPF) and marks it recently used.
func (l *lru[K, V]) lookup(k K) *V {
	n := l.items[k]
	if n == nil {
		return nil
	}
	l.unlink(n)
	l.pushFront(n)
	return &n.val
}

// insert adds k if absent (BPF_NOEXIST) and reports whether it did.
func (l *lru[K, V]) insert(k K, v V) bool {
	if _, ok := l.items[k]; ok {
		return false
	}
	l.put(k, v)
	return true
}

// put adds or replaces k as the most recent entry (BPF_ANY), evicting the
// least recent entry when full.
func (l *lru[K, V]) put(k K, v V) {
	if n := l.items[k]; n != nil {
		n.val = v
		l.unlink(n)
		l.pushFront(n)
		return
	}
	if len(l.items) >= l.cap {
		old := l.head.prev
		l.unlink(old)
		delete(l.items, old.key)
		l.evicted++
	}
	n := &lruNode[K, V]{key: k, val: v}
	l.items[k] = n
	l.pushFront(n)
}
