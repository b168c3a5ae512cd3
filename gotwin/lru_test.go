package gotwin

import "testing"

func TestLRU(t *testing.T) {
	l := newLRU[int, string](2)
	var evicted []string
	l.onEvict = func(v *string) { evicted = append(evicted, *v) }
	if !l.insert(1, "a") || !l.insert(2, "b") || l.insert(1, "x") {
		t.Fatal("insert")
	}
	l.lookup(1)    // 1 is now most recent
	l.put(3, "c")  // evicts 2
	l.put(1, "a2") // replaces, no eviction
	if l.peek(2) != nil || *l.peek(1) != "a2" || *l.peek(3) != "c" {
		t.Fatal("contents")
	}
	l.put(4, "d") // evicts 3 (1 was used more recently)
	if len(evicted) != 2 || evicted[0] != "b" || evicted[1] != "c" || l.evicted != 2 {
		t.Fatalf("evicted %v", evicted)
	}
}
