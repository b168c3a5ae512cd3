package alert

import (
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
)

// run is the background sender: it delivers the spool in order, one batch
// at a time, and commits the cursor after every 2xx (or dead letter). It
// exits when Close was called and either the spool is empty or the final
// attempt failed.
func (w *Webhook) run() {
	defer close(w.done)
	var (
		pending    []Record
		pendingEnd position
		isolateTo  position // while the cursor is before it, send one record per request
		isolating  bool
		backoff    = w.cfg.InitialBackoff
		closing    bool
	)
	w.spool.mu.Lock()
	cursor := w.spool.cursor
	w.spool.mu.Unlock()

	// wait sleeps d or until Close; it reports whether Close was called.
	wait := func(d time.Duration) bool {
		if closing {
			return true
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return false
		case <-w.stop:
			closing = true
			return true
		}
	}
	// fail handles a failure that is retried: back off, or give up when
	// closing. It reports whether the sender must exit.
	fail := func(retryAfter time.Duration) bool {
		if closing || w.ctx.Err() != nil {
			return true
		}
		d := backoff/2 + rand.N(backoff/2+1)
		if retryAfter > 0 {
			d = max(d, min(retryAfter, w.cfg.MaxBackoff))
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
		// When Close is called during the wait, the next attempt is the
		// final one.
		wait(d)
		if w.ctx.Err() != nil {
			return true
		}
		w.c.retries.Add(1)
		return false
	}

	for {
		if pending == nil {
			if isolating && !before(cursor, isolateTo) {
				isolating = false
			}
			maxRecs := w.cfg.BatchRecords
			if isolating {
				maxRecs = 1
			}
			recs, next, err := w.spool.read(cursor, maxRecs, w.cfg.BatchBytes, maxIDsHeaderBytes)
			if err != nil {
				w.c.errors.Add(1)
				w.log.Error("read alert spool", zap.Error(err))
				if fail(0) {
					return
				}
				continue
			}
			if len(recs) == 0 {
				if next != cursor {
					// Only corruption (or a segment boundary) was passed.
					w.commit(next, 0)
					cursor = next
					continue
				}
				if closing {
					return
				}
				select {
				case <-w.notify:
				case <-w.stop:
					closing = true
				}
				continue
			}
			pending, pendingEnd = recs, next
		}
		if closing && w.ctx.Err() != nil {
			return
		}

		res := w.post(w.ctx, pending)
		switch res.outcome {
		case delivered:
			w.commit(pendingEnd, len(pending))
			w.c.delivered.Add(uint64(len(pending)))
			cursor, pending = pendingEnd, nil
			backoff = w.cfg.InitialBackoff
		case rejected:
			if len(pending) > 1 {
				// Find the rejected records: re-send this batch one by one.
				w.log.Warn("receiver rejected a batch; sending its records one by one",
					zap.Int(fieldStatus, res.status), zap.Int(fieldRecords, len(pending)), zap.String(fieldReply, res.reply))
				isolating, isolateTo, pending = true, pendingEnd, nil
				continue
			}
			r := pending[0]
			if err := w.dead.add(r, res, w.url, time.Now()); err != nil {
				w.c.errors.Add(1)
				w.log.Error("dead-letter a rejected alert; it stays in the spool", zap.Error(err),
					zap.String(fieldEventID, r.ID), zap.String(fieldAction, r.Action))
				if fail(0) {
					return
				}
				continue
			}
			w.commit(pendingEnd, 1)
			w.c.deadLettered.Add(1)
			w.log.Warn("receiver rejected an alert; moved to the dead-letter file",
				zap.Int(fieldStatus, res.status), zap.String(fieldEventID, r.ID), zap.String(fieldAction, r.Action),
				zap.String(fieldReply, res.reply), zap.String("dead_letter", w.cfg.DeadLetterPath))
			cursor, pending = pendingEnd, nil
		case retryable:
			w.c.errors.Add(1)
			w.log.Warn("deliver alerts; will retry", zap.Error(res.err), zap.Int(fieldRecords, len(pending)),
				zap.Duration(fieldBackoff, backoff), zap.String(fieldReply, res.reply))
			if fail(res.retryAfter) {
				return
			}
		}
	}
}

// commit moves the spool cursor; a failure to persist it is logged (the
// records may then be sent again after a restart, never lost).
func (w *Webhook) commit(to position, n int) {
	if err := w.spool.commit(to, n); err != nil {
		w.c.errors.Add(1)
		w.log.Error("commit alert spool cursor", zap.Error(err))
	}
}

// before reports whether a comes before b in the spool.
func before(a, b position) bool {
	return a.seg < b.seg || (a.seg == b.seg && a.off < b.off)
}
