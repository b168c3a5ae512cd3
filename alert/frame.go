package alert

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/knockwatch/knockwatch/internal/frame"
)

// A spool frame is
//
//	magic "KWS1" | payload length (uint32 LE) | CRC-32C of the payload (uint32 LE) | payload
//
// and the payload is
//
//	uvarint len(id) | id | uvarint len(action) | action | JSON object
//
// The magic lets the reader find the next frame after a corrupted region;
// the length and the CRC detect a frame torn by a crash in the middle of an
// append, or bytes damaged on disk.
//
// The framing is internal/frame's, shared with the evidence log.
const (
	frameMagic      = "KWS1"
	frameHeaderSize = frame.HeaderSize
	maxPayloadSize  = MaxRecordBytes + 2*maxIDBytes + 2*binary.MaxVarintLen64
)

var spoolFormat = frame.Format{
	Magic:      frameMagic,
	MaxPayload: maxPayloadSize,
	HeadBytes:  2*maxIDBytes + 2*binary.MaxVarintLen64 + 1,
	Plausible:  plausiblePayload,
	LastOK:     func(b byte) bool { return b == '}' },
	Valid: func(p []byte) bool {
		_, err := decodePayload(p)
		return err == nil
	},
}

// appendFrame appends the frame of r (whose JSON is already validated) to b.
func appendFrame(b []byte, r Record) []byte {
	start := len(b)
	b = spoolFormat.Begin(b)
	b = binary.AppendUvarint(b, uint64(len(r.ID)))
	b = append(b, r.ID...)
	b = binary.AppendUvarint(b, uint64(len(r.Action)))
	b = append(b, r.Action...)
	b = append(b, r.JSON...)
	return spoolFormat.End(b, start)
}

var errBadPayload = errors.New("bad spool payload")

// decodePayload decodes a payload whose CRC matched. The returned record
// does not alias payload.
func decodePayload(payload []byte) (Record, error) {
	idLen, n := binary.Uvarint(payload)
	if n <= 0 || idLen > maxIDBytes || uint64(len(payload)-n) < idLen {
		return Record{}, fmt.Errorf("%w: id length", errBadPayload)
	}
	payload = payload[n:]
	id := string(payload[:idLen])
	payload = payload[idLen:]
	actLen, n := binary.Uvarint(payload)
	if n <= 0 || actLen > maxIDBytes || uint64(len(payload)-n) < actLen {
		return Record{}, fmt.Errorf("%w: action length", errBadPayload)
	}
	payload = payload[n:]
	action := string(payload[:actLen])
	body := payload[actLen:]
	if id == "" || len(body) < 2 || body[0] != '{' || body[len(body)-1] != '}' {
		return Record{}, fmt.Errorf("%w: empty id or body not an object", errBadPayload)
	}
	return Record{ID: id, Action: action, JSON: bytes.Clone(body)}, nil
}

// frameReader reads the spool records of the region [pos, limit) of a
// segment file (see internal/frame: a torn or corrupted frame is skipped
// and reported, the reader resumes at the next valid frame).
type frameReader struct{ r *frame.Reader }

func newFrameReader(f io.ReaderAt, pos, limit int64) *frameReader {
	return &frameReader{r: frame.NewReader(&spoolFormat, f, pos, limit)}
}

// pos is the offset after the last frame read; lastStart the offset of
// the frame next returned last.
func (r *frameReader) pos() int64       { return r.r.Pos() }
func (r *frameReader) lastStart() int64 { return r.r.LastStart() }

// next returns the next valid record and the number of corrupted frames and
// bytes skipped before it. At the end of the region it returns io.EOF
// (possibly with skipped bytes: a torn last frame). Other errors are read
// errors of the file; the reader may be retried after them.
func (r *frameReader) next() (rec Record, skippedFrames, skippedBytes int64, err error) {
	p, frames, skipped, err := r.r.Next()
	if err != nil {
		return Record{}, frames, skipped, err
	}
	rec, err = decodePayload(p) // Valid already held
	return rec, frames, skipped, err
}

// plausiblePayload checks the head of a payload of n bytes: an id and an
// action of valid lengths followed by the start of a JSON object.
func plausiblePayload(head []byte, n int) bool {
	p := 0
	for range 2 {
		l, k := binary.Uvarint(head[p:])
		if k <= 0 || l > maxIDBytes {
			return false
		}
		p += k + int(l)
		if p >= len(head) {
			return p < n // the object starts beyond what was read
		}
	}
	return head[p] == '{'
}
