package intake

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Recoverable framing errors: the offending frame was skipped and the
// stream is positioned at the next frame.
var (
	errFrameTooLarge = errors.New("syslog frame over the size limit")
)

// frameReader splits a syslog TCP stream into frames, detecting the framing
// per frame (RFC 6587): a frame that starts with a non-zero digit and whose
// digits are followed by a space is octet-counted ("LEN SP MSG"); any other
// frame ends at LF or NUL (a CR before the LF is dropped). Empty frames are
// skipped.
type frameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next frame; the slice is valid until the next call.
// errFrameTooLarge is recoverable; io.EOF ends a clean stream; any other
// error is the connection's.
func (f *frameReader) next() ([]byte, error) {
	for {
		c, err := f.r.ReadByte()
		if err != nil {
			return nil, err
		}
		if c == '\n' || c == 0 || c == '\r' {
			continue // empty frame or stray delimiter
		}
		if c < '1' || c > '9' {
			return f.delimited(c)
		}
		// maybe octet counting: up to 9 more digits, then a space
		var digits [11]byte
		digits[0] = c
		n, length := 1, int64(c-'0')
		for {
			d, err := f.r.ReadByte()
			if err != nil {
				if err == io.EOF {
					return f.whole(digits[:n])
				}
				return nil, err
			}
			if d == ' ' {
				return f.counted(length)
			}
			if d == '\n' || d == 0 {
				return f.whole(digits[:n])
			}
			if d < '0' || d > '9' || n == 10 {
				return f.delimited(append(digits[:n:n], d)...)
			}
			digits[n] = d
			n++
			length = length*10 + int64(d-'0')
		}
	}
}

// whole returns b as a complete frame.
func (f *frameReader) whole(b []byte) ([]byte, error) {
	if len(b) > f.max {
		return nil, errFrameTooLarge
	}
	f.buf = append(f.buf[:0], b...)
	return f.buf, nil
}

func (f *frameReader) counted(length int64) ([]byte, error) {
	if length > int64(f.max) {
		if _, err := f.r.Discard(int(min(length, 1<<40))); err != nil {
			return nil, err
		}
		return nil, errFrameTooLarge
	}
	if cap(f.buf) < int(length) {
		f.buf = make([]byte, length)
	}
	f.buf = f.buf[:length]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return nil, err
	}
	return f.buf, nil
}

// delimited reads a frame that ends at LF or NUL; prefix was already read.
// An unterminated frame at the end of the stream is still delivered.
func (f *frameReader) delimited(prefix ...byte) ([]byte, error) {
	f.buf = append(f.buf[:0], prefix...)
	over := len(prefix) > f.max
	for {
		if f.r.Buffered() == 0 {
			if _, err := f.r.Peek(1); err != nil {
				if err == io.EOF && !over && len(f.buf) > 0 {
					return bytes.TrimSuffix(f.buf, []byte{'\r'}), nil
				}
				if err == io.EOF && over {
					return nil, errFrameTooLarge
				}
				return nil, err
			}
		}
		b, _ := f.r.Peek(f.r.Buffered())
		i := indexDelim(b)
		n := len(b)
		if i >= 0 {
			n = i
		}
		if !over {
			if len(f.buf)+n > f.max {
				over, f.buf = true, f.buf[:0]
			} else {
				f.buf = append(f.buf, b[:n]...)
			}
		}
		if i >= 0 {
			_, _ = f.r.Discard(i + 1)
			if over {
				return nil, errFrameTooLarge
			}
			return bytes.TrimSuffix(f.buf, []byte{'\r'}), nil
		}
		_, _ = f.r.Discard(n)
	}
}

// indexDelim finds the first LF or NUL, scanning for NUL only up to the LF.
func indexDelim(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i >= 0 {
		b = b[:i]
	}
	if j := bytes.IndexByte(b, 0); j >= 0 {
		return j
	}
	return i
}
