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
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.items, last.Value.(*lruEntry[K, V]).key)
		if l.evicted != nil {
			*l.evicted++
		}
	}
}

func (l *lru[K, V]) remove(k K) {
	if e, ok := l.items[k]; ok {
		l.order.Remove(e)
		delete(l.items, k)
	}
}

func (l *lru[K, V]) len() int { return l.order.Len() }
