package winevents

// FormatStats are the cumulative counts of one format.
type FormatStats struct {
	Read, Relevant, Skipped, Duplicates, Rejected, Emitted uint64
}

// Stats is a snapshot of a Decoder's cumulative counters, as plain values
// for the cmd layer to export (it owns the Prometheus collector).
type Stats struct {
	ByFormat map[Format]FormatStats
	// Rejected counts rejections by reason over all formats.
	Rejected map[Reason]uint64
	// DedupeEvicted counts record keys pushed out of the duplicate window,
	// HostsEvicted hosts whose join state was dropped, JoinEvicted entries
	// dropped from a per-host join table, PendingDropped joins abandoned
	// because too many records waited for the same partner: each shows a
	// cap being hit.
	DedupeEvicted, HostsEvicted, JoinEvicted, PendingDropped uint64
	// LongValuesDropped counts whole values of strings the join state cut
	// (over 512 bytes) dropped at their 16 MiB budget: a change emitted
	// again from the join state then carries the cut, marked value.
	LongValuesDropped uint64
	// DedupeConflicts counts records whose (computer, channel, record id)
	// was seen before with other content: processed as new, because one
	// of them was forged or rewritten on the way.
	DedupeConflicts uint64
	// HostIPsDropped counts host addresses removed from records because
	// their sender may not name them (DecodeFrom).
	HostIPsDropped uint64
	// Joins counts completed two-record joins; Redundant counts Security
	// 4946/4947/4948 records made redundant by the Firewall channel's
	// record of the same rule change: not emitted when that came first,
	// replaced by it (ExposureChange.Replaces) when it came after.
	Joins, Redundant uint64
	// Hosts is the number of hosts with join state now, JoinEntries the
	// entries of their join tables together.
	Hosts, JoinEntries int
}

// Stats returns the cumulative counters.
func (d *Decoder) Stats() Stats {
	s := Stats{ByFormat: map[Format]FormatStats{}, Rejected: map[Reason]uint64{}}
	for i, f := range Formats {
		c := &d.c.byFormat[i]
		s.ByFormat[f] = FormatStats{
			Read: c.read.Load(), Relevant: c.relevant.Load(), Skipped: c.skipped.Load(),
			Duplicates: c.duplicates.Load(), Rejected: c.rejected.Load(), Emitted: c.emitted.Load(),
		}
	}
	for i, r := range Reasons {
		s.Rejected[r] = d.c.reasons[i].Load()
	}
	d.st.mu.Lock()
	sc := d.st.counts
	s.Hosts = d.st.hosts.len()
	s.JoinEntries = d.st.entries
	d.st.mu.Unlock()
	s.DedupeEvicted, s.HostsEvicted, s.JoinEvicted, s.PendingDropped = sc.DedupeEvicted, sc.HostsEvicted, sc.JoinEvicted, sc.PendingDropped
	s.LongValuesDropped = sc.LongDropped
	s.Joins, s.Redundant = sc.Joins, sc.Redundant
	s.DedupeConflicts = sc.DedupeConflicts
	s.HostIPsDropped = d.c.hostIPsDropped.Load()
	return s
}
