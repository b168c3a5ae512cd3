package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// StdoutPath is the WriterConfig.Path that selects standard output.
const StdoutPath = "-"

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Path is the file alerts are appended to, or "-" for standard output.
	// A file is opened with O_APPEND|O_CREATE and mode 0640 and synced
	// after every Write; standard output is not synced.
	Path string
	// Pretty writes every record as indented JSON followed by a blank
	// line, for a terminal. The output is then no longer one object per
	// line; leave it off for anything a program reads.
	Pretty bool
	// Name overrides the sink name reported in Stats.
	Name string
}

// Writer is the stdout/file sink: one JSON line per record.
type Writer struct {
	name   string
	path   string // "" for a stream that is not a file we opened
	pretty bool

	mu          sync.Mutex
	w           io.Writer
	f           *os.File // non-nil when the sink owns a file to sync
	closed      bool
	needNewline bool // a failed write left a partial line behind
	buf         bytes.Buffer

	c counters
}

// NewWriter opens the file sink (or standard output for "-").
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Path == "" {
		return nil, errors.New("open alert writer: no path (use \"-\" for standard output)")
	}
	if cfg.Path == StdoutPath {
		name := cfg.Name
		if name == "" {
			name = "stdout"
		}
		return &Writer{name: name, pretty: cfg.Pretty, w: os.Stdout}, nil
	}
	f, err := openAppend(cfg.Path)
	if err != nil {
		return nil, err
	}
	name := cfg.Name
	if name == "" {
		name = "file:" + cfg.Path
	}
	return &Writer{name: name, path: cfg.Path, pretty: cfg.Pretty, w: f, f: f}, nil
}

// NewStreamWriter returns a Writer on an existing stream (a terminal, a
// pipe, a buffer). It is not synced and not closed by Close.
func NewStreamWriter(w io.Writer, name string, pretty bool) *Writer {
	if name == "" {
		name = "stream"
	}
	return &Writer{name: name, pretty: pretty, w: w}
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open alert file: %w", err)
	}
	return f, nil
}

// Write appends one line per valid record in a single write and, for a
// file, fsyncs before it returns. Invalid records (no id, not one JSON
// object) are counted and reported in the returned error; the valid ones are
// written all the same.
func (w *Writer) Write(ctx context.Context, recs []Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write alerts: %w", err)
	}
	good, nBad, badErr := validRecords(recs)
	w.c.invalid.Add(uint64(nBad))

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if len(good) == 0 {
		return badErr
	}
	w.buf.Reset()
	if w.needNewline {
		w.buf.WriteByte('\n')
	}
	for _, r := range good {
		if w.pretty {
			if err := json.Indent(&w.buf, r.JSON, "", "  "); err != nil {
				// checkRecord validated the JSON; this cannot fail.
				return fmt.Errorf("indent alert %q: %w", r.ID, err)
			}
			w.buf.WriteString("\n\n")
			continue
		}
		w.buf.Write(r.JSON)
		w.buf.WriteByte('\n')
	}
	n, err := w.w.Write(w.buf.Bytes())
	if err != nil {
		w.c.errors.Add(1)
		// The next batch starts on a fresh line so that the records after a
		// torn one still parse.
		w.needNewline = n > 0 && w.buf.Bytes()[n-1] != '\n'
		return errors.Join(fmt.Errorf("write alerts to %s: %w", w.name, err), badErr)
	}
	w.needNewline = false
	if w.f != nil {
		if err := w.f.Sync(); err != nil {
			w.c.errors.Add(1)
			return errors.Join(fmt.Errorf("sync alert file %s: %w", w.path, err), badErr)
		}
	}
	w.c.written.Add(uint64(len(good)))
	w.c.delivered.Add(uint64(len(good)))
	return badErr
}

// Reopen closes and reopens the file (after log rotation moved it away). It
// does nothing for standard output or a stream.
func (w *Writer) Reopen() error {
	if w.path == "" {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	f, err := openAppend(w.path)
	if err != nil {
		w.c.errors.Add(1)
		return err
	}
	old := w.f
	w.f, w.w = f, f
	w.needNewline = false
	if err := old.Close(); err != nil {
		return fmt.Errorf("close rotated alert file: %w", err)
	}
	return nil
}

// Close syncs and closes the file. Standard output and streams are left
// open. Close is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		w.c.errors.Add(1)
		return fmt.Errorf("close alert file %s: %w", w.path, err)
	}
	return nil
}

// Durable reports whether the writer syncs a file it owns (standard
// output and other streams are not durable).
func (w *Writer) Durable() bool { return w.f != nil }

// Stats returns a snapshot of the counters.
func (w *Writer) Stats() Stats {
	return w.c.snapshot(w.name, "writer")
}
