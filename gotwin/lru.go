package gotwin

// lru is a bounded map with exact least-recently-used eviction. It stands
// in for BPF_MAP_TYPE_LRU_HASH (see the package doc for how the kernel's
// approximate LRU differs). Like the kernel's preallocated LRU maps it
// takes all its memory up front — a slab of capacity entries, touched — so
// a replay's footprint is set by the configuration, not by how much of the
// capture has been read. Entries are linked by index, not pointer, so the
// garbage collector has nothing to scan in the slab.
type lru[K comparable, V any] struct {
	items   map[K]int32
	nodes   []lruNode[K, V] // nodes[0] is the sentinel: nodes[0].next is most recent
	free    int32           // head of the free list (0: none)
	evicted uint64
	onEvict func(*V) // called with each evicted value, when set
}

type lruNode[K comparable, V any] struct {
	key        K
	val        V
	prev, next int32
}

func newLRU[K comparable, V any](capacity int) *lru[K, V] {
	l := &lru[K, V]{items: make(map[K]int32, capacity), nodes: make([]lruNode[K, V], capacity+1)}
	for i := capacity; i >= 1; i-- {
		l.nodes[i].next = l.free
		l.free = int32(i)
	}
	return l
}

func (l *lru[K, V]) unlink(i int32) {
	n := &l.nodes[i]
	l.nodes[n.prev].next = n.next
	l.nodes[n.next].prev = n.prev
}

func (l *lru[K, V]) pushFront(i int32) {
	n := &l.nodes[i]
	n.prev, n.next = 0, l.nodes[0].next
	l.nodes[l.nodes[0].next].prev = i
	l.nodes[0].next = i
}

// lookup returns a pointer to the value (mutable in place, like a map
// value pointer in BPF; valid until the next put) and marks it recently
// used.
func (l *lru[K, V]) lookup(k K) *V {
	i, ok := l.items[k]
	if !ok {
		return nil
	}
	l.unlink(i)
	l.pushFront(i)
	return &l.nodes[i].val
}

// peek returns a pointer to k's value without marking it used.
func (l *lru[K, V]) peek(k K) *V {
	if i, ok := l.items[k]; ok {
		return &l.nodes[i].val
	}
	return nil
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
	if i, ok := l.items[k]; ok {
		l.nodes[i].val = v
		l.unlink(i)
		l.pushFront(i)
		return
	}
	i := l.free
	if i != 0 {
		l.free = l.nodes[i].next
	} else {
		i = l.nodes[0].prev
		l.unlink(i)
		delete(l.items, l.nodes[i].key)
		l.evicted++
		if l.onEvict != nil {
			l.onEvict(&l.nodes[i].val)
		}
	}
	l.nodes[i].key, l.nodes[i].val = k, v
	l.items[k] = i
	l.pushFront(i)
}
