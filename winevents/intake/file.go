package intake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// FileConfig configures the file follower.
type FileConfig struct {
	// Paths are files, directories (every regular, non-hidden file directly
	// in it) or glob patterns. Compressed rotations (.gz, .bz2, .xz, .zst,
	// .zip) are ignored.
	Paths []string
	// StatePath keeps each file's position (inode + offset) across restarts;
	// empty: positions are not kept and every file is read from the start.
	StatePath      string
	PollInterval   time.Duration // default 1 s
	MaxRecordBytes int           // one line / XML event (default 10 MiB)
	MaxFiles       int           // followed at once (default 1024)
}

// FileFollower follows files of JSON lines or Event XML.
type FileFollower struct {
	cfg    FileConfig
	h      Handler
	log    *zap.Logger
	c      *counters
	saved  map[fileKey]fileState
	files  map[fileKey]*followed
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	dirty  bool
}

type followed struct {
	key      fileKey
	path     string
	f        *os.File
	offset   int64 // end of the last record the handler took
	readPos  int64 // next byte to read; offset+len(pending) unless skipping
	pending  []byte
	skipping bool  // inside a record over the limit: discard to the next delimiter
	xml      int8  // 0 unknown, 1 XML events, -1 JSON lines
	fpLen    int64 // fingerprint of the file's first bytes, as read
	fpSum    uint64
	fpBuf    []byte // the first bytes read, while fewer than fingerprintLen
	fpFrozen bool   // fingerprint restored from the state file
	gone     bool   // its path no longer names it (rotated away or deleted)
	idle     int    // polls without new data while gone
}

// NewFileFollower loads the state file and starts following. Files that do
// not exist yet are picked up when they appear.
func NewFileFollower(cfg FileConfig, h Handler, logger *zap.Logger) (*FileFollower, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("follow files: no path given")
	}
	for _, p := range cfg.Paths {
		if _, err := filepath.Match(p, ""); err != nil {
			return nil, fmt.Errorf("follow files: pattern %q: %w", p, err)
		}
	}
	cfg.PollInterval = orDefault(cfg.PollInterval, time.Second)
	cfg.MaxRecordBytes = orDefault(cfg.MaxRecordBytes, DefaultMaxBodyBytes)
	cfg.MaxFiles = orDefault(cfg.MaxFiles, 1024)
	saved, err := loadState(cfg.StatePath)
	if err != nil {
		return nil, err
	}
	if cfg.StatePath != "" { // fail now, not at the first save, if it cannot be written
		kept := make([]fileState, 0, len(saved))
		for _, st := range saved {
			kept = append(kept, st)
		}
		if err := saveState(cfg.StatePath, kept); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ff := &FileFollower{cfg: cfg, h: h, log: logger.Named("intake.file"), c: newCounters(TransportFile),
		saved: saved, files: map[fileKey]*followed{}, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go ff.run()
	ff.log.Info("following files", zap.Strings(fPath, cfg.Paths), zap.String("state", cfg.StatePath))
	return ff, nil
}

// Stats returns a snapshot of the counters (ConnectionsOpen: files open).
func (ff *FileFollower) Stats() Stats { return ff.c.snapshot() }

// Close stops following, saves the positions and closes the files.
func (ff *FileFollower) Close() error {
	ff.cancel()
	<-ff.done
	var err error
	if ff.cfg.StatePath != "" {
		err = saveState(ff.cfg.StatePath, ff.stateEntries())
	}
	for _, fl := range ff.files {
		_ = fl.f.Close()
	}
	return err
}

func (ff *FileFollower) run() {
	defer close(ff.done)
	t := time.NewTicker(ff.cfg.PollInterval)
	defer t.Stop()
	for {
		ff.poll()
		if ff.dirty && ff.cfg.StatePath != "" && ff.ctx.Err() == nil {
			if err := saveState(ff.cfg.StatePath, ff.stateEntries()); err != nil {
				ff.c.drop(rIO)
				ff.log.Error("saving file positions failed", zap.Error(err))
			} else {
				ff.dirty = false
			}
		}
		select {
		case <-ff.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll discovers files, then reads what is new in each.
func (ff *FileFollower) poll() {
	seen := map[fileKey]bool{}
	for _, p := range ff.expand() {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		key := fileKey{uint64(st.Dev), st.Ino}
		seen[key] = true
		if fl, ok := ff.files[key]; ok {
			fl.path, fl.gone, fl.idle = p, false, 0
			continue
		}
		ff.open(p, key)
	}
	keys := make([]fileKey, 0, len(ff.files))
	for k, fl := range ff.files {
		if !seen[k] && !fl.gone {
			fl.gone = true
			ff.log.Info("file rotated away or deleted, reading its rest", zap.String(fPath, fl.path))
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return ff.files[keys[i]].path < ff.files[keys[j]].path })
	for _, k := range keys {
		if ff.ctx.Err() != nil {
			return
		}
		fl := ff.files[k]
		grew := ff.read(fl)
		if fl.gone {
			if grew {
				fl.idle = 0
			} else if fl.idle++; fl.idle >= 2 {
				ff.finish(fl)
			}
		}
	}
}

// expand resolves the configured paths to file names.
func (ff *FileFollower) expand() []string {
	var out []string
	add := func(p string) {
		base := filepath.Base(p)
		if strings.HasPrefix(base, ".") || ff.cfg.StatePath != "" && filepath.Clean(p) == filepath.Clean(ff.cfg.StatePath) {
			return
		}
		switch strings.ToLower(filepath.Ext(base)) {
		case ".gz", ".bz2", ".xz", ".zst", ".zip":
			return
		}
		out = append(out, p)
	}
	for _, p := range ff.cfg.Paths {
		if strings.ContainsAny(p, "*?[") {
			m, _ := filepath.Glob(p)
			for _, x := range m {
				add(x)
			}
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			add(p)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			ff.c.drop(rIO)
			continue
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				add(filepath.Join(p, e.Name()))
			}
		}
	}
	return out
}

func (ff *FileFollower) open(p string, key fileKey) {
	if len(ff.files) >= ff.cfg.MaxFiles {
		ff.c.drop(rTooManyFiles)
		ff.log.Warn("file not followed: file limit reached", zap.String(fPath, p), zap.Int(fLimit, ff.cfg.MaxFiles))
		return
	}
	f, err := os.Open(p)
	if err != nil {
		ff.c.drop(rIO)
		ff.log.Warn("open followed file", zap.String(fPath, p), zap.Error(err))
		return
	}
	fl := &followed{key: key, path: p, f: f}
	if st, ok := ff.saved[key]; ok {
		delete(ff.saved, key)
		if fi, err := f.Stat(); err == nil && st.FPLen <= fi.Size() && st.Offset <= fi.Size() {
			if sum, err := fingerprint(f, st.FPLen); err == nil && sum == st.FPSum {
				fl.offset, fl.readPos, fl.fpLen, fl.fpSum = st.Offset, st.Offset, st.FPLen, st.FPSum
				fl.fpFrozen = st.Offset > 0
			}
		}
		if fl.offset == 0 && st.Offset > 0 {
			ff.log.Info("saved position does not match the file (replaced or truncated): reading from the start",
				zap.String(fPath, p))
		}
	}
	ff.files[key] = fl
	ff.c.open.Add(1)
	ff.c.conns.Add(1)
	ff.dirty = true
	ff.log.Info("following file", zap.String(fPath, p), zap.Uint64(fInode, key.Ino), zap.Int64(fOffset, fl.offset))
}

// finish closes a rotated-away file once it stopped growing; a last record
// without its delimiter is delivered then, since nobody will complete it.
func (ff *FileFollower) finish(fl *followed) {
	if !fl.skipping && len(bytes.TrimSpace(fl.pending)) > 0 {
		if !ff.deliver(fl, fl.pending, fl.readPos) {
			return
		}
	}
	_ = fl.f.Close()
	delete(ff.files, fl.key)
	ff.c.open.Add(-1)
	ff.dirty = true
}

// read delivers the complete records that are new in fl; it reports whether
// the file had new data.
func (ff *FileFollower) read(fl *followed) bool {
	fi, err := fl.f.Stat()
	if err != nil {
		ff.c.drop(rIO)
		return false
	}
	rewritten := false
	if fl.fpLen > 0 && fi.Size() >= fl.fpLen {
		if sum, err := fingerprint(fl.f, fl.fpLen); err == nil && sum != fl.fpSum {
			rewritten = true // truncated and written again past our position between two polls
		}
	}
	if fi.Size() < fl.readPos || rewritten {
		ff.c.drop(rTruncated)
		ff.log.Info("file truncated (copytruncate): reading from the start", zap.String(fPath, fl.path),
			zap.Int64(fOffset, fl.readPos), zap.Int64(fSize, fi.Size()))
		fl.offset, fl.readPos, fl.pending, fl.skipping, fl.xml = 0, 0, fl.pending[:0], false, 0
		fl.fpLen, fl.fpSum, fl.fpBuf, fl.fpFrozen = 0, 0, fl.fpBuf[:0], false
		ff.dirty = true
	}
	if fi.Size() == fl.readPos {
		return false
	}
	if fl.xml == 0 {
		fl.xml = detectFormat(fl.f)
	}
	buf := make([]byte, 64<<10)
	for fl.readPos < fi.Size() && ff.ctx.Err() == nil {
		n, err := fl.f.ReadAt(buf, fl.readPos)
		if n > 0 {
			if !ff.consume(fl, buf[:n]) {
				return true
			}
		}
		if err != nil {
			if err != io.EOF {
				ff.c.drop(rIO)
				ff.log.Warn("read followed file", zap.String(fPath, fl.path), zap.Error(err))
			}
			break
		}
	}
	return true
}

// detectFormat looks at the first non-blank byte: '<' is Event XML, anything
// else JSON lines.
func detectFormat(f *os.File) int8 {
	var head [4096]byte
	n, _ := f.ReadAt(head[:], 0)
	b := bytes.TrimLeft(bytes.TrimPrefix(bytes.TrimLeft(head[:n], " \t\r\n"), utf8BOM), " \t\r\n")
	switch {
	case len(b) == 0:
		return 0
	case b[0] == '<':
		return 1
	default:
		return -1
	}
}

var (
	xmlEnd   = []byte("</Event>")
	xmlStart = []byte("<Event")
)

// consume appends data (read at fl.readPos) and delivers complete records.
// It returns false when the handler could not take a record (shutdown while
// busy): the position stays before it.
func (ff *FileFollower) consume(fl *followed, data []byte) bool {
	start := fl.readPos
	fl.readPos += int64(len(data))
	fl.extendFingerprint(start, data)
	delim := []byte{'\n'}
	if fl.xml == 1 {
		delim = xmlEnd
	}
	for len(data) > 0 {
		if fl.skipping {
			i := bytes.Index(data, delim) // a delimiter split across reads is missed: the next one ends the skip
			if i < 0 {
				return true
			}
			start += int64(i + len(delim))
			data = data[i+len(delim):]
			fl.skipping, fl.offset, fl.pending = false, start, fl.pending[:0]
			ff.dirty = true
			continue
		}
		scanFrom := max(len(fl.pending)-len(delim)+1, 0)
		fl.pending = append(fl.pending, data...)
		data = nil
		for {
			i := bytes.Index(fl.pending[scanFrom:], delim)
			if i < 0 {
				break
			}
			end := scanFrom + i + len(delim)
			rec := fl.pending[:end]
			if end-len(delim) > ff.cfg.MaxRecordBytes {
				ff.tooLarge(fl)
				rec = nil
			}
			if !ff.deliver(fl, rec, fl.offset+int64(end)) {
				fl.readPos = fl.offset
				fl.pending = fl.pending[:0]
				return false
			}
			fl.pending = fl.pending[:copy(fl.pending, fl.pending[end:])]
			scanFrom = 0
		}
		if len(fl.pending) > ff.cfg.MaxRecordBytes {
			ff.tooLarge(fl)
			fl.skipping, fl.pending = true, fl.pending[:0]
		}
	}
	return true
}

func (ff *FileFollower) tooLarge(fl *followed) {
	ff.c.drop(rTooLarge)
	ff.log.Warn("record over the size limit skipped", zap.String(fPath, fl.path),
		zap.Int64(fOffset, fl.offset), zap.Int(fLimit, ff.cfg.MaxRecordBytes))
}

// deliver hands one record to the handler and, once taken, moves the
// committed offset to end.
func (ff *FileFollower) deliver(fl *followed, rec []byte, end int64) bool {
	payload := recordPayload(rec, fl.xml == 1)
	if len(payload) > 0 {
		m := Message{Transport: TransportFile, Remote: fl.path, Payload: append([]byte(nil), payload...),
			Received: time.Now(), Meta: map[string]string{MetaPath: fl.path, MetaOffset: strconv.FormatInt(fl.offset, 10)}}
		res, stalled := handleWithRetry(ff.ctx, ff.h, m)
		if stalled {
			ff.c.drop(rBusy)
		}
		if errors.Is(res.Err, ErrBusy) {
			return false
		}
		ff.c.result(len(m.Payload), res)
		if res.Err != nil {
			ff.c.drop(rUnreadable)
		}
	}
	fl.offset = end
	ff.dirty = true
	return true
}

// recordPayload trims a line, or cuts an XML record down to its <Event>
// element (dropping an XML declaration, an <Events> wrapper, white space).
func recordPayload(rec []byte, xml bool) []byte {
	if !xml {
		return bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(rec), utf8BOM))
	}
	for off := 0; ; {
		i := bytes.Index(rec[off:], xmlStart)
		if i < 0 {
			return nil
		}
		j := off + i + len(xmlStart)
		if j < len(rec) && (rec[j] == ' ' || rec[j] == '>' || rec[j] == '\t' || rec[j] == '\n' || rec[j] == '\r') {
			return rec[off+i:]
		}
		off = j
	}
}

// extendFingerprint hashes the file's first bytes from the data actually
// read (re-reading them later could hash a rewrite we never read).
func (fl *followed) extendFingerprint(at int64, data []byte) {
	if fl.fpFrozen || at != int64(len(fl.fpBuf)) || len(fl.fpBuf) >= fingerprintLen {
		return
	}
	fl.fpBuf = append(fl.fpBuf, data[:min(len(data), fingerprintLen-len(fl.fpBuf))]...)
	h := fnv.New64a()
	_, _ = h.Write(fl.fpBuf)
	fl.fpLen, fl.fpSum = int64(len(fl.fpBuf)), h.Sum64()
}

func (ff *FileFollower) stateEntries() []fileState {
	out := make([]fileState, 0, len(ff.files))
	for _, fl := range ff.files {
		out = append(out, fileState{Path: fl.path, Dev: fl.key.Dev, Ino: fl.key.Ino, Offset: fl.offset,
			FPLen: fl.fpLen, FPSum: fl.fpSum})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
