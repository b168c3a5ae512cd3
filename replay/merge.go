package replay

import (
	"container/heap"
	"errors"
	"io"
	"time"
)

// merger yields the frames of several captures in timestamp order (ties:
// the capture named first wins, then file order). Each capture keeps one
// frame in flight, in its own buffer, so memory does not grow with the
// captures' length.
type merger struct {
	h        mergeHeap
	caps     []*Capture
	Unusable int64 // frames with no Ethernet form (counted, skipped)
}

type mergeItem struct {
	c     *Capture
	idx   int
	frame []byte
	ts    time.Time
	ns    int64
}

type mergeHeap []*mergeItem

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].ns != h[j].ns {
		return h[i].ns < h[j].ns
	}
	return h[i].idx < h[j].idx
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(*mergeItem)) }
func (h *mergeHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newMerger(caps []*Capture) (*merger, error) {
	m := &merger{caps: caps}
	for i, c := range caps {
		it := &mergeItem{c: c, idx: i}
		ok, err := m.fill(it)
		if err != nil {
			return nil, err
		}
		if ok {
			m.h = append(m.h, it)
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// fill reads the item's next usable frame; false at the capture's end.
func (m *merger) fill(it *mergeItem) (bool, error) {
	for {
		f, ts, ok, err := it.c.Next()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if !ok {
			m.Unusable++
			continue
		}
		it.frame, it.ts, it.ns = f, ts, ts.UnixNano()
		return true, nil
	}
}

// next calls fn with the earliest frame of all captures (the frame is valid
// during the call) and returns false when every capture has ended.
func (m *merger) next(fn func(frame []byte, ts time.Time, capture int) error) (bool, error) {
	if len(m.h) == 0 {
		return false, nil
	}
	it := m.h[0]
	if err := fn(it.frame, it.ts, it.idx); err != nil {
		return false, err
	}
	ok, err := m.fill(it)
	if err != nil {
		return false, err
	}
	if ok {
		heap.Fix(&m.h, 0)
	} else {
		heap.Pop(&m.h)
	}
	return true, nil
}
