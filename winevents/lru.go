package winevents

import "container/list"

// lru is a map with a capacity: inserting beyond it evicts the least
// recently used entry and counts the eviction. Not safe for concurrent use
// (the Decoder's state lock guards it).
type lru[K comparable, V any] struct {
	cap     int
	items   map[K]*list.Element
	order   *list.List // front = most recent
	evicted *uint64
	// onEvict, if set, is called for entries pushed out by the capacity
	// or by removeOldest.
	onEvict func(K, V)
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](capacity int, evicted *uint64) *lru[K, V] {
	if capacity < 1 {
		capacity = 1
	}
	return &lru[K, V]{cap: capacity, items: make(map[K]*list.Element), order: list.New(), evicted: evicted}
}

func (l *lru[K, V]) get(k K) (V, bool) {
	if e, ok := l.items[k]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (l *lru[K, V]) put(k K, v V) {
	if e, ok := l.items[k]; ok {
		e.Value.(*lruEntry[K, V]).val = v
		l.order.MoveToFront(e)
		return
	}
	l.items[k] = l.order.PushFront(&lruEntry[K, V]{key: k, val: v})
	for l.order.Len() > l.cap {
		l.removeOldest()
	}
}

// removeOldest evicts the least recently used entry (counted).
func (l *lru[K, V]) removeOldest() {
	last := l.order.Back()
	if last == nil {
		return
	}
	e := last.Value.(*lruEntry[K, V])
	l.order.Remove(last)
	delete(l.items, e.key)
	if l.evicted != nil {
		*l.evicted++
	}
	if l.onEvict != nil {
		l.onEvict(e.key, e.val)
	}
}

// oldest returns the least recently used value without touching it.
func (l *lru[K, V]) oldest() (V, bool) {
	if last := l.order.Back(); last != nil {
		return last.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (l *lru[K, V]) remove(k K) {
	if e, ok := l.items[k]; ok {
		l.order.Remove(e)
		delete(l.items, k)
	}
}

func (l *lru[K, V]) len() int { return l.order.Len() }
