package evidence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/knockwatch/knockwatch/internal/frame"
)

// Errors of appends and syncs, for errors.Is.
var (
	// ErrNoSpace wraps a write or fsync refused because the file system is
	// full (ENOSPC, EDQUOT).
	ErrNoSpace = errors.New("no space left on the state directory's file system")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("log closed")
	// ErrUnsynced refuses an append while the appends no fsync has covered
	// yet, which the store keeps in memory to write again after a failed
	// write or fsync, are at their bound and an fsync cannot end them: the
	// disk keeps failing. Nothing of the refused batch is in the log.
	ErrUnsynced = errors.New("appends waiting for a good fsync are at their bound")
)

// Reasons counted in Stats.Errors and Stats.Removed.
const (
	ReasonNoSpace = "no_space" // ENOSPC/EDQUOT on write or fsync
	ReasonIO      = "io"       // any other write or fsync error
	// ReasonUnsynced: an append refused because the appends waiting for a
	// good fsync were at their bound (ErrUnsynced).
	ReasonUnsynced = "unsynced_full"
	ReasonAge      = "age"  // a segment's newest evidence passed the age bound
	ReasonSize     = "size" // the oldest segment removed to stay under the size bound
)

const (
	segPrefix = "seg-"
	segSuffix = ".log"
	lockName  = "lock"
)

func segName(seq uint64) string { return fmt.Sprintf("%s%020d%s", segPrefix, seq, segSuffix) }

// storeConfig configures a store: a directory of append-only segment files
// of CRC frames, bounded by age and size.
type storeConfig struct {
	dir    string
	format *frame.Format
	// maxBytes bounds the segments on disk: at the bound the oldest
	// segment goes (counted). segBytes and segAge roll the active segment.
	maxBytes, segBytes int64
	segAge             time.Duration
	// fsync: Sync makes every append before it durable; without it Sync
	// does nothing (appends survive a crash of the process, not of the
	// machine).
	fsync bool
	// syncFile fsyncs a segment file (LogConfig.SyncFile); nil:
	// (*os.File).Sync.
	syncFile func(*os.File) error
	// maxTail bounds the bytes of the tail (with fsync on): the appends no
	// fsync has covered yet, kept to be written again after a failure.
	maxTail int64
	// stamp returns the time a payload counts for in the age bound
	// (unix ns), or false when the payload does not decode.
	stamp func(p []byte) (int64, bool)
	now   func() time.Time
	// removed, when set, hears of every segment removed at the size bound
	// (called with the store locked: it must not call back).
	removed func(reason string, records int64)
}

// seg is one segment file.
type seg struct {
	seq     uint64
	size    int64 // bytes written and readable
	records int64 // valid records
	newest  int64 // latest stamp of its records (unix ns); 0 when empty
	// syncedSize and syncedRecords are what a good fsync covered (all of
	// it for the segments found at open): a failed fsync cuts the segment
	// back to them.
	syncedSize, syncedRecords int64
}

// chunk is one append of the tail: its frames, kept until an fsync covers
// them so that they can be written again if the file they went to fails.
type chunk struct {
	buf    []byte
	n      int
	newest int64
	end    uint64 // store.written just after it was (last) written
}

// store is the segment machinery the evidence log and the alert ledger
// share. append and sync are safe for concurrent use; appends are ordered
// by the mutex.
type store struct {
	cfg   storeConfig
	lockF *os.File

	mu          sync.Mutex
	segs        []*seg // ascending seq; the last is the active one when active != nil
	active      *os.File
	activeSince time.Time // when the active segment got its first record
	nextSeq     uint64
	written     uint64     // bytes written by this process
	unsynced    []*os.File // sealed segments waiting for their fsync
	closed      bool

	// The tail (with fsync on): every append since the last good fsync, in
	// order. Linux reports a failed write-back once and then drops the
	// pages, so after a failed fsync (or write) of a segment the store
	// cannot tell what of that segment's unsynced bytes reached the disk:
	// it cuts every segment back to what a good fsync covered and writes
	// the whole tail again (rewrite) before any newer append and before an
	// fsync may count. damaged: a write failed; the next sync cuts.
	tail        []chunk
	tailBytes   int64
	tailRecords int
	damaged     bool
	rewrite     bool
	lastFailure string

	// syncMu serialises fsyncs (group commit: one fsync covers every
	// append made before it began). Lock order: syncMu before mu.
	syncMu sync.Mutex
	synced uint64

	c storeCounters
}

type storeCounters struct {
	appendedBytes                 atomic.Uint64
	fsyncs                        atomic.Uint64
	errNoSpace, errIO             atomic.Uint64
	corruptFrames, corruptBytes   atomic.Uint64
	tornSegments                  atomic.Uint64
	undecodable                   atomic.Uint64
	removedAge, removedSize       atomic.Uint64
	removedAgeRecs, removedSizeRs atomic.Uint64
	errUnsynced                   atomic.Uint64
	cut, rewritten                atomic.Uint64
}

// openStore creates (if needed) and locks dir and reads every segment's
// size, record count and newest stamp. Damaged and torn frames are
// counted and reported in notes; nothing is written, so a full disk does
// not stop the open.
func openStore(cfg storeConfig) (s *store, notes []string, err error) {
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.syncFile == nil {
		cfg.syncFile = (*os.File).Sync
	}
	if cfg.maxTail <= 0 {
		cfg.maxTail = 64 << 20
	}
	if err := os.MkdirAll(cfg.dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", cfg.dir, err)
	}
	lockF, err := os.OpenFile(filepath.Join(cfg.dir, lockName), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open lock in %s: %w", cfg.dir, err)
	}
	if err := lockFile(lockF); err != nil {
		lockF.Close()
		return nil, nil, fmt.Errorf("lock %s (is another knockwatch run using this --state-dir?): %w", cfg.dir, err)
	}
	s = &store{cfg: cfg, lockF: lockF}
	defer func() {
		if err != nil {
			s.unlock()
		}
	}()
	entries, err := os.ReadDir(cfg.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", cfg.dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix), 10, 64)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, nil, fmt.Errorf("stat %s: %w", name, err)
		}
		s.segs = append(s.segs, &seg{seq: seq, size: info.Size()})
	}
	slices.SortFunc(s.segs, func(a, b *seg) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	for _, g := range s.segs {
		s.nextSeq = g.seq + 1
		note, err := s.scanMeta(g)
		if err != nil {
			return nil, nil, err
		}
		g.syncedSize, g.syncedRecords = g.size, g.records
		if note != "" {
			notes = append(notes, note)
		}
	}
	return s, notes, nil
}

// scanMeta reads a segment's records for its count and newest stamp.
func (s *store) scanMeta(g *seg) (note string, err error) {
	f, err := os.Open(filepath.Join(s.cfg.dir, segName(g.seq)))
	if err != nil {
		return "", fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	r := frame.NewReader(s.cfg.format, f, 0, g.size)
	var frames, skipped int64
	goodEnd := int64(0)
	for {
		p, fr, sk, err := r.Next()
		frames += fr
		skipped += sk
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read %s: %w", segName(g.seq), err)
		}
		goodEnd = r.Pos()
		g.records++
		if t, ok := s.cfg.stamp(p); ok {
			g.newest = max(g.newest, t)
		} else {
			s.c.undecodable.Add(1)
		}
	}
	if frames == 0 {
		return "", nil
	}
	s.c.corruptFrames.Add(uint64(frames))
	s.c.corruptBytes.Add(uint64(skipped))
	if goodEnd < g.size && skipped == g.size-goodEnd && frames == 1 {
		// Only the end is bad: the last append was cut short (a crash or
		// a power cut in the middle of a write).
		s.c.tornSegments.Add(1)
		return fmt.Sprintf("%s ends with a torn record (%d bytes, an append cut short by a crash or power cut): skipped, the %d records before it are read",
			segName(g.seq), g.size-goodEnd, g.records), nil
	}
	return fmt.Sprintf("%s has %d damaged or torn frames (%d bytes): skipped, the %d valid records are read",
		segName(g.seq), frames, skipped, g.records), nil
}

// append writes buf (frames of n records whose newest stamp is newest) as
// one write. On an error nothing of buf is readable: a partial write is
// cut off and the segment sealed, and the next append starts a new one.
// With fsync on, buf is kept in the tail until an fsync covers it; while
// the tail is at its bound an fsync is tried first to end it, and the
// append is refused (ErrUnsynced) if that fails.
func (s *store) append(ctx context.Context, buf []byte, n int, newest int64) error {
	err := s.appendOnce(buf, n, newest)
	if !errors.Is(err, errTailFull) {
		return err
	}
	serr := s.sync(ctx)
	if serr == nil {
		if err = s.appendOnce(buf, n, newest); !errors.Is(err, errTailFull) {
			return err
		}
	}
	s.c.errUnsynced.Add(1)
	s.mu.Lock()
	bytes := s.tailBytes
	s.mu.Unlock()
	if serr != nil {
		return fmt.Errorf("%w (%d bytes, bound %d): %w", ErrUnsynced, bytes, s.cfg.maxTail, serr)
	}
	return fmt.Errorf("%w (%d bytes, bound %d)", ErrUnsynced, bytes, s.cfg.maxTail)
}

// errTailFull: appendOnce found the tail at its bound.
var errTailFull = errors.New("tail full")

func (s *store) appendOnce(buf []byte, n int, newest int64) error {
	size := int64(len(buf))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.cfg.fsync && len(s.tail) > 0 && s.tailBytes+size > s.cfg.maxTail {
		return errTailFull
	}
	// What a failed fsync cut goes first: the log's order is the order
	// of the appends.
	if err := s.rewriteLocked(); err != nil {
		return s.countErr(err)
	}
	if err := s.writeLocked(buf, n, newest); err != nil {
		return s.countErr(err)
	}
	s.c.appendedBytes.Add(uint64(size))
	if s.cfg.fsync {
		s.tail = append(s.tail, chunk{buf: slices.Clone(buf), n: n, newest: newest, end: s.written})
		s.tailBytes += size
		s.tailRecords += n
	}
	return nil
}

// writeLocked writes buf to the active segment (rolling it and applying
// the size bound first). On an error nothing of buf stays readable, the
// segment is sealed, and (with fsync on) the store is marked damaged.
func (s *store) writeLocked(buf []byte, n int, newest int64) error {
	size := int64(len(buf))
	now := s.cfg.now()
	if s.active != nil {
		last := s.segs[len(s.segs)-1]
		if last.size > 0 && (last.size+size > s.cfg.segBytes || now.Sub(s.activeSince) >= s.cfg.segAge) {
			s.sealLocked()
		}
	}
	s.enforceSizeLocked(size)
	if s.active == nil {
		if err := s.createLocked(); err != nil {
			return err
		}
	}
	last := s.segs[len(s.segs)-1]
	if last.size == 0 {
		s.activeSince = now
	}
	w, err := s.active.Write(buf)
	if err != nil {
		if w > 0 {
			_ = s.active.Truncate(last.size)
		}
		s.sealLocked()
		if s.cfg.fsync {
			// The file's unsynced bytes are suspect now (a write error
			// may come with a failed write-back): the next sync cuts
			// them and writes the tail again.
			s.damaged = true
			s.lastFailure = fmt.Sprintf("write to %s failed", segName(last.seq))
		}
		return fmt.Errorf("append to %s: %w", segName(last.seq), err)
	}
	last.size += size
	last.records += int64(n)
	last.newest = max(last.newest, newest)
	s.written += uint64(size)
	return nil
}

// cutLocked ends every segment holding bytes no good fsync covered: its
// file is closed and cut back to what the last good fsync covered (so that
// a restart does not read those records twice, once there and once where
// they are written again; a segment nothing of which was fsynced is
// removed), and the whole tail is marked to be written again. The caller
// holds syncMu: no fsync is in flight on these files.
func (s *store) cutLocked() {
	for _, f := range s.unsynced {
		_ = f.Close()
	}
	s.unsynced = nil
	if s.active != nil {
		_ = s.active.Close()
		s.active = nil
	}
	keep := s.segs[:0]
	for _, g := range s.segs {
		if g.size > g.syncedSize {
			s.c.cut.Add(1)
			path := filepath.Join(s.cfg.dir, segName(g.seq))
			if g.syncedSize == 0 {
				_ = os.Remove(path)
				continue
			}
			// Best effort: should the cut not reach the disk, a restart
			// reads those records twice, which the engine takes for
			// duplicates (no effect).
			if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
				if f.Truncate(g.syncedSize) == nil {
					_ = f.Sync()
				}
				_ = f.Close()
			}
			g.size, g.records = g.syncedSize, g.syncedRecords
		}
		keep = append(keep, g)
	}
	clear(s.segs[len(keep):])
	s.segs = keep
	s.damaged = false
	s.rewrite = len(s.tail) > 0
}

// rewriteLocked writes the tail again after a cut, in order, into new
// segments. If a write fails, what it wrote is cut again and the whole tail
// waits for the next try.
func (s *store) rewriteLocked() error {
	if !s.rewrite {
		return nil
	}
	for i := range s.tail {
		ch := &s.tail[i]
		if err := s.writeLocked(ch.buf, ch.n, ch.newest); err != nil {
			s.cutLocked()
			return fmt.Errorf("write again the %d records (%d bytes) appended since the last good fsync (%s): %w",
				s.tailRecords, s.tailBytes, s.lastFailure, err)
		}
		ch.end = s.written
	}
	s.rewrite = false
	s.c.rewritten.Add(uint64(s.tailRecords))
	return nil
}

// enforceSizeLocked removes the oldest sealed segments until size more
// bytes fit under maxBytes. The active segment stays; a single batch
// larger than the bound passes it by that batch.
func (s *store) enforceSizeLocked(size int64) {
	var disk int64
	for _, g := range s.segs {
		disk += g.size
	}
	for disk+size > s.cfg.maxBytes {
		if len(s.segs) == 0 || (len(s.segs) == 1 && s.active != nil) {
			return
		}
		g := s.segs[0]
		s.segs = s.segs[1:]
		disk -= g.size
		s.c.removedSize.Add(1)
		s.c.removedSizeRs.Add(uint64(g.records))
		_ = os.Remove(filepath.Join(s.cfg.dir, segName(g.seq)))
		if s.cfg.removed != nil {
			s.cfg.removed(ReasonSize, g.records)
		}
	}
}

// countErr counts an append or sync error by reason and marks no-space
// errors with ErrNoSpace.
func (s *store) countErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		s.c.errNoSpace.Add(1)
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	s.c.errIO.Add(1)
	return err
}

func (s *store) createLocked() error {
	seq := s.nextSeq
	path := filepath.Join(s.cfg.dir, segName(seq))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if s.cfg.fsync {
		if err := syncDir(s.cfg.dir); err != nil {
			f.Close()
			_ = os.Remove(path)
			return err
		}
	}
	s.nextSeq++
	s.active = f
	s.segs = append(s.segs, &seg{seq: seq})
	return nil
}

// sealLocked ends the active segment: closed now without fsync, or handed
// to the next sync, which fsyncs and closes it.
func (s *store) sealLocked() {
	f := s.active
	s.active = nil
	if f == nil {
		return
	}
	if s.cfg.fsync {
		s.unsynced = append(s.unsynced, f)
		return
	}
	_ = f.Close()
}

// sync makes every append made before it durable (with fsync on; a no-op
// otherwise). Concurrent callers share fsyncs.
//
// A failed fsync is never retried on the same file: Linux reports a failed
// write-back once and a second fsync of the file succeeds without the lost
// pages. Instead the segments are cut back to what the last good fsync
// covered and the tail is written again into a new segment, here before
// the fsync or by the next append; until that and an fsync after it
// succeed, sync fails.
func (s *store) sync(ctx context.Context) error {
	if !s.cfg.fsync {
		return nil
	}
	s.mu.Lock()
	target := s.written
	s.mu.Unlock()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.synced >= target {
		// A good fsync since covered everything appended before this
		// call (a cut never touches what one covered).
		s.mu.Unlock()
		return nil
	}
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	if s.damaged {
		s.cutLocked()
	}
	if err := s.rewriteLocked(); err != nil {
		s.mu.Unlock()
		return s.countErr(err)
	}
	upto, f, sealed := s.written, s.active, s.unsynced
	s.unsynced = nil
	type cover struct {
		g             *seg
		size, records int64
	}
	var covers []cover
	for _, g := range s.segs {
		if g.size > g.syncedSize {
			covers = append(covers, cover{g, g.size, g.records})
		}
	}
	s.mu.Unlock()

	var errs []error
	for _, g := range sealed {
		if err := s.cfg.syncFile(g); err != nil {
			errs = append(errs, fmt.Errorf("fsync %s: %w", filepath.Base(g.Name()), err))
		}
		_ = g.Close()
	}
	if f != nil {
		// f stays open while syncMu is held: a seal only hands it over,
		// and only a sync (holding syncMu) cuts.
		if err := s.cfg.syncFile(f); err != nil {
			errs = append(errs, fmt.Errorf("fsync %s: %w", filepath.Base(f.Name()), err))
		}
	}
	s.c.fsyncs.Add(1)

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(errs) > 0 {
		err := errors.Join(errs...)
		s.lastFailure = err.Error()
		s.cutLocked()
		return s.countErr(fmt.Errorf("%w: the %d records appended since the last good fsync are kept and written again to a new segment before a sync can succeed",
			err, s.tailRecords))
	}
	s.synced = upto
	for _, c := range covers {
		if c.size > c.g.syncedSize {
			c.g.syncedSize, c.g.syncedRecords = c.size, c.records
		}
	}
	k := 0
	for k < len(s.tail) && s.tail[k].end <= upto {
		s.tailBytes -= int64(len(s.tail[k].buf))
		s.tailRecords -= s.tail[k].n
		k++
	}
	clear(s.tail[:k])
	s.tail = s.tail[k:]
	if len(s.tail) == 0 {
		s.tail = nil // let the backing array go
	}
	return nil
}

// tailStats returns the records and bytes waiting for a good fsync.
func (s *store) tailStats() (records int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tailRecords, s.tailBytes
}

// snapshot returns the segments as they are now (copies).
func (s *store) snapshot() []seg {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]seg, len(s.segs))
	for i, g := range s.segs {
		out[i] = *g
	}
	return out
}

// scan calls fn with every valid payload of every segment, oldest first.
// Damage is counted (not again for what openStore already counted when
// counted is false).
func (s *store) scan(fn func(p []byte) error, count bool) error {
	for _, g := range s.snapshot() {
		if g.size == 0 {
			continue
		}
		f, err := os.Open(filepath.Join(s.cfg.dir, segName(g.seq)))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("open segment: %w", err)
		}
		r := frame.NewReader(s.cfg.format, f, 0, g.size)
		for {
			p, fr, sk, err := r.Next()
			if count && fr > 0 {
				s.c.corruptFrames.Add(uint64(fr))
				s.c.corruptBytes.Add(uint64(sk))
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("read %s: %w", segName(g.seq), err)
			}
			if err := fn(p); err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	}
	return nil
}

// removeOlder removes the sealed segments whose newest stamp is before
// cutoff, and rolls the active segment once it is older than segAge so it
// can age out too.
func (s *store) removeOlder(cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.active != nil && s.segs[len(s.segs)-1].size > 0 && s.cfg.now().Sub(s.activeSince) >= s.cfg.segAge {
		s.sealLocked()
	}
	c := cutoff.UnixNano()
	keep := s.segs[:0]
	for i, g := range s.segs {
		active := s.active != nil && i == len(s.segs)-1
		if !active && g.newest < c {
			s.c.removedAge.Add(1)
			s.c.removedAgeRecs.Add(uint64(g.records))
			_ = os.Remove(filepath.Join(s.cfg.dir, segName(g.seq)))
			continue
		}
		keep = append(keep, g)
	}
	clear(s.segs[len(keep):])
	s.segs = keep
}

// close fsyncs (with fsync on) and closes the segments and unlocks the
// directory. If that fsync fails, the tail is lost with the process.
func (s *store) close() error {
	syncErr := s.sync(context.Background())
	if syncErr != nil {
		n, _ := s.tailStats()
		syncErr = fmt.Errorf("%w (%d records appended since the last good fsync may be lost)", syncErr, n)
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, f := range s.unsynced {
		_ = f.Close()
	}
	s.unsynced = nil
	s.tail, s.tailBytes, s.tailRecords = nil, 0, 0
	var err error
	if s.active != nil {
		err = s.active.Close()
		s.active = nil
	}
	s.unlock()
	return errors.Join(syncErr, err)
}

func (s *store) unlock() {
	unlockFile(s.lockF)
	_ = s.lockF.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// storeStats is what Stats reports of a store.
type storeStats struct {
	Bytes, Records                  int64
	Segments                        int
	AppendedBytes, Fsyncs           uint64
	Errors                          map[string]uint64
	CorruptFrames, CorruptBytes     uint64
	TornSegments, Undecodable       uint64
	RemovedSegments, RemovedRecords map[string]uint64
	CapacityBytes                   int64
	Cut, Rewritten                  uint64
}

func (s *store) stats() storeStats {
	st := storeStats{
		AppendedBytes: s.c.appendedBytes.Load(), Fsyncs: s.c.fsyncs.Load(),
		Errors: map[string]uint64{ReasonNoSpace: s.c.errNoSpace.Load(), ReasonIO: s.c.errIO.Load(),
			ReasonUnsynced: s.c.errUnsynced.Load()},
		Cut: s.c.cut.Load(), Rewritten: s.c.rewritten.Load(),
		CorruptFrames: s.c.corruptFrames.Load(), CorruptBytes: s.c.corruptBytes.Load(),
		TornSegments: s.c.tornSegments.Load(), Undecodable: s.c.undecodable.Load(),
		RemovedSegments: map[string]uint64{ReasonAge: s.c.removedAge.Load(), ReasonSize: s.c.removedSize.Load()},
		RemovedRecords:  map[string]uint64{ReasonAge: s.c.removedAgeRecs.Load(), ReasonSize: s.c.removedSizeRs.Load()},
		CapacityBytes:   s.cfg.maxBytes,
	}
	s.mu.Lock()
	for _, g := range s.segs {
		st.Bytes += g.size
		st.Records += g.records
	}
	st.Segments = len(s.segs)
	s.mu.Unlock()
	return st
}
