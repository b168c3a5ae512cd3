package alert

import "sync/atomic"

// Stats is a snapshot of one sink's counters, as plain values. Counters only
// grow over the life of the sink; the Spooled* fields are gauges.
type Stats struct {
	// Name identifies the sink (a metric label): "stdout", "file:<path>",
	// "webhook:<host>" unless the configuration named it.
	Name string
	// Kind is "writer", "webhook" or "fanout".
	Kind string

	// Written counts records accepted by Write: written and synced by a
	// Writer, durably spooled by a Webhook.
	Written uint64
	// Delivered counts records that reached their destination: for a
	// Writer the same as Written, for a Webhook records acknowledged by a
	// 2xx response.
	Delivered uint64
	// Invalid counts records rejected by Write because they had no id or
	// their body was not one JSON object.
	Invalid uint64
	// Errors counts failed operations: failed writes and syncs, failed
	// HTTP requests (each attempt), failed spool or dead-letter writes.
	Errors uint64
	// Retries counts HTTP requests sent again after a retryable failure.
	Retries uint64
	// Requests counts HTTP requests sent (first attempts and retries).
	Requests uint64
	// Refused counts records refused by Write because the spool was full.
	Refused uint64
	// DeadLettered counts records the receiver rejected (3xx/4xx other than
	// 408 and 429) that were moved to the dead-letter file.
	DeadLettered uint64
	// CorruptFrames counts torn or corrupted spool frames skipped by the
	// sender; CorruptBytes the bytes skipped with them.
	CorruptFrames uint64
	CorruptBytes  uint64

	// SpooledRecords and SpooledBytes are the records and bytes in the
	// spool that were not delivered yet; SpoolDiskBytes is the size of the
	// spool files on disk, the value bounded by MaxSpoolBytes.
	SpooledRecords uint64
	SpooledBytes   uint64
	SpoolDiskBytes uint64
	// SpoolCapacityBytes is the configured bound of the spool.
	SpoolCapacityBytes uint64

	// Backlog is the records a Fanout holds for this sink because it
	// failed while a durable sink took them (a gauge); BacklogDropped the
	// records dropped from that backlog at its bound (FanoutConfig
	// .MaxBacklog). Both are zero for a sink not under a Fanout.
	Backlog        uint64
	BacklogDropped uint64
}

// StatsReporter is implemented by every sink of this package.
type StatsReporter interface {
	Stats() Stats
}

// StatsOf returns the snapshots of s and, for a Fanout, of every sink below
// it (depth first). Sinks that do not report stats are left out.
func StatsOf(s Sink) []Stats {
	var out []Stats
	var walk func(Sink)
	walk = func(s Sink) {
		if r, ok := s.(StatsReporter); ok {
			out = append(out, r.Stats())
		}
		if f, ok := s.(*Fanout); ok {
			for _, fs := range f.sinks {
				n := len(out)
				walk(fs.s)
				if len(out) > n {
					out[n].Backlog = uint64(fs.nBacklog.Load())
					out[n].BacklogDropped = fs.dropped.Load()
				}
			}
		}
	}
	walk(s)
	return out
}

// counters are the live atomic counters behind Stats.
type counters struct {
	written, delivered, invalid, errors, retries, requests atomic.Uint64
	refused, deadLettered, corruptFrames, corruptBytes     atomic.Uint64
}

func (c *counters) snapshot(name, kind string) Stats {
	return Stats{
		Name:          name,
		Kind:          kind,
		Written:       c.written.Load(),
		Delivered:     c.delivered.Load(),
		Invalid:       c.invalid.Load(),
		Errors:        c.errors.Load(),
		Retries:       c.retries.Load(),
		Requests:      c.requests.Load(),
		Refused:       c.refused.Load(),
		DeadLettered:  c.deadLettered.Load(),
		CorruptFrames: c.corruptFrames.Load(),
		CorruptBytes:  c.corruptBytes.Load(),
	}
}
