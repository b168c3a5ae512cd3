package intake

import (
	"bufio"
	"compress/zlib"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The Lumberjack v2 frames (protocol version byte '2').
const (
	ljVersion    = '2'
	ljWindow     = 'W'
	ljJSON       = 'J'
	ljCompressed = 'C'
)

// Kinds of the internal payload the guard hands to go-lumber's reader.
const (
	guardEvent    = 0 // a JSON event
	guardTooLarge = 1 // an event over MaxEventBytes, skipped
)

var errLumberFrame = errors.New("lumberjack frame invalid")

// lumberGuard sits between the network and go-lumber's v2 reader. It parses
// the client's frames itself and enforces the limits go-lumber does not
// have (go-lumber allocates whatever length a frame header announces): at
// most MaxBatchEvents per window, MaxEventBytes per event and MaxBatchBytes
// per window after decompression. Compressed frames are inflated here, as a
// stream, and re-emitted as plain JSON frames, so the inflated size is
// bounded too. An event over the limit is skipped and replaced by a marker
// the batch consumer counts as too_large (and acknowledges, so a forwarder
// does not resend it forever); every other violation closes the connection.
//
// Each JSON payload is prefixed with the connection's remote address and
// client certificate subject, so the consumer of a batch knows its origin.
type lumberGuard struct {
	net.Conn
	raw    net.Conn // below TLS, for deadlines during the handshake
	s      *BeatsServer
	in     *bufio.Reader
	tag    []byte // kind byte + remote/subject header, prefixed to payloads
	out    []byte
	off    int
	zr     io.ReadCloser
	zlim   *io.LimitedReader
	remain uint32  // events still expected in the current window
	bytes  int     // payload bytes in the current window
	ready  bool    // TLS handshake done
	hdr    [8]byte // scratch for frame headers (a local array would escape)
	remote string
}

func newLumberGuard(s *BeatsServer, raw net.Conn) *lumberGuard {
	g := &lumberGuard{Conn: raw, raw: raw, s: s, remote: raw.RemoteAddr().String()}
	if s.cfg.TLS != nil {
		g.Conn = tls.Server(raw, s.cfg.TLS)
	} else {
		g.ready = true
		g.setTag("")
	}
	g.in = bufio.NewReaderSize(g.Conn, 32<<10)
	return g
}

func (g *lumberGuard) setTag(subject string) {
	hdr := g.remote + "\n" + subject
	if len(hdr) > 0xffff {
		hdr = hdr[:0xffff]
	}
	g.tag = append([]byte{guardEvent, byte(len(hdr) >> 8), byte(len(hdr))}, hdr...)
}

// SetReadDeadline is called by go-lumber with a zero time while it waits for
// the next window; the guard turns that into the idle timeout.
func (g *lumberGuard) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		t = time.Now().Add(g.s.cfg.IdleTimeout)
	}
	return g.Conn.SetReadDeadline(t)
}

func (g *lumberGuard) Read(p []byte) (int, error) {
	if !g.ready {
		if err := g.handshake(); err != nil {
			return 0, err
		}
	}
	for g.off == len(g.out) {
		g.out, g.off = g.out[:0], 0
		if err := g.fill(); err != nil {
			g.count(err)
			return 0, err
		}
	}
	n := copy(p, g.out[g.off:])
	g.off += n
	return n, nil
}

func (g *lumberGuard) handshake() error {
	tc := g.Conn.(*tls.Conn)
	ctx, cancel := context.WithTimeout(g.s.ctx, min(g.s.cfg.Timeout, 30*time.Second))
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		g.s.c.drop(rTLSHandshake)
		g.s.log.Debug("tls handshake failed", zap.String(fRemote, g.remote), zap.Error(err))
		return fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	g.setTag(peerSubject(&cs))
	g.ready = true
	return nil
}

func (g *lumberGuard) count(err error) {
	switch {
	case errors.Is(err, errFrameTooLarge):
		g.s.c.drop(rTooLarge)
	case errors.Is(err, errLumberFrame):
		g.s.c.drop(rBadFrame)
	case isTimeout(err):
		g.s.c.drop(rReadTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
		return
	default:
		g.s.c.drop(rIO)
	}
	if !errors.Is(err, io.EOF) {
		g.s.log.Debug("beats connection closed", zap.String(fRemote, g.remote), zap.Error(err))
	}
}

// fill appends the next frame for go-lumber to g.out.
func (g *lumberGuard) fill() error {
	hdr := g.hdr[:2]
	if g.zr != nil {
		if _, err := io.ReadFull(g.zr, hdr); err != nil {
			if err != io.EOF {
				return fmt.Errorf("inflate lumberjack frame: %w", errors.Join(errLumberFrame, err))
			}
			if err := g.zr.Close(); err != nil {
				return fmt.Errorf("inflate lumberjack frame: %w", errors.Join(errLumberFrame, err))
			}
			g.zr = nil
			if _, err := io.Copy(io.Discard, g.zlim); err != nil {
				return err
			}
			return nil
		}
		if hdr[0] != ljVersion || hdr[1] != ljJSON {
			return fmt.Errorf("read compressed lumberjack frame: %w: type %q", errLumberFrame, hdr[1])
		}
		return g.jsonFrame(g.zr)
	}
	if _, err := io.ReadFull(g.in, hdr); err != nil {
		return err
	}
	if hdr[0] != ljVersion {
		return fmt.Errorf("read lumberjack frame: %w: version %q (only v2 is served)", errLumberFrame, hdr[0])
	}
	switch hdr[1] {
	case ljWindow:
		b := g.hdr[:4]
		if _, err := io.ReadFull(g.in, b); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(b)
		if g.remain != 0 {
			return fmt.Errorf("read lumberjack window: %w: new window with %d events outstanding", errLumberFrame, g.remain)
		}
		if n > uint32(g.s.cfg.MaxBatchEvents) {
			return fmt.Errorf("read lumberjack window: %w: %d events over the limit of %d", errFrameTooLarge, n, g.s.cfg.MaxBatchEvents)
		}
		g.remain, g.bytes = n, 0
		g.out = append(g.out, ljVersion, ljWindow, b[0], b[1], b[2], b[3])
		return nil
	case ljJSON:
		return g.jsonFrame(g.in)
	case ljCompressed:
		b := g.hdr[:4]
		if _, err := io.ReadFull(g.in, b); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(b)
		if n > uint32(g.s.cfg.MaxBatchBytes) {
			return fmt.Errorf("read lumberjack compressed frame: %w: %d bytes", errFrameTooLarge, n)
		}
		g.zlim = &io.LimitedReader{R: g.in, N: int64(n)}
		zr, err := zlib.NewReader(g.zlim)
		if err != nil {
			return fmt.Errorf("inflate lumberjack frame: %w", errors.Join(errLumberFrame, err))
		}
		g.zr = zr
		return nil
	default:
		return fmt.Errorf("read lumberjack frame: %w: type %q", errLumberFrame, hdr[1])
	}
}

// jsonFrame reads a JSON data frame's sequence, length and payload from src.
func (g *lumberGuard) jsonFrame(src io.Reader) error {
	err := g.readJSONFrame(src)
	if err != nil && g.zr != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		// the inflated data ended inside a frame
		return fmt.Errorf("inflate lumberjack frame: %w: truncated event", errLumberFrame)
	}
	return err
}

func (g *lumberGuard) readJSONFrame(src io.Reader) error {
	b := g.hdr[:8]
	if _, err := io.ReadFull(src, b); err != nil {
		return err
	}
	if g.remain == 0 {
		return fmt.Errorf("read lumberjack event: %w: event outside a window", errLumberFrame)
	}
	g.remain--
	size := binary.BigEndian.Uint32(b[4:])
	// skipped events count too: this bounds the inflation work per window
	g.bytes += int(size)
	if g.bytes > g.s.cfg.MaxBatchBytes {
		return fmt.Errorf("read lumberjack window: %w: over %d bytes", errFrameTooLarge, g.s.cfg.MaxBatchBytes)
	}
	if size > uint32(g.s.cfg.MaxEventBytes) {
		if _, err := io.CopyN(io.Discard, src, int64(size)); err != nil {
			return err
		}
		g.emit(b[:4], []byte{guardTooLarge}, 0)
		return nil
	}
	body := g.emit(b[:4], g.tag, int(size))
	_, err := io.ReadFull(src, g.out[body:])
	return err
}

// emit appends a JSON frame with the given sequence, the payload prefix and
// room for bodyLen bytes, and returns where the body starts in g.out.
func (g *lumberGuard) emit(seq, prefix []byte, bodyLen int) int {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(prefix)+bodyLen))
	g.out = append(g.out, ljVersion, ljJSON)
	g.out = append(g.out, seq...)
	g.out = append(g.out, l[:]...)
	g.out = append(g.out, prefix...)
	start := len(g.out)
	g.out = slices.Grow(g.out, bodyLen)[:start+bodyLen]
	return start
}

// beatsEvent is what the guard's payload decodes to.
type beatsEvent struct {
	tooLarge bool
	remote   string
	subject  string
	json     []byte
}

// decodeGuarded is the JSONDecoder given to go-lumber: it keeps the raw JSON
// (no map round trip) and splits off the guard's prefix.
func decodeGuarded(b []byte, v any) error {
	p, ok := v.(*any)
	if !ok {
		return fmt.Errorf("decode lumberjack event: unexpected target %T", v)
	}
	if len(b) >= 1 && b[0] == guardTooLarge {
		*p = beatsEvent{tooLarge: true}
		return nil
	}
	if len(b) < 3 || b[0] != guardEvent {
		return fmt.Errorf("decode lumberjack event: %w: no guard prefix", errLumberFrame)
	}
	n := int(b[1])<<8 | int(b[2])
	if len(b) < 3+n {
		return fmt.Errorf("decode lumberjack event: %w: short guard prefix", errLumberFrame)
	}
	remote, subject, _ := strings.Cut(string(b[3:3+n]), "\n")
	*p = beatsEvent{remote: remote, subject: subject, json: append([]byte(nil), b[3+n:]...)}
	return nil
}
