package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Record is one alert line: its ECS JSON object (one line, no trailing
// newline) and its event.id. Upgrades of an alert share the id but have a
// different Action; (ID, Action) identifies a record.
type Record struct {
	ID     string
	Action string
	JSON   []byte
}

// Sink receives batches of alert records.
//
// Write hands over a batch; a nil error means every record was accepted
// (written and synced for a file, spooled durably for a webhook). Write and
// Close may be called from several goroutines. Close flushes and releases
// what the sink holds; Write after Close returns ErrClosed.
type Sink interface {
	Write(ctx context.Context, recs []Record) error
	Close() error
}

// ErrClosed is returned by Write on a sink that was closed.
var ErrClosed = errors.New("sink closed")

// ErrInvalidRecord marks a record that cannot be written: no id, or a body
// that is not one JSON object. The other records of the batch are written.
var ErrInvalidRecord = errors.New("invalid alert record")

// MaxRecordBytes is the largest JSON body a record may have. An alert is a
// few kilobytes; anything near this size is a bug upstream.
const MaxRecordBytes = 4 << 20

// maxIDBytes bounds Record.ID and Record.Action.
const maxIDBytes = 1024

// checkRecord validates r and returns the JSON body to write: r.JSON itself
// or, when the producer handed a multi-line object, its compact form.
func checkRecord(r Record) ([]byte, error) {
	if r.ID == "" {
		return nil, fmt.Errorf("%w: empty id", ErrInvalidRecord)
	}
	if len(r.ID) > maxIDBytes || len(r.Action) > maxIDBytes {
		return nil, fmt.Errorf("%w: id or action longer than %d bytes", ErrInvalidRecord, maxIDBytes)
	}
	if len(r.JSON) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: id %q: %d bytes is more than %d", ErrInvalidRecord, r.ID, len(r.JSON), MaxRecordBytes)
	}
	body := bytes.TrimSpace(r.JSON)
	if len(body) == 0 || body[0] != '{' || !json.Valid(body) {
		return nil, fmt.Errorf("%w: id %q: body is not a JSON object", ErrInvalidRecord, r.ID)
	}
	if bytes.IndexByte(body, '\n') >= 0 || bytes.IndexByte(body, '\r') >= 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, body); err != nil {
			return nil, fmt.Errorf("%w: id %q: compact body: %v", ErrInvalidRecord, r.ID, err)
		}
		body = buf.Bytes()
	}
	return body, nil
}

// validRecords splits recs into the records that can be written (with their
// bodies normalised) and a joined error describing the others.
func validRecords(recs []Record) ([]Record, int, error) {
	var errs []error
	out := recs[:0:0]
	for _, r := range recs {
		body, err := checkRecord(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.JSON = body
		out = append(out, r)
	}
	return out, len(errs), errors.Join(errs...)
}
