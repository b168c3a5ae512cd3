package evidence

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/knockwatch/knockwatch/internal/frame"
)

// Mark is one alert record the sinks accepted: its id, action and rank
// (correlate.Alert.Rank), and when.
type Mark struct {
	ID     string
	Action string
	Rank   int
	Time   time.Time
}

// The ledger's payload, version 1:
//
//	version 1 | time (varint s, uvarint ns) | rank (1 byte) | id | action
//
// with id and action as uvarint length + bytes.
const (
	markVersion = 1
	maxMarkID   = 256
)

// maxKeptMarkBytes bounds the encoded marks a failed append leaves in
// memory to write again; past it marks are dropped and counted (a restart
// may then send those alerts again: at least once, never lost).
const maxKeptMarkBytes = 4 << 20

var ledgerFormat = frame.Format{
	Magic:      "KWA1",
	MaxPayload: 1 + 2*binary.MaxVarintLen64 + 1 + 2*(binary.MaxVarintLen64+maxMarkID),
	HeadBytes:  1,
	Plausible:  func(h []byte, _ int) bool { return len(h) == 1 && h[0] == markVersion },
	Valid: func(p []byte) bool {
		_, err := decodeMark(p)
		return err == nil
	},
}

func appendMark(b []byte, m Mark) []byte {
	b = append(b, markVersion)
	b = appendTime(b, m.Time)
	b = append(b, byte(min(max(m.Rank, 0), 255)))
	b = appendString(b, m.ID)
	return appendString(b, m.Action)
}

func decodeMark(p []byte) (Mark, error) {
	d := decoder{b: p}
	if v := d.byte(); v != markVersion {
		return Mark{}, fmt.Errorf("%w: ledger version %d", ErrBadItem, v)
	}
	m := Mark{Time: d.time(), Rank: int(d.byte()), ID: d.string(), Action: d.string()}
	if d.err == nil && (len(d.b) != 0 || m.ID == "" || len(m.ID) > maxMarkID || len(m.Action) > maxMarkID) {
		d.fail("bad ledger record")
	}
	return m, d.err
}

func markStamp(p []byte) (int64, bool) {
	m, err := decodeMark(p)
	if err != nil {
		return 0, false
	}
	return m.Time.UnixNano(), true
}

// LedgerConfig configures the alert ledger.
type LedgerConfig struct {
	Dir string
	// MaxAge: marks older than this are forgotten (Maintain). It must
	// exceed how long the evidence log can bring an alert back: the
	// evidence log's MaxAge plus the engine's retention.
	MaxAge time.Duration
	// MaxBytes bounds the ledger on disk (default 64 MiB).
	MaxBytes int64
	// Fsync is FsyncBatch (default) or FsyncOff.
	Fsync  string
	Logger *zap.Logger
	Now    func() time.Time
	// SyncFile fsyncs a segment file; nil: (*os.File).Sync (fault tests
	// inject failures, like LogConfig.SyncFile).
	SyncFile func(f *os.File) error
}

// Ledger remembers the alert records the sinks accepted, so that a
// rebuild after a restart does not send them again: alert ids are
// deterministic (correlate hashes source, destination, port and ACK time),
// so the rebuilt engine emits the same ids for the same evidence. Rank and
// Record are safe for concurrent use.
type Ledger struct {
	cfg LedgerConfig
	st  *store
	log *zap.Logger

	mu   sync.Mutex
	best map[string]ledgerEntry

	// wmu serialises writes, so that marks a failed append left (kept)
	// go to the ledger before newer ones.
	wmu        sync.Mutex
	kept       []byte // frames of the marks whose append failed, in order
	keptN      int
	keptNewest int64
	lastWarn   time.Time

	recorded, errs, dropped atomic.Uint64
	keptMarks               atomic.Int64
}

type ledgerEntry struct {
	rank int
	t    int64
}

// OpenLedger opens the ledger in cfg.Dir and loads the marks younger than
// MaxAge. Damage is skipped, logged and counted.
func OpenLedger(cfg LedgerConfig) (*Ledger, error) {
	if cfg.Dir == "" || cfg.MaxAge <= 0 {
		return nil, errors.New("alert ledger: directory and max age required")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	switch cfg.Fsync {
	case "":
		cfg.Fsync = FsyncBatch
	case FsyncBatch, FsyncOff:
	default:
		return nil, fmt.Errorf("alert ledger: fsync %q: want %s or %s", cfg.Fsync, FsyncBatch, FsyncOff)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Ledger{cfg: cfg, log: cfg.Logger.Named("evidence"), best: map[string]ledgerEntry{}}
	st, notes, err := openStore(storeConfig{
		dir: cfg.Dir, format: &ledgerFormat, maxBytes: cfg.MaxBytes, segBytes: cfg.MaxBytes / 4, maxTail: cfg.MaxBytes / 4,
		segAge: max(cfg.MaxAge/4, time.Second), fsync: cfg.Fsync == FsyncBatch, stamp: markStamp, now: cfg.Now,
		syncFile: cfg.SyncFile,
	})
	if err != nil {
		return nil, fmt.Errorf("open alert ledger: %w", err)
	}
	l.st = st
	for _, n := range notes {
		l.log.Warn("alert ledger: "+n, zap.String(fieldDir, cfg.Dir))
	}
	cut := cfg.Now().Add(-cfg.MaxAge).UnixNano()
	if err := st.scan(func(p []byte) error {
		m, err := decodeMark(p)
		if err == nil && m.Time.UnixNano() >= cut {
			l.note(m)
		}
		return nil
	}, false); err != nil {
		_ = st.close()
		return nil, fmt.Errorf("open alert ledger: %w", err)
	}
	return l, nil
}

func (l *Ledger) note(m Mark) {
	t := m.Time.UnixNano()
	e, ok := l.best[m.ID]
	if !ok {
		l.best[m.ID] = ledgerEntry{rank: m.Rank, t: t}
		return
	}
	l.best[m.ID] = ledgerEntry{rank: max(m.Rank, e.rank), t: max(t, e.t)}
}

// Rank returns the best rank delivered for id, if any.
func (l *Ledger) Rank(id string) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.best[id]
	return e.rank, ok
}

// Record appends marks and (with FsyncBatch) fsyncs them, after the marks
// earlier failures left. On an error the marks are not lost: those whose
// append failed are kept in memory (bounded, maxKeptMarkBytes) and those
// whose fsync failed are written again by the log's store, both before
// any later Record or Sync can succeed.
func (l *Ledger) Record(ctx context.Context, marks []Mark) error {
	if len(marks) == 0 {
		return nil
	}
	var buf []byte
	var newest int64
	n := 0
	l.mu.Lock()
	for _, m := range marks {
		if m.ID == "" || len(m.ID) > maxMarkID || len(m.Action) > maxMarkID {
			continue
		}
		l.note(m)
		n++
		start := len(buf)
		buf = ledgerFormat.Begin(buf)
		buf = appendMark(buf, m)
		buf = ledgerFormat.End(buf, start)
		newest = max(newest, m.Time.UnixNano())
	}
	l.mu.Unlock()
	if n == 0 {
		return nil
	}
	return l.write(ctx, buf, n, newest)
}

// Sync makes every mark recorded durable: it appends the marks a failed
// append left and fsyncs (writing again what a failed fsync covered). The
// pipeline calls it periodically, so that a failure is made good without
// waiting for the next alert.
func (l *Ledger) Sync(ctx context.Context) error { return l.write(ctx, nil, 0, 0) }

// write appends the kept marks and then buf (n marks), and syncs.
func (l *Ledger) write(ctx context.Context, buf []byte, n int, newest int64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	all, total, nw := buf, n, newest
	if l.keptN > 0 {
		all = append(slices.Clip(l.kept), buf...)
		total += l.keptN
		nw = max(nw, l.keptNewest)
	}
	if total > 0 {
		if err := l.st.append(ctx, all, total, nw); err != nil {
			l.keepLocked(buf, n, newest)
			l.errs.Add(1)
			return fmt.Errorf("record delivered alerts (%d marks kept in memory to write again): %w", l.keptN, err)
		}
		l.kept, l.keptN, l.keptNewest = nil, 0, 0
		l.keptMarks.Store(0)
		l.recorded.Add(uint64(total))
	}
	if err := l.st.sync(ctx); err != nil {
		l.errs.Add(1)
		return fmt.Errorf("record delivered alerts: %w", err)
	}
	return nil
}

// keepLocked keeps marks whose append failed, up to maxKeptMarkBytes;
// past it they are dropped, counted and logged (at most once a minute).
func (l *Ledger) keepLocked(buf []byte, n int, newest int64) {
	if n == 0 {
		return
	}
	if len(l.kept)+len(buf) > maxKeptMarkBytes {
		l.dropped.Add(uint64(n))
		if now := time.Now(); now.Sub(l.lastWarn) >= time.Minute {
			l.lastWarn = now
			l.log.Error("alert ledger: the marks waiting to be written again are at their bound: these are dropped, and a restart may send their alerts again",
				zap.Int(fieldRecords, n), zap.Int("kept", l.keptN), zap.String(fieldDir, l.cfg.Dir))
		}
		return
	}
	l.kept = append(l.kept, buf...)
	l.keptN += n
	l.keptNewest = max(l.keptNewest, newest)
	l.keptMarks.Store(int64(l.keptN))
}

// Maintain forgets marks older than MaxAge and removes their segments.
func (l *Ledger) Maintain(now time.Time) {
	cut := now.Add(-l.cfg.MaxAge)
	l.st.removeOlder(cut)
	c := cut.UnixNano()
	l.mu.Lock()
	for id, e := range l.best {
		if e.t < c {
			delete(l.best, id)
		}
	}
	l.mu.Unlock()
}

// Close writes the marks a failed append left, fsyncs, closes and unlocks.
func (l *Ledger) Close() error {
	var werr error
	l.wmu.Lock()
	if l.keptN > 0 {
		if err := l.st.append(context.Background(), l.kept, l.keptN, l.keptNewest); err != nil {
			werr = fmt.Errorf("%d marks not recorded (a restart may send their alerts again): %w", l.keptN, err)
		}
	}
	l.wmu.Unlock()
	if err := errors.Join(werr, l.st.close()); err != nil {
		return fmt.Errorf("close alert ledger: %w", err)
	}
	return nil
}

// LedgerStats is a snapshot of the ledger.
type LedgerStats struct {
	// Entries is the alert ids remembered; Bytes the ledger on disk.
	Entries int
	Bytes   int64
	// Recorded counts marks written by this process; Errors failed
	// appends and fsyncs (the marks are kept and written again: see
	// Record); Dropped marks lost because those waiting to be written
	// again were at their bound (a restart may send those alerts again).
	Recorded, Errors, Dropped uint64
	// Unsynced is the marks no good fsync covered yet (kept in memory to
	// write again after a failure).
	Unsynced int
	// CorruptFrames counts damaged or torn frames skipped.
	CorruptFrames uint64
}

// Stats returns a snapshot.
func (l *Ledger) Stats() LedgerStats {
	s := l.st.stats()
	l.mu.Lock()
	n := len(l.best)
	l.mu.Unlock()
	tail, _ := l.st.tailStats()
	return LedgerStats{Entries: n, Bytes: s.Bytes, Recorded: l.recorded.Load(), Errors: l.errs.Load(), Dropped: l.dropped.Load(),
		Unsynced: tail + int(l.keptMarks.Load()), CorruptFrames: s.CorruptFrames}
}
