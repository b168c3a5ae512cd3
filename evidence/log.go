package evidence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/internal/frame"
)

// Fsync policies (LogConfig.Fsync, LedgerConfig.Fsync).
const (
	// FsyncBatch: Sync fsyncs every batch appended before it; the
	// pipeline calls it before a listener acknowledges an event. What was
	// acknowledged survives a crash of the machine.
	FsyncBatch = "batch"
	// FsyncOff: appends are written (they survive a crash or kill of the
	// process: the page cache keeps them) but never fsynced; a power cut
	// loses what the kernel had not written back.
	FsyncOff = "off"
)

// Defaults of LogConfig.
const (
	DefaultMaxBytes     = 1 << 30
	DefaultSegmentBytes = 64 << 20
	DefaultMaxUnsynced  = 64 << 20
)

// maxItemBytes bounds one encoded item (a frame's payload); an item over it
// is not stored (counted in Stats.TooLarge).
const maxItemBytes = 16 << 20

// maxFuture bounds how far past its arrival an item's event time can keep
// a segment: a host clock years ahead must not pin a segment for years.
const maxFuture = time.Hour

// logFormat is the evidence log's frame.
var logFormat = frame.Format{
	Magic:      "KWE1",
	MaxPayload: maxItemBytes,
	HeadBytes:  2,
	Plausible: func(h []byte, _ int) bool {
		return len(h) == 2 && (h[0] == itemVersion || h[0] == itemVersionV1) && h[1] >= 1 && h[1] <= 3
	},
	Valid: func(p []byte) bool {
		_, _, _, _, err := itemHeader(p)
		return err == nil
	},
}

// itemStamp is the time an item counts for in the age bound: its event
// time, but no later than maxFuture after its arrival.
func itemStamp(p []byte) (int64, bool) {
	_, arrival, event, _, err := itemHeader(p)
	if err != nil {
		return 0, false
	}
	if lim := arrival.Add(maxFuture); event.After(lim) {
		event = lim
	}
	return event.UnixNano(), true
}

// LogConfig configures the evidence log.
type LogConfig struct {
	// Dir holds the segments (created if missing, locked while open).
	Dir string
	// MaxAge is the age bound: a segment whose newest evidence (event
	// time) is older than MaxAge is removed by Maintain. It must cover the
	// engine's retention (the pipeline rebuilds from now - retention -
	// lateness - skew).
	MaxAge time.Duration
	// MaxBytes bounds the log on disk (default DefaultMaxBytes): at the
	// bound the oldest segment is removed and counted.
	MaxBytes int64
	// SegmentBytes is the size at which a segment is closed and a new one
	// begun (default DefaultSegmentBytes, at most MaxBytes/4).
	SegmentBytes int64
	// Fsync is FsyncBatch (default) or FsyncOff.
	Fsync string
	// MaxUnsynced bounds the bytes appended since the last good fsync,
	// which the log keeps in memory (FsyncBatch) to write them again after
	// a failed write or fsync (default DefaultMaxUnsynced, at most a
	// quarter of MaxBytes). At the bound an append first fsyncs; if that
	// fails the append is refused (ErrUnsynced).
	MaxUnsynced int64
	// Logger receives damage and bound notices (named "evidence").
	Logger *zap.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// SyncFile fsyncs a segment file; nil: (*os.File).Sync. Fault tests
	// set it to inject fsync failures (internal/testsupport/faultdisk).
	SyncFile func(f *os.File) error
}

func (c *LogConfig) defaults() error {
	if c.Dir == "" {
		return errors.New("evidence log: no directory")
	}
	if c.MaxAge <= 0 {
		return errors.New("evidence log: max age must be positive")
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = min(DefaultSegmentBytes, c.MaxBytes/4)
	}
	if c.MaxUnsynced <= 0 {
		c.MaxUnsynced = min(DefaultMaxUnsynced, c.MaxBytes/4)
	}
	if c.SegmentBytes > c.MaxBytes/4 {
		return fmt.Errorf("evidence log: segment size %d over a quarter of the size bound %d", c.SegmentBytes, c.MaxBytes)
	}
	switch c.Fsync {
	case "":
		c.Fsync = FsyncBatch
	case FsyncBatch, FsyncOff:
	default:
		return fmt.Errorf("evidence log: fsync %q: want %s or %s", c.Fsync, FsyncBatch, FsyncOff)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// bufPool holds the encode buffers of Append (written, then reused).
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Log is the evidence log: every piece of evidence is appended to it
// before the engine sees it, and the engine rebuilds its state from it at
// start. Append, Sync and Stats are safe for concurrent use.
type Log struct {
	cfg LogConfig
	st  *store
	log *zap.Logger

	appended [KindChange + 1]atomic.Uint64
	tooLarge atomic.Uint64

	mu       sync.Mutex
	replay   ReplayStats
	lastWarn time.Time
}

// Log field names.
const (
	fieldDir     = "dir"
	fieldRecords = "records"
	fieldReason  = "reason"
)

// OpenLog opens the log in cfg.Dir, reading what is there. Damaged or
// torn records are skipped, logged and counted; nothing is written at open
// (a full disk does not stop it).
func OpenLog(cfg LogConfig) (*Log, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, log: cfg.Logger.Named("evidence")}
	st, notes, err := openStore(storeConfig{
		dir: cfg.Dir, format: &logFormat, maxBytes: cfg.MaxBytes, segBytes: cfg.SegmentBytes,
		segAge: max(cfg.MaxAge/4, time.Second), fsync: cfg.Fsync == FsyncBatch, stamp: itemStamp, now: cfg.Now,
		removed: l.removedAtBound, syncFile: cfg.SyncFile, maxTail: cfg.MaxUnsynced,
	})
	if err != nil {
		return nil, fmt.Errorf("open evidence log: %w", err)
	}
	l.st = st
	for _, n := range notes {
		l.log.Warn("evidence log: "+n, zap.String(fieldDir, cfg.Dir))
	}
	return l, nil
}

// removedAtBound logs (at most once a minute) that the size bound removed
// evidence; the counters have every removal.
func (l *Log) removedAtBound(reason string, records int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.lastWarn) >= time.Minute {
		l.lastWarn = now
		l.log.Warn("evidence log at its size bound: oldest segment removed; a restart cannot rebuild from its evidence (raise evidence_log.max_bytes)",
			zap.String(fieldReason, reason), zap.Int64(fieldRecords, records), zap.Int64("max_bytes", l.cfg.MaxBytes))
	}
}

// Append writes items as one batch, in order. With FsyncBatch they are
// durable once a Sync after it returns nil — even if Syncs fail in between:
// the log keeps what no good fsync covered and writes it again (see Sync);
// either way they survive a crash of the process once Append returns. On
// an error none of them is in the log (errors.Is(err, ErrNoSpace) for a
// full disk, ErrUnsynced while a failing disk holds MaxUnsynced in memory):
// the caller keeps them if it needs them. An item that cannot be encoded
// (no evidence, over 16 MiB) is skipped and counted, not an error.
func (l *Log) Append(ctx context.Context, items []Item) error {
	if len(items) == 0 {
		return nil
	}
	bp := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 4<<20 { // keep what a normal batch needs, not a giant one
			bufPool.Put(bp)
		}
	}()
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0] }()
	n := 0
	var newest int64
	var kinds [KindChange + 1]uint64
	for i := range items {
		it := &items[i]
		start := len(buf)
		buf = logFormat.Begin(buf)
		var err error
		buf, err = AppendItem(buf, it)
		if err != nil || len(buf)-start-frame.HeaderSize > maxItemBytes {
			buf = buf[:start]
			l.tooLarge.Add(1)
			continue
		}
		buf = logFormat.End(buf, start)
		n++
		kinds[it.Kind()]++
		t := it.Time()
		if lim := it.Arrival.Add(maxFuture); t.After(lim) {
			t = lim
		}
		newest = max(newest, t.UnixNano())
	}
	if n == 0 {
		return nil
	}
	if err := l.st.append(ctx, buf, n, newest); err != nil {
		return fmt.Errorf("append evidence: %w", err)
	}
	for k, v := range kinds {
		l.appended[k].Add(v)
	}
	return nil
}

// Sync returns once every batch appended before it is durable (fsynced);
// with FsyncOff it returns at once. Concurrent calls share fsyncs.
//
// A failed fsync is not retried on the same file: Linux reports a failed
// write-back once, drops the pages, and a second fsync succeeds without
// them. The log cuts its segments back to what the last good fsync
// covered, closes them, and writes every batch appended since then again
// into a new segment (before any newer batch), so a later Sync that returns
// nil covers them; until that works Sync keeps failing (counted in
// Stats.Errors; Stats.Cut and Stats.Rewritten count the recoveries). A
// failed write does the same at the next Sync.
func (l *Log) Sync(ctx context.Context) error {
	if err := l.st.sync(ctx); err != nil {
		return fmt.Errorf("sync evidence log: %w", err)
	}
	return nil
}

// ReplayStats describes the last Replay.
type ReplayStats struct {
	// Read counts valid records read; Replayed those handed on; Expired
	// those older than the start (event time); Undecodable those that did
	// not decode (a newer format, or damage the CRC did not catch).
	Read, Replayed, Expired, Undecodable uint64
	// Duration is how long the replay took, including fn.
	Duration time.Duration
}

// Replay calls fn, in log order, for every item whose event time is not
// before since. An error from fn stops it and is returned. Damage is
// skipped and counted; an item that does not decode is counted.
func (l *Log) Replay(since time.Time, fn func(Item) error) (ReplayStats, error) {
	start := time.Now()
	var rs ReplayStats
	cut := since.UnixNano()
	err := l.st.scan(func(p []byte) error {
		rs.Read++
		_, _, event, _, err := itemHeader(p)
		if err == nil && event.UnixNano() < cut && !since.IsZero() {
			rs.Expired++
			return nil
		}
		it, err := DecodeItem(p)
		if err != nil {
			rs.Undecodable++
			l.st.c.undecodable.Add(1)
			return nil
		}
		rs.Replayed++
		return fn(it)
	}, false)
	rs.Duration = time.Since(start)
	l.mu.Lock()
	l.replay = rs
	l.mu.Unlock()
	return rs, err
}

// Maintain removes the segments whose newest evidence is older than
// MaxAge before now, and closes the active segment when it has been open
// for a quarter of MaxAge so that it can age out. Call it periodically.
func (l *Log) Maintain(now time.Time) { l.st.removeOlder(now.Add(-l.cfg.MaxAge)) }

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.cfg.Dir }

// Config returns the configuration the log runs with (defaults filled in).
func (l *Log) Config() LogConfig { return l.cfg }

// Close fsyncs (with FsyncBatch), closes the segments and unlocks the
// directory.
func (l *Log) Close() error {
	if err := l.st.close(); err != nil {
		return fmt.Errorf("close evidence log: %w", err)
	}
	return nil
}

// Stats is a snapshot of the log's size and counters (plain values).
type Stats struct {
	// Bytes and Segments are the log on disk; Records the valid records
	// in it; CapacityBytes the size bound.
	Bytes, CapacityBytes int64
	Segments             int
	Records              int64
	// Appended counts items appended by this process, by kind (knock,
	// handshake, change); AppendedBytes their bytes; TooLarge the items
	// skipped because they could not be encoded.
	Appended      map[string]uint64
	AppendedBytes uint64
	TooLarge      uint64
	// Fsyncs counts fsync calls; Errors failed appends and fsyncs by
	// reason (no_space, io, unsynced_full).
	Fsyncs uint64
	Errors map[string]uint64
	// Unsynced and UnsyncedBytes are the records appended since the last
	// good fsync, kept in memory to write again after a failure (bounded
	// by MaxUnsynced); Cut counts segments cut back to their last good
	// fsync after a failed write or fsync, Rewritten the records written
	// again after one.
	Unsynced      int
	UnsyncedBytes int64
	Cut           uint64
	Rewritten     uint64
	// CorruptFrames and CorruptBytes count damaged or torn frames skipped;
	// TornSegments segments whose last append was cut short; Undecodable
	// CRC-valid records that did not decode.
	CorruptFrames, CorruptBytes, TornSegments, Undecodable uint64
	// RemovedSegments and RemovedRecords count what the bounds removed, by
	// reason (age, size). Records removed for size were still within the
	// age bound: a restart cannot rebuild from them.
	RemovedSegments, RemovedRecords map[string]uint64
	// Rebuild is the last Replay.
	Rebuild ReplayStats
}

// Stats returns a snapshot.
func (l *Log) Stats() Stats {
	s := l.st.stats()
	out := Stats{
		Bytes: s.Bytes, CapacityBytes: s.CapacityBytes, Segments: s.Segments, Records: s.Records,
		Appended: map[string]uint64{}, AppendedBytes: s.AppendedBytes, TooLarge: l.tooLarge.Load(),
		Fsyncs: s.Fsyncs, Errors: s.Errors, CorruptFrames: s.CorruptFrames, CorruptBytes: s.CorruptBytes,
		TornSegments: s.TornSegments, Undecodable: s.Undecodable,
		RemovedSegments: s.RemovedSegments, RemovedRecords: s.RemovedRecords,
		Cut: s.Cut, Rewritten: s.Rewritten,
	}
	out.Unsynced, out.UnsyncedBytes = l.st.tailStats()
	for _, k := range Kinds {
		out.Appended[k.String()] = l.appended[k].Load()
	}
	l.mu.Lock()
	out.Rebuild = l.replay
	l.mu.Unlock()
	return out
}
