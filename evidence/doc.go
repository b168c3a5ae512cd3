// Package evidence is knockwatch's durable memory: the evidence log the
// correlation engine's state is rebuilt from after a restart, and the
// ledger of alert records already delivered.
//
// # The evidence log
//
// The engine's state is, by design, a function of the last retention (20
// minutes by default) of evidence in event time. Every piece of evidence —
// KNOCK and HANDSHAKE records from the sensor, exposure changes decoded
// from forwarded Windows events — is appended to the log (an Item) before
// the engine sees it; at start the engine rebuilds its state by replaying
// the log from now - retention (event time), then follows live. A listener
// acknowledges an event (HTTP 202, a Beats ACK, a followed file's saved
// position) only after Sync returned for it.
//
// On disk the log is a directory of append-only segment files
// (seg-<sequence>.log) of CRC-32C frames (internal/frame, the framing the
// alert spool uses, with its own magic "KWE1"). Each Append is one write
// of one batch. The fsync policy is FsyncBatch (default): Sync fsyncs
// every batch appended before it, and concurrent callers share one fsync
// (group commit); FsyncOff never fsyncs (a kill or crash of the process
// loses nothing written, a power cut loses what the kernel had not yet
// written back).
//
// Bounds: a segment is closed at SegmentBytes or after a quarter of MaxAge;
// Maintain removes closed segments whose newest evidence (event time,
// capped at an hour past its arrival so that a host clock in the future
// cannot pin a segment) is older than MaxAge; at MaxBytes the oldest
// segment is removed at once and counted (the engine still holds that
// evidence in memory; only a restart could no longer rebuild it). Each
// process start begins a new segment, so a segment torn by a crash is
// never appended to again: its torn last record is skipped, logged and
// counted at every open until the segment ages out. Damaged frames in the
// middle of a segment cost those frames only. A write or fsync that fails
// (a full disk: ErrNoSpace) is an error of that Append or Sync, counted by
// reason; the log keeps working once there is room again.
//
// # Failed fsyncs
//
// Linux reports a failed write-back once: the fsync returns EIO, the pages
// are marked clean (their data may never reach the disk), and the next
// fsync of the same file succeeds. So the store never fsyncs a failed file
// again to make it count. It keeps in memory every batch appended since the
// last good fsync (the tail, bounded by MaxUnsynced); after a failed fsync,
// or a failed write, it closes the segments, cuts each back to what a good
// fsync covered (so a restart does not read those records twice), and
// writes the whole tail again into a new segment — before any newer batch,
// and before an fsync may succeed. A Sync that returns nil therefore covers
// every batch appended before it, whatever failed in between; until the
// tail can be written and fsynced, Sync fails. An Append that fails is not
// in the log and not kept: its caller keeps it (the pipeline keeps sensor
// records and decoded changes, the Ledger its marks) and appends it again.
// At MaxUnsynced an Append first fsyncs; if that fails it is refused
// (ErrUnsynced, counted), so a failing disk cannot grow memory without
// bound. The ledger uses the same store, and Ledger.Sync writes again what
// its failures left without waiting for the next alert.
//
// The log's interface — Append, Sync, Replay — is the seam a distributed
// deployment replaces with a topic: Append is a produce, Sync a flush
// waiting for the acknowledgements, Replay a read from an offset found by
// timestamp.
//
// # The alert ledger
//
// Alert ids are deterministic (correlate hashes source, destination, port
// and handshake ACK time), so the rebuilt engine emits the same ids for
// the same evidence. The Ledger remembers, per id, the best rank
// (correlate.Alert.Rank) a sink accepted; the pipeline does not send a
// record whose rank the ledger already has, and sends a better one as an
// upgrade. A mark is written after the sink accepted the record, so a crash
// between the two sends that record again after the restart (at least
// once, the same event.id), never loses it.
//
// # Attacks on this state
//
// Everything here is written by the evidence a sender controls. Flooding
// evidence to push an attacker's knock out of the log works only at the
// size bound, is counted (RemovedSegments{size}), and costs the attacker
// the knock only across a restart (the engine keeps it in memory with its
// own class-ordered eviction). Forged frames cannot enter the log: only
// the pipeline writes it. Damaged or crafted bytes on disk are skipped by
// CRC and by the decoders' bounds (no list or string longer than its
// payload is ever allocated) and counted, never a crash. A record from a
// newer format is skipped and counted, never misread.
package evidence
