package correlate

import (
	"cmp"
	"container/heap"
	"slices"
)

// Fair eviction. A bounded table shared by every host and every forwarder
// is what a flood aims at: one host (or one forwarder, or a compromised
// host) that fills the table would otherwise push out another host's
// evidence. When a cap is hit the engine therefore evicts, within the
// least valuable class of entries, from the group that holds the most
// entries first ("water filling"): the forwarder with the most entries,
// then, within it, the host with the most. A victim whose host holds one
// change loses it only after every bigger group was brought down to one.

// fairItem is one eviction candidate: its groups (outer, inner) and its
// rank inside its inner group (lower goes first).
type fairItem[T any] struct {
	outer, inner string
	rank         int64
	v            T
}

// fairPick returns n candidates to evict from items, taken one at a time
// from the outer group with the most remaining candidates and, within it,
// from the inner group with the most; ties go to the smaller name, so the
// choice is deterministic.
func fairPick[T any](items []fairItem[T], n int) []T {
	if n <= 0 || len(items) == 0 {
		return nil
	}
	n = min(n, len(items))
	slices.SortFunc(items, func(a, b fairItem[T]) int {
		return cmp.Or(cmp.Compare(a.outer, b.outer), cmp.Compare(a.inner, b.inner), cmp.Compare(a.rank, b.rank))
	})
	// Build the groups over the sorted slice.
	var outers fairHeap
	var inner *fairGroup
	var outer *fairGroup
	for i := range items {
		it := &items[i]
		if outer == nil || outer.name != it.outer {
			outer = &fairGroup{name: it.outer}
			outers = append(outers, outer)
			inner = nil
		}
		if inner == nil || inner.name != it.inner {
			inner = &fairGroup{name: it.inner, next: i}
			outer.subs = append(outer.subs, inner)
		}
		inner.left++
		outer.left++
	}
	for _, o := range outers {
		h := fairHeap(o.subs)
		heap.Init(&h)
		o.subs = h
	}
	heap.Init(&outers)
	out := make([]T, 0, n)
	for len(out) < n {
		o := outers[0]
		subs := fairHeap(o.subs)
		g := subs[0]
		out = append(out, items[g.next].v)
		g.next++
		g.left--
		o.left--
		if g.left == 0 {
			heap.Pop(&subs)
		} else {
			heap.Fix(&subs, 0)
		}
		o.subs = subs
		if o.left == 0 {
			heap.Pop(&outers)
		} else {
			heap.Fix(&outers, 0)
		}
	}
	return out
}

type fairGroup struct {
	name string
	left int
	next int // index in items of the group's next candidate (inner groups)
	subs []*fairGroup
}

// fairHeap is a max-heap of groups by remaining candidates.
type fairHeap []*fairGroup

func (h fairHeap) Len() int { return len(h) }
func (h fairHeap) Less(i, j int) bool {
	if h[i].left != h[j].left {
		return h[i].left > h[j].left
	}
	return h[i].name < h[j].name
}
func (h fairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *fairHeap) Push(x any)   { *h = append(*h, x.(*fairGroup)) }
func (h *fairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// topK counts events per key in bounded memory (the space-saving
// algorithm): it keeps at most k keys; a new key replaces the key with the
// smallest count and inherits that count, so a key that is truly among the
// heaviest is never lost, and counts are upper bounds. Keys are cut to
// maxTopKeyLen bytes: they come from forwarded events.
type topK struct {
	k      int
	counts map[string]uint64
}

const maxTopKeyLen = 128

func newTopK(k int) *topK { return &topK{k: k, counts: make(map[string]uint64, k)} }

func (t *topK) add(key string, n uint64) {
	if n == 0 {
		return
	}
	if len(key) > maxTopKeyLen {
		key = key[:maxTopKeyLen]
	}
	if _, ok := t.counts[key]; ok || len(t.counts) < t.k {
		t.counts[key] += n
		return
	}
	minKey, minN := "", uint64(0)
	for k, v := range t.counts {
		if minKey == "" || v < minN || (v == minN && k < minKey) {
			minKey, minN = k, v
		}
	}
	delete(t.counts, minKey)
	t.counts[key] = minN + n
}

// KeyCount is a key (a host or forwarder) with its count.
type KeyCount struct {
	Key   string
	Count uint64
}

// top returns the entries, heaviest first.
func (t *topK) top() []KeyCount {
	out := make([]KeyCount, 0, len(t.counts))
	for k, v := range t.counts {
		out = append(out, KeyCount{k, v})
	}
	slices.SortFunc(out, func(a, b KeyCount) int { return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Key, b.Key)) })
	return out
}
