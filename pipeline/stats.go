package pipeline

import (
	"maps"
	"time"
)

// Stats is a snapshot of the pipeline's own counters (the engine, decoder
// and sink report theirs through Engine().Stats(), Decoder().Stats() and
// alert.StatsOf(Sink())).
type Stats struct {
	// In counts evidence handed to the engine by kind (knock, handshake,
	// change).
	In map[string]uint64
	// Rejected counts evidence refused, by kind then reason (the engine's
	// validation errors, or closed/cancelled while waiting).
	Rejected map[string]map[string]uint64
	// ChangesSkipped counts decoded changes not fed to the engine, by
	// reason (connection, app_package_rule, tcp_bind_only, unknown_kind).
	ChangesSkipped map[string]uint64

	// Payloads counts messages given to Handle; Unreadable those whose
	// payload could not be read at all; Busy those refused with ErrBusy.
	Payloads, Unreadable, Busy uint64
	// Waits counts sensor records that had to wait for the alert queue.
	Waits uint64

	// AlertsEmitted counts alert records from the engine; by confidence
	// (unsuppressed records only) in Alerts. Suppressed and Upgrades count
	// records with knockwatch.suppressed true and event.action upgraded.
	AlertsEmitted, AlertsSuppressed, AlertsUpgraded uint64
	Alerts                                          map[string]uint64
	// MarshalErrors counts alerts that could not be rendered (a bug).
	MarshalErrors uint64
	// AlertsWritten counts records the sink accepted, in Batches writes;
	// WriteErrors failed writes (retried); AlertsQueued waits now.
	AlertsWritten, Batches, WriteErrors uint64
	AlertsQueued                        int
	// AlertsUndelivered counts records still refused at Close (logged).
	AlertsUndelivered uint64

	// NotStored counts evidence the evidence log could not store (the
	// engine evaluated it; events were not acknowledged); SyncErrors
	// failed syncs of the log.
	NotStored, SyncErrors uint64
	// Unstored is the evidence the evidence log refused that is kept to
	// append again: changes whose re-send would be taken for a duplicate,
	// and sensor records; UnstoredBytes their estimated size (bounded by
	// Config.MaxUnstored); Restored counts kept items appended again;
	// UnstoredFull payloads refused unread at the bound; UnstoredDropped
	// sensor records not kept because those kept were at half the bound
	// (a restart cannot rebuild them).
	Unstored, UnstoredBytes                 int
	Restored, UnstoredFull, UnstoredDropped uint64
	// Replayed counts evidence replayed into the engine at the rebuild, by
	// kind; RebuildDuration is how long the rebuild took (Rebuilt: one
	// ran).
	Replayed        map[string]uint64
	RebuildDuration time.Duration
	Rebuilt         bool
	// AlertsAlreadySent counts alert records not sent because the ledger
	// had them (delivered before a restart); LedgerErrors failed ledger
	// writes (the ledger keeps those marks and writes them again; a
	// restart before that may send those alerts again).
	AlertsAlreadySent, LedgerErrors uint64
	// Samples counts clock-calibration handshakes (HANDSHAKE records with
	// Sample) passed to coverage, not to the engine; KnocksHeld the knocks
	// held now for a path coverage finds blind.
	Samples    uint64
	KnocksHeld int64
	// KnocksHeldOverflow counts held knocks the bound sent on to the
	// engine (the oldest of the fullest host), never dropped.
	KnocksHeldOverflow uint64
}

// Stats returns a snapshot.
func (p *Pipeline) Stats() Stats {
	c := &p.counters
	s := Stats{
		Payloads:           c.payloads.Load(),
		Unreadable:         c.unreadable.Load(),
		Busy:               c.busy.Load(),
		Waits:              c.waits.Load(),
		AlertsEmitted:      c.emitted.Load(),
		AlertsSuppressed:   c.suppressed.Load(),
		AlertsUpgraded:     c.upgrades.Load(),
		MarshalErrors:      c.marshal.Load(),
		AlertsWritten:      c.written.Load(),
		Batches:            c.batches.Load(),
		WriteErrors:        c.writeErr.Load(),
		AlertsUndelivered:  c.undeliv.Load(),
		NotStored:          c.notStored.Load(),
		SyncErrors:         c.syncErr.Load(),
		Restored:           c.restored.Load(),
		UnstoredFull:       c.unstoredFull.Load(),
		UnstoredDropped:    c.unstoredDropped.Load(),
		AlertsAlreadySent:  c.alreadySent.Load(),
		LedgerErrors:       c.ledgerErr.Load(),
		Samples:            c.samples.Load(),
		KnocksHeld:         c.heldNow.Load(),
		KnocksHeldOverflow: c.heldOverflow.Load(),
	}
	c.mu.Lock()
	s.In = maps.Clone(c.inByKind)
	s.ChangesSkipped = maps.Clone(c.skipped)
	s.Alerts = maps.Clone(c.alerts)
	s.Replayed = maps.Clone(c.replayed)
	s.RebuildDuration, s.Rebuilt = c.rebuildDur, c.rebuilt
	s.Rejected = make(map[string]map[string]uint64, len(c.rejected))
	for k, m := range c.rejected {
		s.Rejected[k] = maps.Clone(m)
	}
	c.mu.Unlock()
	s.Unstored, s.UnstoredBytes = p.unstoredStats()
	p.mu.Lock()
	s.AlertsQueued = len(p.queue)
	p.mu.Unlock()
	return s
}
