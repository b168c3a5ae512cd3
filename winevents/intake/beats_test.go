package intake

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"
	"go.uber.org/zap/zaptest"
)

// rawEncoder sends each event's bytes as they are.
func rawEncoder(v any) ([]byte, error) { return v.([]byte), nil }

func lumberBatch(lines [][]byte) []any {
	out := make([]any, len(lines))
	for i, l := range lines {
		out[i] = l
	}
	return out
}

func startBeats(t *testing.T, cfg BeatsConfig, h Handler) *BeatsServer {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := NewBeatsServer(cfg, h, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestBeatsWithLumberClient(t *testing.T) {
	lines := jsonLines(t)
	for _, level := range []int{0, 3} { // plain JSON frames and a compressed window
		rec := newRecorder()
		srv := startBeats(t, BeatsConfig{}, rec)
		cl, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.CompressionLevel(level),
			lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for round := range 2 {
			n, err := cl.Send(lumberBatch(lines))
			if err != nil || n != len(lines) {
				t.Fatalf("level %d round %d: acked %d, %v", level, round, n, err)
			}
		}
		_ = cl.Close()
		msgs := rec.messages() // acked means handled: no waiting needed
		if len(msgs) != 2*len(lines) {
			t.Fatalf("level %d: handler got %d events, want %d", level, len(msgs), 2*len(lines))
		}
		for i, m := range msgs {
			if !bytes.Equal(m.Payload, lines[i%len(lines)]) || m.Transport != TransportBeats || !strings.HasPrefix(m.Remote, "127.0.0.1:") {
				t.Fatalf("level %d event %d: %s %s %.60q", level, i, m.Transport, m.Remote, m.Payload)
			}
		}
		if st := srv.Stats(); st.Accepted != uint64(2*len(lines)) || st.ConnectionsTotal != 1 {
			t.Errorf("stats %+v", st)
		}
	}
}

// gateHandler blocks inside Handle until released, to prove that the ACK
// waits for the handler.
type gateHandler struct {
	inside  chan struct{}
	release chan struct{}
	rec     *recorder
}

func (g *gateHandler) Handle(ctx context.Context, m Message) Result {
	g.inside <- struct{}{}
	<-g.release
	return g.rec.Handle(ctx, m)
}

func TestBeatsAckAfterHandler(t *testing.T) {
	g := &gateHandler{inside: make(chan struct{}), release: make(chan struct{}), rec: newRecorder()}
	srv := startBeats(t, BeatsConfig{Keepalive: 50 * time.Millisecond}, g)
	cl, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	done := make(chan error, 1)
	go func() {
		n, err := cl.Send(lumberBatch([][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`)}))
		if err == nil && n != 2 {
			err = errors.New("partial ack")
		}
		done <- err
	}()
	for i := range 2 {
		<-g.inside // the handler holds event i
		select {
		case err := <-done:
			t.Fatalf("batch acknowledged while event %d was still in the handler (%v)", i, err)
		default:
		}
		g.rec.setBusy(2) // and then refuses it twice: the ACK keeps waiting
		g.release <- struct{}{}
		for range 2 {
			<-g.inside
			g.release <- struct{}{}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := srv.Stats(); st.Accepted != 2 || st.Dropped[ReasonBusy] != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestBeatsEventTooLarge(t *testing.T) {
	rec := newRecorder()
	srv := startBeats(t, BeatsConfig{MaxEventBytes: 1024}, rec)
	for _, level := range []int{0, 5} {
		cl, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.CompressionLevel(level))
		if err != nil {
			t.Fatal(err)
		}
		big := []byte(`{"x":"` + strings.Repeat("a", 5000) + `"}`)
		n, err := cl.Send(lumberBatch([][]byte{big, []byte(`{"small":1}`), []byte(`not json`)}))
		_ = cl.Close()
		if err != nil || n != 3 {
			t.Fatalf("acked %d, %v: an oversized or broken event must not block the batch", n, err)
		}
	}
	msgs := rec.messages()
	if len(msgs) != 2 || string(msgs[0].Payload) != `{"small":1}` {
		t.Fatalf("handler got %d messages", len(msgs))
	}
	if st := srv.Stats(); st.Dropped[ReasonTooLarge] != 2 || st.Dropped[ReasonUnreadable] != 2 {
		t.Errorf("dropped %v", st.Dropped)
	}
}

// TestBeatsHostileFrames speaks raw Lumberjack: announced sizes far over the
// limits close the connection without allocating them.
func TestBeatsHostileFrames(t *testing.T) {
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	var zbomb bytes.Buffer
	zw := zlib.NewWriter(&zbomb)
	_, _ = zw.Write(cat([]byte("2J"), u32(1), u32(0xFFFFFFF0), []byte("{}")))
	_ = zw.Close()
	cases := []struct {
		name   string
		stream []byte
		reason string
	}{
		{"huge window", cat([]byte("2W"), u32(0xFFFFFFFF)), ReasonTooLarge},
		{"huge compressed frame", cat([]byte("2W"), u32(1), []byte("2C"), u32(0xFFFFFFF0)), ReasonTooLarge},
		{"event outside a window", cat([]byte("2J"), u32(1), u32(2), []byte("{}")), ReasonBadFrame},
		{"protocol v1", cat([]byte("1W"), u32(1)), ReasonBadFrame},
		{"unknown frame", cat([]byte("2W"), u32(1), []byte("2Z")), ReasonBadFrame},
		{"window inside a window", cat([]byte("2W"), u32(2), []byte("2J"), u32(1), u32(2), []byte("{}"), []byte("2W"), u32(1)), ReasonBadFrame},
		{"compressed garbage", cat([]byte("2W"), u32(1), []byte("2C"), u32(4), []byte("abcd")), ReasonBadFrame},
		{"zlib bomb header", cat([]byte("2W"), u32(1), []byte("2C"), u32(uint32(zbomb.Len())), zbomb.Bytes()), ReasonTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder()
			srv := startBeats(t, BeatsConfig{MaxEventBytes: 1 << 20, MaxBatchBytes: 4 << 20, MaxBatchEvents: 4096}, rec)
			conn, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(c.stream); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(conn); err != nil {
				t.Fatalf("server did not close the connection: %v", err)
			}
			eventually(t, c.reason+" counted", func() bool { return srv.Stats().Dropped[c.reason] == 1 })
			if len(rec.messages()) != 0 {
				t.Error("hostile stream delivered events")
			}
		})
	}
}

func TestBeatsMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	rec := newRecorder()
	srv := startBeats(t, BeatsConfig{TLS: pki.serverTLS(t, true)}, rec)
	dial := func(cert *tls.Certificate) func(string, string) (net.Conn, error) {
		return func(network, addr string) (net.Conn, error) { return tls.Dial(network, addr, pki.clientTLS(cert)) }
	}
	cl, err := lumberclient.SyncDialWith(dial(&pki.clientPair), srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := cl.Send(lumberBatch([][]byte{[]byte(`{"tls":true}`)})); err != nil || n != 1 {
		t.Fatalf("acked %d, %v", n, err)
	}
	_ = cl.Close()
	if m := rec.messages(); len(m) != 1 || !strings.Contains(m[0].Meta[MetaClientCert], "winlogbeat-wec01") {
		t.Fatalf("messages %+v", m)
	}
	for _, cert := range []*tls.Certificate{nil, &pki.otherPair} {
		cl, err := lumberclient.SyncDialWith(dial(cert), srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder),
			lumberclient.Timeout(5*time.Second))
		if err != nil {
			continue // refused during the handshake
		}
		if _, err := cl.Send(lumberBatch([][]byte{[]byte(`{"tls":false}`)})); err == nil {
			t.Error("batch acknowledged without a valid client certificate")
		}
		_ = cl.Close()
	}
	eventually(t, "handshake failures counted", func() bool { return srv.Stats().Dropped[ReasonTLSHandshake] == 2 })
	if len(rec.messages()) != 1 {
		t.Error("unauthenticated client delivered events")
	}
}

// TestBeatsUnackedOnClose: a batch the handler never took is not acknowledged
// when the server closes, so the client still holds it and sends it again.
func TestBeatsUnackedOnClose(t *testing.T) {
	rec := newRecorder()
	rec.busy = 1 << 30 // never takes anything
	srv, err := NewBeatsServer(BeatsConfig{Addr: "127.0.0.1:0"}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	done := make(chan error, 1)
	go func() { _, err := cl.Send(lumberBatch([][]byte{[]byte(`{"n":1}`)})); done <- err }()
	eventually(t, "the handler refusing", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.busyOffers > 0 })
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("batch acknowledged although the handler never took it")
	}
}

func newZlibWriter(w io.Writer) *zlib.Writer { return zlib.NewWriter(w) }

// TestBeatsResendAfterDisconnect: a forwarder that loses its connection
// before the ACK sends the batch again on a new one; the server takes it
// again (at-least-once; the decoders drop the duplicates by record id).
func TestBeatsResendAfterDisconnect(t *testing.T) {
	g := &gateHandler{inside: make(chan struct{}), release: make(chan struct{}), rec: newRecorder()}
	srv := startBeats(t, BeatsConfig{}, g)
	batch := lumberBatch([][]byte{[]byte(`{"record_id":1}`), []byte(`{"record_id":2}`)})
	first, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := first.Send(batch); done <- err }()
	<-g.inside // event 1 is in the handler
	_ = first.Close()
	if err := <-done; err == nil {
		t.Fatal("the first send was acknowledged although the connection dropped before the ACK")
	}
	g.release <- struct{}{}
	<-g.inside
	g.release <- struct{}{} // the server finishes the orphaned batch; its ACK goes nowhere

	second, err := lumberclient.SyncDial(srv.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	go func() {
		for range 2 {
			<-g.inside
			g.release <- struct{}{}
		}
	}()
	if n, err := second.Send(batch); err != nil || n != 2 {
		t.Fatalf("resend: acked %d, %v", n, err)
	}
	if got := payloads(g.rec.messages()); len(got) != 4 || got[2] != `{"record_id":1}` || got[3] != `{"record_id":2}` {
		t.Fatalf("handler saw %q", got)
	}
}
