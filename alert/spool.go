package alert

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ErrSpoolFull is wrapped by the error of a Webhook.Write that was refused
// because the spool reached its configured size.
var ErrSpoolFull = errors.New("alert spool full")

const (
	segPrefix   = "seg-"
	segSuffix   = ".spool"
	cursorName  = "cursor"
	lockName    = "lock"
	cursorSize  = 24 // magic, segment, offset, CRC
	cursorMagic = "KWC1"
)

// position is an offset in the spool: a segment sequence number and a byte
// offset in that segment.
type position struct {
	seg uint64
	off int64
}

type segment struct {
	seq  uint64
	size int64 // bytes that are durably written and readable
}

// spool is the webhook's on-disk queue: a directory of append-only segment
// files of frames (see frame.go) and a cursor file holding the committed
// position, the first byte not yet delivered. Appends are fsynced before
// append returns; the cursor is replaced atomically (write, fsync, rename,
// fsync of the directory). A segment is removed once the cursor passed it.
//
// append may be called concurrently; read and commit are called by the one
// sender goroutine.
type spool struct {
	dir      string
	maxBytes int64
	segBytes int64
	c        *counters
	lockF    *os.File

	mu        sync.Mutex
	segs      []segment // ascending seq
	active    *os.File  // the last segment, open for appends; nil when sealed
	nextSeq   uint64
	cursor    position
	records   int64 // undelivered valid records
	diskBytes int64
	closed    bool
}

func segName(seq uint64) string {
	return fmt.Sprintf("%s%020d%s", segPrefix, seq, segSuffix)
}

// openSpool opens (creating it if needed) and locks the spool directory,
// loads the cursor and counts the undelivered records. notes collects what
// the caller should log (a damaged cursor, a cursor past its segment).
func openSpool(dir string, maxBytes, segBytes int64, c *counters) (s *spool, notes []string, err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("create spool dir: %w", err)
	}
	lockF, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open spool lock: %w", err)
	}
	if err := lockFile(lockF); err != nil {
		lockF.Close()
		return nil, nil, fmt.Errorf("lock spool dir %s (is another sink using it?): %w", dir, err)
	}
	s = &spool{dir: dir, maxBytes: maxBytes, segBytes: segBytes, c: c, lockF: lockF}
	defer func() {
		if err != nil {
			s.unlock()
		}
	}()
	if err := s.load(&notes); err != nil {
		return nil, nil, err
	}
	return s, notes, nil
}

func (s *spool) load(notes *[]string) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("list spool dir: %w", err)
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
			return fmt.Errorf("stat spool segment: %w", err)
		}
		s.segs = append(s.segs, segment{seq: seq, size: info.Size()})
	}
	slices.SortFunc(s.segs, func(a, b segment) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})

	cur, found, err := readCursor(filepath.Join(s.dir, cursorName))
	switch {
	case err != nil:
		*notes = append(*notes, fmt.Sprintf("%v; delivering the spool from its oldest record (the receiver may see records again)", err))
		cur = position{}
	case !found:
		cur = position{}
	}
	// Normalise the cursor to an existing segment.
	var stale []segment
	for len(s.segs) > 0 && s.segs[0].seq < cur.seg {
		stale = append(stale, s.segs[0])
		s.segs = s.segs[1:]
	}
	if len(s.segs) > 0 {
		first := s.segs[0]
		switch {
		case first.seq > cur.seg:
			cur = position{seg: first.seq}
		case cur.off > first.size:
			*notes = append(*notes, fmt.Sprintf("spool cursor at byte %d of %s, which has only %d bytes; resuming at its end", cur.off, segName(first.seq), first.size))
			cur.off = first.size
		}
	}
	s.cursor = cur
	s.nextSeq = cur.seg + 1
	if n := len(s.segs); n > 0 {
		s.nextSeq = s.segs[n-1].seq + 1
	}
	for _, seg := range stale {
		_ = os.Remove(filepath.Join(s.dir, segName(seg.seq)))
	}
	for _, seg := range s.segs {
		s.diskBytes += seg.size
	}
	// Count what is left to deliver. Corruption is counted by the sender
	// when it reaches it, not here.
	for _, seg := range s.segs {
		from := int64(0)
		if seg.seq == cur.seg {
			from = cur.off
		}
		n, err := s.countRecords(seg, from)
		if err != nil {
			return err
		}
		s.records += n
	}
	return nil
}

func (s *spool) countRecords(seg segment, from int64) (int64, error) {
	if from >= seg.size {
		return 0, nil
	}
	f, err := os.Open(filepath.Join(s.dir, segName(seg.seq)))
	if err != nil {
		return 0, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()
	r := newFrameReader(f, from, seg.size)
	var n int64
	for {
		_, _, _, err := r.next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		n++
	}
}

// append writes the frames of recs (validated records) as one write and
// fsyncs it. The batch is all or nothing: on an error none of it is in the
// spool.
func (s *spool) append(recs []Record) error {
	var buf []byte
	for _, r := range recs {
		buf = appendFrame(buf, r)
	}
	size := int64(len(buf))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.diskBytes+size > s.maxBytes {
		return fmt.Errorf("%w: %d bytes on disk + %d new > limit %d", ErrSpoolFull, s.diskBytes, size, s.maxBytes)
	}
	if s.active != nil {
		last := s.segs[len(s.segs)-1]
		if last.size > 0 && last.size+size > s.segBytes {
			if err := s.sealLocked(); err != nil {
				return err
			}
		}
	}
	if s.active == nil {
		if err := s.createSegmentLocked(); err != nil {
			return err
		}
	}
	last := &s.segs[len(s.segs)-1]
	n, err := s.active.Write(buf)
	if err == nil {
		err = s.active.Sync()
	}
	if err != nil {
		// Cut the partial batch off and continue in a fresh segment: after a
		// failed write or fsync the state of this file is unknown. What
		// remains beyond last.size is never read in this process; after a
		// restart the frame reader skips it as corrupt.
		if n > 0 {
			_ = s.active.Truncate(last.size)
		}
		_ = s.sealLocked()
		return fmt.Errorf("append to alert spool: %w", err)
	}
	last.size += size
	s.diskBytes += size
	s.records += int64(len(recs))
	return nil
}

func (s *spool) sealLocked() error {
	f := s.active
	s.active = nil
	if err := f.Close(); err != nil {
		return fmt.Errorf("close spool segment: %w", err)
	}
	return nil
}

func (s *spool) createSegmentLocked() error {
	seq := s.nextSeq
	f, err := os.OpenFile(filepath.Join(s.dir, segName(seq)), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	s.nextSeq++
	s.active = f
	s.segs = append(s.segs, segment{seq: seq})
	return nil
}

// read returns up to maxRecs records (and at least one, if there is any,
// even when it is larger than maxBytes) starting at from, and the position
// after them. It reads within one segment; a batch that ends at the end of
// a segment continues in the next one on the next call. A corrupted region
// is skipped and counted, so next may move forward with no records.
//
// maxHdr bounds the sum of idsHeaderCost of the batch.
func (s *spool) read(from position, maxRecs int, maxBytes int64, maxHdr int) ([]Record, position, error) {
	for {
		s.mu.Lock()
		i, _ := slices.BinarySearchFunc(s.segs, from.seg, func(g segment, seq uint64) int {
			switch {
			case g.seq < seq:
				return -1
			case g.seq > seq:
				return 1
			}
			return 0
		})
		if i == len(s.segs) {
			s.mu.Unlock()
			return nil, from, nil
		}
		seg := s.segs[i]
		hasNext := i+1 < len(s.segs)
		s.mu.Unlock()

		if seg.seq != from.seg {
			from = position{seg: seg.seq}
		}
		if from.off >= seg.size {
			if !hasNext {
				return nil, from, nil
			}
			from = position{seg: seg.seq + 1}
			continue
		}
		return s.readSegment(seg, from, maxRecs, maxBytes, maxHdr)
	}
}

func (s *spool) readSegment(seg segment, from position, maxRecs int, maxBytes int64, maxHdr int) ([]Record, position, error) {
	f, err := os.Open(filepath.Join(s.dir, segName(seg.seq)))
	if err != nil {
		return nil, from, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()
	r := newFrameReader(f, from.off, seg.size)
	var recs []Record
	var bytes int64
	hdr := 0
	for len(recs) < maxRecs {
		rec, frames, skipped, err := r.next()
		if frames > 0 {
			s.c.corruptFrames.Add(uint64(frames))
			s.c.corruptBytes.Add(uint64(skipped))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// Deliver what was read; the error shows up again on the next call.
			if len(recs) > 0 {
				break
			}
			return nil, from, err
		}
		size, cost := int64(len(rec.JSON)), idsHeaderCost(rec)
		if len(recs) > 0 && (bytes+size > maxBytes || hdr+cost > maxHdr) {
			// Leave it for the next batch, which starts at this frame (after
			// any corruption skipped before it, so that is counted once).
			from.off = r.lastStart()
			return recs, from, nil
		}
		recs = append(recs, rec)
		bytes += size
		hdr += cost
		from.off = r.pos()
	}
	from.off = max(from.off, r.pos())
	return recs, from, nil
}

// commit durably moves the cursor to to (the position after n delivered or
// dead-lettered records) and removes the segments it passed.
//
// When the cursor cannot be persisted the in-memory cursor still moves (this
// process does not send the records again) but no segment is removed, so a
// restart resumes from the last persisted cursor: duplicates, never loss.
func (s *spool) commit(to position, n int) error {
	werr := writeCursor(s.dir, to)
	s.mu.Lock()
	s.cursor = to
	s.records = max(0, s.records-int64(n))
	if last := len(s.segs) - 1; last < 0 || (s.segs[last].seq == to.seg && to.off >= s.segs[last].size) {
		s.records = 0 // everything delivered; heals a count thrown off by skipped frames
	}
	var gone []uint64
	for werr == nil && len(s.segs) > 0 {
		g := s.segs[0]
		if len(s.segs) == 1 && s.active != nil {
			break // never remove the segment being appended to
		}
		if g.seq > to.seg || (g.seq == to.seg && to.off < g.size) {
			break
		}
		gone = append(gone, g.seq)
		s.diskBytes -= g.size
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	for _, seq := range gone {
		_ = os.Remove(filepath.Join(s.dir, segName(seq)))
	}
	return werr
}

// usage returns the undelivered records and bytes and the bytes on disk.
func (s *spool) usage() (records, pending, disk int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		switch {
		case g.seq > s.cursor.seg:
			pending += g.size
		case g.seq == s.cursor.seg:
			pending += max(0, g.size-s.cursor.off)
		}
	}
	return s.records, pending, s.diskBytes
}

// close seals the active segment and releases the directory lock.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.active != nil {
		err = s.sealLocked()
	}
	s.unlock()
	return err
}

func (s *spool) unlock() {
	unlockFile(s.lockF)
	_ = s.lockF.Close()
}
