// Package pipeline is the glue between knockwatch's parts that both
// `knockwatch run` (live) and `knockwatch replay` (captures) use:
//
//	loader records (KNOCK, HANDSHAKE) ─┐
//	                                   ├─► correlate.Engine ─► batches ─► alert.Sink
//	winevents payloads (intake) ───────┘
//
// It converts the sensor's records and the decoders' exposure changes into
// the engine's input types (adapt.go), implements intake.Handler so every
// listener can feed forwarded Windows events straight in, and delivers the
// engine's alerts to a sink in batches, flushed on a short timer and on
// Close.
//
// With an evidence log (Config.Evidence, `knockwatch run`'s --state-dir)
// every piece of evidence is appended to it before the engine sees it;
// Sync (intake.Syncer) makes it durable, and the listeners acknowledge an
// event only after it. A change whose storing failed (a full disk, a failed
// fsync) is kept and appended again before a later Sync can succeed: the
// decoder takes the forwarder's re-send of a record with a record id for a
// duplicate, so that re-send is acknowledged only once the first
// delivery's change is durable. Rebuild replays the log into the engine at start,
// and with an alert ledger (Config.Delivered) the alert records the sinks
// accepted before a restart are not sent again.
//
// Nothing is dropped silently. Evidence the engine rejects is counted by
// kind and reason; exposure changes that are deliberately not fed to the
// engine (host-side connection evidence, Windows' own AppX rule churn, TCP
// sockets that are only bound) are counted by reason; payloads the decoders
// cannot read become Result.Err with a counter. Alerts are never dropped:
// while the sink is failing they stay queued and are retried, and while the
// queue is over its bound event payloads are refused with intake.ErrBusy
// (HTTP 429, Beats withholds its ACK, TCP syslog stops reading) and the
// sensor's callers wait, so the pressure reaches the senders instead of
// memory growing without bound. Alerts still undelivered when Close gives
// up are written to the error log in full and counted.
package pipeline
