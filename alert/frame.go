package alert

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
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
const (
	frameMagic      = "KWS1"
	frameHeaderSize = 12
	maxPayloadSize  = MaxRecordBytes + 2*maxIDBytes + 2*binary.MaxVarintLen64
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// appendFrame appends the frame of r (whose JSON is already validated) to b.
func appendFrame(b []byte, r Record) []byte {
	start := len(b)
	b = append(b, frameMagic...)
	b = append(b, make([]byte, 8)...)
	p := len(b)
	b = binary.AppendUvarint(b, uint64(len(r.ID)))
	b = append(b, r.ID...)
	b = binary.AppendUvarint(b, uint64(len(r.Action)))
	b = append(b, r.Action...)
	b = append(b, r.JSON...)
	payload := b[p:]
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+8:], crc32.Checksum(payload, crcTable))
	return b
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

// frameReader reads the valid frames of the region [pos, limit) of a
// segment file. A torn or corrupted frame is skipped: the reader looks for
// the next offset that holds a complete frame with a matching CRC and
// reports the bytes it passed over.
type frameReader struct {
	f   io.ReaderAt
	pos int64 // offset of the next frame to read
	// lastStart is the offset of the frame next returned last.
	lastStart int64
	limit     int64
	br        *bufio.Reader
	hdr       [frameHeaderSize]byte
	buf       []byte
}

func newFrameReader(f io.ReaderAt, pos, limit int64) *frameReader {
	r := &frameReader{f: f, limit: limit}
	r.br = bufio.NewReaderSize(nil, 64<<10)
	r.seek(pos)
	return r
}

func (r *frameReader) seek(pos int64) {
	r.pos = pos
	r.br.Reset(io.NewSectionReader(r.f, pos, r.limit-pos))
}

// next returns the next valid record and the number of corrupted frames and
// bytes skipped before it. At the end of the region it returns io.EOF
// (possibly with skipped bytes: a torn last frame). Other errors are read
// errors of the file; the reader may be retried after them.
func (r *frameReader) next() (rec Record, skippedFrames, skippedBytes int64, err error) {
	for {
		if r.pos >= r.limit {
			return Record{}, skippedFrames, skippedBytes, io.EOF
		}
		start := r.pos
		payload, ok, err := r.readFrame()
		if err != nil {
			return Record{}, skippedFrames, skippedBytes, err
		}
		if ok {
			rec, derr := decodePayload(payload)
			if derr == nil {
				r.lastStart = start
				r.pos = start + frameHeaderSize + int64(len(payload))
				return rec, skippedFrames, skippedBytes, nil
			}
		}
		// Corrupted at start: find the next good frame.
		next, err := r.resync(start + 1)
		if err != nil {
			return Record{}, skippedFrames, skippedBytes, err
		}
		skippedFrames++
		skippedBytes += next - start
		r.seek(next)
	}
}

// readFrame reads the frame at r.pos through the buffered reader. ok is
// false when the bytes there are not a complete valid frame.
func (r *frameReader) readFrame() (payload []byte, ok bool, err error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read spool frame: %w", err)
	}
	n, ok := r.checkHeader(r.hdr[:], r.pos)
	if !ok {
		return nil, false, nil
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.br, r.buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read spool frame: %w", err)
	}
	if crc32.Checksum(r.buf, crcTable) != binary.LittleEndian.Uint32(r.hdr[8:]) {
		return nil, false, nil
	}
	return r.buf, true, nil
}

// checkHeader validates the magic and the length of a header at offset at.
func (r *frameReader) checkHeader(h []byte, at int64) (uint32, bool) {
	if string(h[:4]) != frameMagic {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if n > maxPayloadSize || at+frameHeaderSize+int64(n) > r.limit {
		return 0, false
	}
	return n, true
}

// resync returns the offset of the first complete valid frame at or after
// from, or r.limit when there is none.
func (r *frameReader) resync(from int64) (int64, error) {
	const chunk = 64 << 10
	buf := make([]byte, chunk+len(frameMagic)-1)
	for at := from; at+frameHeaderSize <= r.limit; {
		n, err := r.f.ReadAt(buf[:min(int64(len(buf)), r.limit-at)], at)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read spool segment: %w", err)
		}
		window := buf[:n]
		for i := 0; ; {
			j := bytes.Index(window[i:], []byte(frameMagic))
			if j < 0 {
				break
			}
			cand := at + int64(i+j)
			good, err := r.validAt(cand)
			if err != nil {
				return 0, err
			}
			if good {
				return cand, nil
			}
			i += j + 1
		}
		if n < len(frameMagic) {
			break
		}
		at += int64(n - (len(frameMagic) - 1))
	}
	return r.limit, nil
}

// validAt reports whether a complete frame with a matching CRC and a
// decodable payload starts at offset at.
func (r *frameReader) validAt(at int64) (bool, error) {
	var h [frameHeaderSize]byte
	if at+frameHeaderSize > r.limit {
		return false, nil
	}
	if _, err := r.f.ReadAt(h[:], at); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read spool segment: %w", err)
	}
	n, ok := r.checkHeader(h[:], at)
	if !ok {
		return false, nil
	}
	// Cheap checks first, so that garbage full of magic bytes does not cost
	// a read of a whole claimed payload per candidate: the payload must
	// start with a decodable id and action followed by '{' and end with '}'.
	var head [2*maxIDBytes + 2*binary.MaxVarintLen64 + 1]byte
	hn := min(int(n), len(head))
	if _, err := r.f.ReadAt(head[:hn], at+frameHeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read spool segment: %w", err)
	}
	if !plausiblePayload(head[:hn], int(n)) {
		return false, nil
	}
	var last [1]byte
	if _, err := r.f.ReadAt(last[:], at+frameHeaderSize+int64(n)-1); err != nil || last[0] != '}' {
		return false, nil
	}
	payload := make([]byte, n)
	if _, err := r.f.ReadAt(payload, at+frameHeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read spool segment: %w", err)
	}
	if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(h[8:]) {
		return false, nil
	}
	_, err := decodePayload(payload)
	return err == nil, nil
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
