package intake

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"
	"go.uber.org/zap"
)

// countHandler accepts everything and counts.
type countHandler struct{ n atomic.Int64 }

func (c *countHandler) Handle(_ context.Context, m Message) Result {
	c.n.Add(1)
	return Result{Accepted: 1}
}

func benchLines(b *testing.B) [][]byte {
	return bytes.Split(bytes.TrimSpace(readTestdata(b, "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl")), []byte("\n"))
}

func reportEvents(b *testing.B, events int) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkParseSyslog(b *testing.B) {
	ev := benchLines(b)[0]
	now := time.Now()
	for _, c := range []struct{ name, hdr string }{
		{"rfc5424", "<134>1 2026-01-02T09:59:58.123456Z wec01.corp.example NXLog 4242 - [origin ip=\"10.0.0.5\"] "},
		{"rfc3164", "<14>Jan  2 09:59:58 WIN-DC01 Microsoft-Windows-Security-Auditing[612]: "},
	} {
		msg := append([]byte(c.hdr), ev...)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseSyslog(msg, now, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFraming(b *testing.B) {
	ev := benchLines(b)[0]
	msg := append([]byte("<134>1 - wec01 NXLog - - - "), ev...)
	var octet, newline bytes.Buffer
	for range 1000 {
		fmt.Fprintf(&octet, "%d %s", len(msg), msg)
		newline.Write(msg)
		newline.WriteByte('\n')
	}
	for _, c := range []struct {
		name   string
		stream []byte
	}{{"octet-counting", octet.Bytes()}, {"newline", newline.Bytes()}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.stream)))
			b.ReportAllocs()
			frames := 0
			for b.Loop() {
				fr := newFrameReader(bytes.NewReader(c.stream), DefaultMaxMessageBytes)
				for {
					if _, err := fr.next(); err != nil {
						break
					}
					frames++
				}
			}
			reportEvents(b, frames)
		})
	}
}

// BenchmarkSyslogTCP: one loopback connection, octet-counted RFC 5424
// messages each carrying a real ~2 KB JSON event, through parse and handler.
func BenchmarkSyslogTCP(b *testing.B) {
	h := &countHandler{}
	srv, err := NewSyslogTCP(SyslogConfig{Addr: "127.0.0.1:0"}, h, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	var batch bytes.Buffer
	for _, ev := range benchLines(b) {
		msg := append([]byte("<134>1 2026-01-02T09:59:58Z wec01 NXLog - - - "), ev...)
		fmt.Fprintf(&batch, "%d %s", len(msg), msg)
	}
	per := len(benchLines(b))
	conn, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	b.SetBytes(int64(batch.Len()))
	sent := 0
	for b.Loop() {
		if _, err := conn.Write(batch.Bytes()); err != nil {
			b.Fatal(err)
		}
		sent += per
	}
	for h.n.Load() < int64(sent) {
		time.Sleep(time.Millisecond)
	}
	reportEvents(b, sent)
}

// BenchmarkHTTP: keep-alive POSTs of 100 JSON-lines events (~200 KB).
func BenchmarkHTTP(b *testing.B) {
	h := &countHandler{}
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Token: "bench"}, h, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	var body bytes.Buffer
	lines := benchLines(b)
	for i := range 100 {
		body.Write(lines[i%len(lines)])
		body.WriteByte('\n')
	}
	url := "http://" + srv.Addr().String() + EventsPath
	b.SetBytes(int64(body.Len()))
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body.Bytes()))
		req.Header.Set("Authorization", "Bearer bench")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	reportEvents(b, 100*int(h.n.Load()))
}

// BenchmarkBeats: go-lumber client batches of 2048 events (Winlogbeat's
// bulk_max_size), compressed at level 3 (Winlogbeat's default) or not;
// each batch waits for its ACK.
func BenchmarkBeats(b *testing.B) {
	lines := benchLines(b)
	batch := make([]any, 2048)
	for i := range batch {
		batch[i] = lines[i%len(lines)]
	}
	for _, level := range []int{0, 3} {
		b.Run(fmt.Sprintf("compression=%d", level), func(b *testing.B) {
			h := &countHandler{}
			srv, err := NewBeatsServer(BeatsConfig{Addr: "127.0.0.1:0"}, h, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			cl, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder),
				lumberclient.CompressionLevel(level))
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			for b.Loop() {
				if _, err := cl.Send(batch); err != nil {
					b.Fatal(err)
				}
			}
			reportEvents(b, int(h.n.Load()))
		})
	}
}

// BenchmarkFileFollow: records split from a JSON-lines file and handed over.
func BenchmarkFileFollow(b *testing.B) {
	var data bytes.Buffer
	lines := benchLines(b)
	for i := range 1000 {
		data.Write(lines[i%len(lines)])
		data.WriteByte('\n')
	}
	h := &countHandler{}
	ff := &FileFollower{cfg: FileConfig{MaxRecordBytes: DefaultMaxBodyBytes}, h: h, log: zap.NewNop(),
		c: newCounters(TransportFile), ctx: context.Background()}
	b.SetBytes(int64(data.Len()))
	b.ReportAllocs()
	for b.Loop() {
		fl := &followed{path: "bench.jsonl", xml: -1}
		for chunk := range slices.Chunk(data.Bytes(), 64<<10) {
			ff.consume(fl, chunk)
		}
	}
	reportEvents(b, int(h.n.Load()))
}

// compressedWindow builds a Lumberjack v2 window of n real events as
// Winlogbeat sends it (one zlib level 3 compressed frame), and the inflated
// size.
func compressedWindow(b *testing.B, n int) ([]byte, int) {
	lines := benchLines(b)
	var inner bytes.Buffer
	for i := range n {
		ev := lines[i%len(lines)]
		inner.WriteString("2J")
		inner.Write(binary.BigEndian.AppendUint32(nil, uint32(i+1)))
		inner.Write(binary.BigEndian.AppendUint32(nil, uint32(len(ev))))
		inner.Write(ev)
	}
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, 3)
	_, _ = zw.Write(inner.Bytes())
	_ = zw.Close()
	stream := append([]byte("2W"), binary.BigEndian.AppendUint32(nil, uint32(n))...)
	stream = append(stream, "2C"...)
	stream = append(append(stream, binary.BigEndian.AppendUint32(nil, uint32(z.Len()))...), z.Bytes()...)
	return stream, inner.Len()
}

// BenchmarkBeatsServer: the server's whole path (socket, guard, go-lumber,
// handler, ACK) for compressed windows of 2048 events, with the client's
// compression done once up front, as it happens on the forwarder's machine.
func BenchmarkBeatsServer(b *testing.B) {
	window, inflated := compressedWindow(b, 2048)
	h := &countHandler{}
	srv, err := NewBeatsServer(BeatsConfig{Addr: "127.0.0.1:0"}, h, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ack := make([]byte, 6)
	b.SetBytes(int64(inflated))
	for b.Loop() {
		if _, err := conn.Write(window); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := io.ReadFull(conn, ack); err != nil {
				b.Fatal(err)
			}
			if binary.BigEndian.Uint32(ack[2:]) == 2048 {
				break
			}
		}
	}
	reportEvents(b, int(h.n.Load()))
}

// BenchmarkBeatsFrames: the server-side frame work alone (inflate, check,
// hand on, ACK) on the same window, without the network, with a handler
// that does nothing.
func BenchmarkBeatsFrames(b *testing.B) {
	stream, inflated := compressedWindow(b, 2048)
	s := &BeatsServer{cfg: BeatsConfig{MaxEventBytes: DefaultBeatsMaxEvent, MaxBatchBytes: DefaultBeatsMaxBatch,
		MaxBatchEvents: DefaultBeatsMaxEvents, Timeout: time.Second, Keepalive: time.Minute, IdleTimeout: time.Second},
		h: HandlerFunc(func(context.Context, Message) Result { return Result{Accepted: 1} }),
		c: newCounters(TransportBeats), log: zap.NewNop(), ctx: context.Background()}
	b.SetBytes(int64(inflated))
	b.ReportAllocs()
	for b.Loop() {
		conn := &bytesConn{r: bytes.NewReader(stream)}
		bc := &beatsConn{s: s, raw: conn, conn: conn, in: bufio.NewReaderSize(conn, 32<<10), remote: "bench"}
		_ = bc.run()
	}
	reportEvents(b, 2048*b.N)
}
