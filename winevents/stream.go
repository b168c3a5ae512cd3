package winevents

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// DecodeReader decodes a stream (a file) without loading it whole: XML is
// cut into <Event> elements as it is read, a JSON array is read element by
// element, JSON lines line by line (an object may span several lines).
// Each change is passed to emit as soon as it is derived. The error is a
// read error of r, or a broken JSON array (after which nothing more can be
// read); malformed records are counted in the Result, not returned.
func (d *Decoder) DecodeReader(r io.Reader, emit func(ExposureChange)) (Result, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var res Result
	for {
		c, err := br.ReadByte()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("read events: %w", err)
		}
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			continue
		}
		if c == 0xEF { // UTF-8 byte order mark
			if b, _ := br.Peek(2); len(b) == 2 && b[0] == 0xBB && b[1] == 0xBF {
				_, _ = br.Discard(2)
				continue
			}
		}
		_ = br.UnreadByte()
		switch c {
		case '<':
			return res, d.streamXML(br, &res, emit)
		case '[':
			return res, d.streamJSONArray(br, &res, emit)
		case '{':
			return res, d.streamJSONLines(br, &res, emit)
		}
		res.Read++
		d.reject(&res, FormatUnknown, ReasonUnknownFormat)
		return res, fmt.Errorf("read events: %w: neither XML nor JSON", ErrUnreadable)
	}
}

func (d *Decoder) streamXML(br *bufio.Reader, res *Result, emit func(ExposureChange)) error {
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 32<<10)
	eof := false
	for !eof {
		n, err := br.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err == io.EOF {
			eof = true
		} else if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		used := d.decodeXMLPayload(buf, res, emit, eof)
		if used < 0 {
			return fmt.Errorf("read events: %w", errXMLDTD)
		}
		if !eof && used < len(buf) && len(buf)-used > d.opts.MaxEventBytes {
			// An <Event> longer than the cap: reject it and resync at
			// the next <Event after its start.
			res.Read++
			d.reject(res, FormatXML, ReasonTooLarge)
			next := bytes.Index(buf[used+1:], tagEventOpen)
			if next < 0 {
				used = len(buf) - len(tagEventOpen)
			} else {
				used += 1 + next
			}
		}
		if !eof {
			// Keep the unfinished tail (or a possible partial "<Event").
			if used >= len(buf) {
				keep := len(tagEventOpen)
				if keep > len(buf) {
					keep = len(buf)
				}
				used = len(buf) - keep
			}
			buf = append(buf[:0], buf[used:]...)
		}
	}
	return nil
}

func (d *Decoder) streamJSONArray(br *bufio.Reader, res *Result, emit func(ExposureChange)) error {
	dec := json.NewDecoder(br)
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("read events: json array: %w", err)
	}
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			res.Read++
			d.reject(res, FormatUnknown, ReasonMalformedJSON)
			return fmt.Errorf("read events: json array element: %w", err)
		}
		d.jsonObject(raw, res, emit)
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("read events: json array end: %w", err)
	}
	return nil
}

func (d *Decoder) streamJSONLines(br *bufio.Reader, res *Result, emit func(ExposureChange)) error {
	var pending []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			pending = append(pending, line...)
			if len(pending) > d.opts.MaxEventBytes {
				res.Read++
				d.reject(res, FormatUnknown, ReasonTooLarge)
				pending = pending[:0]
				if err := skipLine(br); err != nil {
					return err
				}
			}
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read events: %w", err)
		}
		pending = append(pending, line...)
		eof := err == io.EOF
		if len(bytes.TrimSpace(pending)) > 0 {
			if eof || d.jsonComplete(pending) || len(pending) > d.opts.MaxEventBytes {
				d.decodeJSONPayload(bytes.TrimSpace(pending), res, emit)
				pending = pending[:0]
			}
		} else {
			pending = pending[:0]
		}
		if eof {
			return nil
		}
	}
}

// jsonComplete reports whether b holds complete JSON values, so that a
// pretty-printed object is gathered over its lines before decoding.
func (d *Decoder) jsonComplete(b []byte) bool {
	s := &jsonScanner{b: b}
	for {
		s.ws()
		if s.i >= len(b) {
			return true
		}
		if _, err := s.skip(0); err != nil {
			return !errors.Is(err, errJSONEOF)
		}
	}
}

func skipLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		if err == nil || err == io.EOF {
			return nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("read events: %w", err)
		}
	}
}
