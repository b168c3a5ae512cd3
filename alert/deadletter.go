package alert

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// deadLetter is the append-only file of records the receiver rejected. Each
// line is a JSON object:
//
//	{"time":"…","status":400,"reply":"…","url":"…","id":"…","action":"…","record":{…}}
//
// so that an operator can inspect the rejection and re-send the record.
type deadLetter struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// errDeadLetterFull is returned when appending would pass the bound.
var errDeadLetterFull = errors.New("dead-letter file full")

func openDeadLetter(path string, maxBytes int64) (*deadLetter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open dead-letter file: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open dead-letter file: %w", err)
	}
	return &deadLetter{path: path, max: maxBytes, f: f, size: info.Size()}, nil
}

type deadLetterLine struct {
	Time   time.Time       `json:"time"`
	Status int             `json:"status"`
	Reply  string          `json:"reply,omitempty"`
	URL    string          `json:"url"`
	ID     string          `json:"id"`
	Action string          `json:"action,omitempty"`
	Record json.RawMessage `json:"record"`
}

// add appends r with the rejection and fsyncs.
func (d *deadLetter) add(r Record, res result, url string, now time.Time) error {
	line, err := json.Marshal(deadLetterLine{
		Time: now.UTC(), Status: res.status, Reply: res.reply, URL: url,
		ID: r.ID, Action: r.Action, Record: r.JSON,
	})
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	line = append(line, '\n')
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.size+int64(len(line)) > d.max {
		return fmt.Errorf("append to %s: %w (%d bytes, limit %d)", d.path, errDeadLetterFull, d.size, d.max)
	}
	n, err := d.f.Write(line)
	d.size += int64(n)
	if err == nil {
		err = d.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("append to dead-letter file %s: %w", d.path, err)
	}
	return nil
}

func (d *deadLetter) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("close dead-letter file: %w", err)
	}
	return nil
}
