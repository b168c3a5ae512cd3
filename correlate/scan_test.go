package correlate

import (
	"slices"
	"testing"
	"time"
)

// TestScanBursts: the sensor's burst counts (distinct closed, attempted)
// decide a scan; a scan silences its own burst, not a later knock of the
// same pair (a scan first is no cover for a knock a window later).
func TestScanBursts(t *testing.T) {
	const w = 30 * time.Second // DefaultConfig's knock window
	scanKnock := func(at time.Time, distinct, attempted int) Knock {
		k := knockAt(attacker, victim, at, 1001, 1002, 1003)
		k.DistinctClosed, k.Attempted, k.Epoch = distinct, attempted, 1
		return k
	}
	tests := []struct {
		name  string
		items []any
		want  []string
	}{
		{"filtered-host SYN scan (few decided, hundreds attempted), change, connect", []any{
			scanKnock(t0, 3, 500), ruleAdded(t0.Add(10*sec), Ports(22), 1), handshakeAt(attacker, victim, 22, t0.Add(12*sec)),
		}, nil},
		{"knock first, scan counts only in the handshake", []any{
			scanKnock(t0, 3, 3), ruleAdded(t0.Add(10*sec), Ports(22), 1), func() Handshake {
				h := handshakeAt(attacker, victim, 22, t0.Add(12*sec))
				h.DistinctClosed, h.Attempted = 3, 400
				return h
			}(),
		}, nil},
		{"scan, a window of silence, then a knock", []any{
			scanKnock(t0, 3, 500),
			func() Knock {
				k := knockAt(attacker, victim, t0.Add(w+20*sec), 7000, 8000, 9000)
				k.DistinctClosed, k.Attempted, k.Epoch = 3, 3, 2
				return k
			}(),
			ruleAdded(t0.Add(w+25*sec), Ports(22), 1), handshakeAt(attacker, victim, 22, t0.Add(w+27*sec)),
		}, []string{"created high"}},
		{"scan, then a knock inside the scan's window", []any{
			scanKnock(t0, 3, 500),
			func() Knock {
				k := knockAt(attacker, victim, t0.Add(10*sec), 7000, 8000, 9000)
				k.DistinctClosed, k.Attempted, k.Epoch = 3, 3, 2
				return k
			}(),
			ruleAdded(t0.Add(15*sec), Ports(22), 1), handshakeAt(attacker, victim, 22, t0.Add(17*sec)),
		}, nil},
		{"knock carrying old scan touches in its record", []any{
			scanKnock(t0, 3, 500),
			func() Knock {
				// The sensor's ring still holds the scan's touches; the
				// burst counts are the new knock's.
				k := knockAt(attacker, victim, t0.Add(w+20*sec), 7000, 8000, 9000)
				k.Touches = append(knockAt(attacker, victim, t0, 1001, 1002, 1003).Touches, k.Touches...)
				k.DistinctClosed, k.Attempted, k.Epoch = 3, 3, 2
				return k
			}(),
			ruleAdded(t0.Add(w+25*sec), Ports(22), 1), handshakeAt(attacker, victim, 22, t0.Add(w+27*sec)),
		}, []string{"created high"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, out := newTestEngine(t, nil)
			feed(t, e, tc.items...)
			if got := summary(out.all()); !slices.Equal(got, tc.want) {
				t.Fatalf("records = %q, want %q", got, tc.want)
			}
		})
	}
}
