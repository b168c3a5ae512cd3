// Package frame is the one CRC framing of knockwatch's on-disk logs: the
// alert webhook's spool (alert) and the evidence log and alert ledger
// (evidence). A frame is
//
//	magic (4 bytes) | payload length (uint32 LE) | CRC-32C of the payload (uint32 LE) | payload
//
// The magic names the log (each has its own) and lets a reader find the
// next frame after a damaged region; the length and the CRC detect a frame
// torn by a crash in the middle of an append, or bytes damaged on disk.
//
// A Reader returns the valid frames of a region of a file in order and
// skips (and reports) everything else: a torn or corrupted frame costs that
// frame only, never the frames after it.
package frame

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// HeaderSize is the size of a frame's header.
const HeaderSize = 12

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC-32C the frames use; logs use it for their small
// side files too (the spool's cursor).
func Checksum(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

// Format describes one log's frames.
type Format struct {
	// Magic is the 4-byte marker every frame of this log starts with.
	Magic string
	// MaxPayload bounds a payload: a header claiming more is damage.
	MaxPayload int
	// HeadBytes is how many leading payload bytes Plausible wants (0: no
	// Plausible check).
	HeadBytes int
	// Plausible, when set, checks the head of a payload of n bytes before
	// the resynchronising reader reads the whole payload, so that damaged
	// data full of magic bytes does not cost a read of a claimed payload
	// per candidate. head has min(n, HeadBytes) bytes.
	Plausible func(head []byte, n int) bool
	// LastOK, when set, checks the payload's last byte, also before the
	// whole payload is read.
	LastOK func(last byte) bool
	// Valid, when set, checks a payload whose CRC matched (that it
	// decodes): a frame whose payload is not Valid is treated as damage.
	Valid func(payload []byte) bool
}

// Append appends a frame holding payload to b.
func (f *Format) Append(b, payload []byte) []byte {
	b = f.Begin(b)
	b = append(b, payload...)
	return f.End(b, len(b)-len(payload)-HeaderSize)
}

// Begin appends a frame header to b with its length and CRC left open;
// append the payload to the result, then call End with the offset of the
// header (len(b) before Begin). It avoids building the payload twice.
func (f *Format) Begin(b []byte) []byte {
	if len(f.Magic) != 4 {
		panic("frame: magic must be 4 bytes")
	}
	b = append(b, f.Magic...)
	return append(b, 0, 0, 0, 0, 0, 0, 0, 0)
}

// End completes the frame whose header Begin wrote at offset start of b.
func (f *Format) End(b []byte, start int) []byte {
	payload := b[start+HeaderSize:]
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+8:], Checksum(payload))
	return b
}

// Reader reads the valid frames of the region [pos, limit) of a file. A
// torn or corrupted frame is skipped: the reader looks for the next offset
// that holds a complete frame with a matching CRC (and a Valid payload)
// and reports the bytes it passed over.
type Reader struct {
	fm  *Format
	f   io.ReaderAt
	pos int64 // offset of the next frame to read
	// lastStart is the offset of the frame Next returned last.
	lastStart int64
	limit     int64
	br        *bufio.Reader
	hdr       [HeaderSize]byte
	buf       []byte
}

// NewReader reads the frames of fm in [pos, limit) of f.
func NewReader(fm *Format, f io.ReaderAt, pos, limit int64) *Reader {
	r := &Reader{fm: fm, f: f, limit: limit}
	r.br = bufio.NewReaderSize(nil, 64<<10)
	r.MoveTo(pos)
	return r
}

// MoveTo moves the reader to pos (which should be the start of a frame).
func (r *Reader) MoveTo(pos int64) {
	r.pos = pos
	r.br.Reset(io.NewSectionReader(r.f, pos, r.limit-pos))
}

// Pos is the offset after the last frame returned (or skipped).
func (r *Reader) Pos() int64 { return r.pos }

// LastStart is the offset of the frame Next returned last.
func (r *Reader) LastStart() int64 { return r.lastStart }

// Next returns the next valid payload and the number of corrupted frames
// and bytes skipped before it. The payload is valid until the next call.
// At the end of the region it returns io.EOF (possibly with skipped bytes:
// a torn last frame). Other errors are read errors of the file; the reader
// may be retried after them.
func (r *Reader) Next() (payload []byte, skippedFrames, skippedBytes int64, err error) {
	for {
		if r.pos >= r.limit {
			return nil, skippedFrames, skippedBytes, io.EOF
		}
		start := r.pos
		p, ok, err := r.readFrame()
		if err != nil {
			return nil, skippedFrames, skippedBytes, err
		}
		if ok && (r.fm.Valid == nil || r.fm.Valid(p)) {
			r.lastStart = start
			r.pos = start + HeaderSize + int64(len(p))
			return p, skippedFrames, skippedBytes, nil
		}
		// Corrupted at start: find the next good frame.
		next, err := r.resync(start + 1)
		if err != nil {
			return nil, skippedFrames, skippedBytes, err
		}
		skippedFrames++
		skippedBytes += next - start
		r.MoveTo(next)
	}
}

// readFrame reads the frame at r.pos through the buffered reader. ok is
// false when the bytes there are not a complete frame with a matching CRC.
func (r *Reader) readFrame() (payload []byte, ok bool, err error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read frame: %w", err)
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
		return nil, false, fmt.Errorf("read frame: %w", err)
	}
	if Checksum(r.buf) != binary.LittleEndian.Uint32(r.hdr[8:]) {
		return nil, false, nil
	}
	return r.buf, true, nil
}

// checkHeader validates the magic and the length of a header at offset at.
func (r *Reader) checkHeader(h []byte, at int64) (uint32, bool) {
	if string(h[:4]) != r.fm.Magic {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if int64(n) > int64(r.fm.MaxPayload) || at+HeaderSize+int64(n) > r.limit {
		return 0, false
	}
	return n, true
}

// resync returns the offset of the first complete valid frame at or after
// from, or r.limit when there is none.
func (r *Reader) resync(from int64) (int64, error) {
	const chunk = 64 << 10
	magic := []byte(r.fm.Magic)
	buf := make([]byte, chunk+len(magic)-1)
	for at := from; at+HeaderSize <= r.limit; {
		n, err := r.f.ReadAt(buf[:min(int64(len(buf)), r.limit-at)], at)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read segment: %w", err)
		}
		window := buf[:n]
		for i := 0; ; {
			j := bytes.Index(window[i:], magic)
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
		if n < len(magic) {
			break
		}
		at += int64(n - (len(magic) - 1))
	}
	return r.limit, nil
}

// validAt reports whether a complete frame with a matching CRC and a valid
// payload starts at offset at.
func (r *Reader) validAt(at int64) (bool, error) {
	var h [HeaderSize]byte
	if at+HeaderSize > r.limit {
		return false, nil
	}
	if _, err := r.f.ReadAt(h[:], at); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read segment: %w", err)
	}
	n, ok := r.checkHeader(h[:], at)
	if !ok {
		return false, nil
	}
	// Cheap checks first.
	if r.fm.Plausible != nil && r.fm.HeadBytes > 0 {
		head := make([]byte, min(int(n), r.fm.HeadBytes))
		if _, err := r.f.ReadAt(head, at+HeaderSize); err != nil {
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			return false, fmt.Errorf("read segment: %w", err)
		}
		if !r.fm.Plausible(head, int(n)) {
			return false, nil
		}
	}
	if r.fm.LastOK != nil {
		if n == 0 {
			return false, nil
		}
		var last [1]byte
		if _, err := r.f.ReadAt(last[:], at+HeaderSize+int64(n)-1); err != nil || !r.fm.LastOK(last[0]) {
			return false, nil
		}
	}
	payload := make([]byte, n)
	if _, err := r.f.ReadAt(payload, at+HeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read segment: %w", err)
	}
	if Checksum(payload) != binary.LittleEndian.Uint32(h[8:]) {
		return false, nil
	}
	return r.fm.Valid == nil || r.fm.Valid(payload), nil
}
