package intake

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"
)

func FuzzSyslog(f *testing.F) {
	for _, s := range []string{
		`<134>1 2026-01-02T09:59:58.123456Z wec01 NXLog 4242 fw [origin ip="10.0.0.5"][x a="\]\""] {"a":1}`,
		"<13>1 - - - - - - \xEF\xBB\xBF<Event/>",
		`<14>Jan  2 09:59:58 WIN-DC01 Microsoft-Windows-Security-Auditing[612]: {"EventID":5154}`,
		`<13>Dec 31 23:59:59 2025 host tag: x`,
		`<13>2026-01-02T09:00:00.25Z host tag[1]: {}`,
		`{"winlog":{"event_id":2004}}`, `<Event><System/></Event>`, `<191>`, `<0>1 `, `<13>1 - h a - - [`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseSyslog(b, now, nil)
		if err != nil {
			return
		}
		if len(m.Msg) > 0 && !bytes.Contains(b, m.Msg) {
			t.Fatalf("Msg %q is not part of the input", m.Msg)
		}
		switch m.Format {
		case SyslogRaw:
			if m.Facility != -1 || !looksLikeEvent(m.Msg) {
				t.Fatalf("raw message %+v", m)
			}
		case SyslogRFC5424, SyslogRFC3164:
			if m.Facility < 0 || m.Facility > 23 || m.Severity < 0 || m.Severity > 7 {
				t.Fatalf("PRI out of range: %+v", m)
			}
		default:
			t.Fatalf("format %q", m.Format)
		}
		for _, s := range []string{m.Hostname, m.AppName, m.ProcID, m.MsgID} {
			if len(s) > maxHeaderField {
				t.Fatalf("header field of %d bytes", len(s))
			}
		}
		if md := m.meta(); md[MetaSyslogFmt] != m.Format {
			t.Fatalf("meta %v", md)
		}
	})
}

// FuzzFraming checks two things: any byte stream is split into frames no
// longer than the limit without panicking or looping; and messages framed
// the way senders do (octet counting, or LF/NUL where the content allows)
// come back exactly.
func FuzzFraming(f *testing.F) {
	f.Add([]byte("<13>1 - h a - - - {}\xff<14>Jan  2 09:00:00 h t: x\xff12 <not counted>"), uint8(0x05), uint16(64))
	f.Add([]byte("5 hello\n\x00\r\n12345678901 x"), uint8(0), uint16(4))
	f.Add([]byte("a\xffb\r\xff\xff9\xff<Event>\n</Event>"), uint8(0xaa), uint16(1024))
	f.Fuzz(func(t *testing.T, data []byte, modes uint8, max uint16) {
		limit := int(max%2048) + 1
		fr := newFrameReader(bytes.NewReader(data), limit)
		for i := 0; ; i++ {
			fb, err := fr.next()
			if errors.Is(err, errFrameTooLarge) {
				continue
			}
			if err != nil {
				break
			}
			if len(fb) > limit || len(fb) == 0 {
				t.Fatalf("frame of %d bytes with limit %d", len(fb), limit)
			}
			if i > len(data) {
				t.Fatal("more frames than input bytes")
			}
		}

		var stream bytes.Buffer
		var want [][]byte
		for i, msg := range bytes.Split(data, []byte{0xff}) {
			if len(msg) == 0 {
				continue
			}
			if modes&(1<<(i%8)) == 0 && newlineSafe(msg) {
				stream.Write(msg)
				stream.WriteByte([]byte{'\n', 0}[i%2])
			} else {
				stream.WriteString(strconv.Itoa(len(msg)) + " ")
				stream.Write(msg)
			}
			want = append(want, msg)
		}
		fr = newFrameReader(&stream, 1<<20)
		for i := 0; ; i++ {
			fb, err := fr.next()
			if err == io.EOF {
				if i != len(want) {
					t.Fatalf("got %d frames, want %d", i, len(want))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if i >= len(want) || !bytes.Equal(fb, want[i]) {
				t.Fatalf("frame %d = %q, want %q", i, fb, want)
			}
		}
	})
}

// newlineSafe reports whether msg survives LF/NUL framing unchanged.
func newlineSafe(msg []byte) bool {
	return len(msg) > 0 && !bytes.ContainsAny(msg, "\n\x00") && msg[len(msg)-1] != '\r' &&
		msg[0] != '\r' && (msg[0] < '1' || msg[0] > '9')
}

// bytesConn is a net.Conn reading from a byte slice.
type bytesConn struct{ r io.Reader }

func (c *bytesConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *bytesConn) Close() error                { return nil }
func (c *bytesConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5044} }
func (c *bytesConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzBeatsConn feeds arbitrary client bytes to a Beats connection: it
// must never panic, never hand on an event over the limit, never hold more
// than MaxBatchBytes of the memory budget, and give all of it back.
func FuzzBeatsConn(f *testing.F) {
	f.Add([]byte("2W\x00\x00\x00\x012J\x00\x00\x00\x01\x00\x00\x00\x02{}"))
	f.Add([]byte("2W\x00\x00\x00\x022C\x00\x00\x00\x10garbagegarbage!!"))
	f.Add([]byte("2W\xff\xff\xff\xff"))
	z := zlibFrame("2J\x00\x00\x00\x01\x00\x00\x00\x02{}")
	f.Add(append(append([]byte("2W\x00\x00\x00\x012C"), binary.BigEndian.AppendUint32(nil, uint32(len(z)))...), z...))
	const maxEvent, maxBatch = 256, 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		budget := NewMemoryBudget(1 << 20)
		var over bool
		h := HandlerFunc(func(_ context.Context, m Message) Result {
			if len(m.Payload) > maxEvent {
				over = true
			}
			if st := budget.Stats(); st.InUse > maxBatch {
				over = true
			}
			return Result{Accepted: 1}
		})
		s := &BeatsServer{cfg: BeatsConfig{MaxEventBytes: maxEvent, MaxBatchBytes: maxBatch, MaxBatchEvents: 64, Timeout: time.Second,
			Keepalive: time.Second, IdleTimeout: time.Second, Budget: budget}, h: h, c: newCounters(TransportBeats),
			log: zap.NewNop(), ctx: context.Background()}
		conn := &bytesConn{r: bytes.NewReader(data)}
		bc := &beatsConn{s: s, raw: conn, conn: conn, in: bufio.NewReader(conn), remote: "fuzz"}
		_ = bc.run()
		bc.release()
		if over {
			t.Fatal("an event over MaxEventBytes, or more than MaxBatchBytes held")
		}
		if st := budget.Stats(); st.InUse != 0 {
			t.Fatalf("%d bytes of the budget not given back", st.InUse)
		}
	})
}

func zlibFrame(s string) []byte {
	var b bytes.Buffer
	zw := newZlibWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.Bytes()
}
