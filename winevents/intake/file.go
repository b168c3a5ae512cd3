package intake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
		if err = syncHandler(context.Background(), ff.h); err != nil {
			err = fmt.Errorf("file positions not saved (the records are read again after a restart): %w", err)
		} else {
			err = saveState(ff.cfg.StatePath, ff.stateEntries())
		}
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
			// A position is saved only once what it passed is durable.
			if err := syncHandler(ff.ctx, ff.h); err != nil {
				ff.c.drop(rNotDurable)
				ff.log.Warn("file positions not saved: the handler could not store the records durably (they are read again after a restart)", zap.Error(err))
			} else if err := saveState(ff.cfg.StatePath, ff.stateEntries()); err != nil {
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
		key, ok := fileIdentity(p, fi)
		if !ok {
			continue
		}
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

func (ff *FileFollower) stateEntries() []fileState {
	out := make([]fileState, 0, len(ff.files))
	for _, fl := range ff.files {
		out = append(out, fileState{Path: fl.path, Dev: fl.key.Dev, Ino: fl.key.Ino, Offset: fl.offset,
			FPLen: fl.fpLen, FPSum: fl.fpSum})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
