package reliability

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lumberclient "github.com/elastic/go-lumber/client/v2"

	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// attackerSource is the i-th loopback address hostile peers connect from
// (127.0.0.2 and up): the forwarder connects from 127.0.0.1.
func attackerSource(i int) string { return fmt.Sprintf("127.0.0.%d", 2+i%60) }

// holdConns opens n connections to addr from attacker sources and keeps
// them open (or re-opens them when the server closes them) until stop;
// each sends first (nil: nothing). It returns how many were open at most
// and how many the server closed.
type holder struct {
	peak, closed, refused atomic.Int64
	open                  atomic.Int64
	wg                    sync.WaitGroup
	stop                  chan struct{}
}

func holdConns(addr string, n int, first []byte) *holder {
	h := &holder{stop: make(chan struct{})}
	for i := range n {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				c, err := dialFrom(attackerSource(i), addr)
				if err != nil {
					h.refused.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				if o := h.open.Add(1); o > h.peak.Load() {
					h.peak.Store(o)
				}
				if first != nil {
					_, _ = c.Write(first)
				}
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(io.Discard, c) // until the server closes it
					close(done)
				}()
				select {
				case <-done:
					h.closed.Add(1)
				case <-h.stop:
				}
				h.open.Add(-1)
				_ = c.Close()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return h
}

func (h *holder) release() {
	close(h.stop)
	h.wg.Wait()
}

// 300 unauthenticated keep-alive HTTP connections — half send a request
// without the token (401), half never send anything — from 60 addresses,
// re-opened whenever the server closes them, while the authenticated
// forwarder posts events: every one of its requests is served.
func TestHostilePeerUnauthenticatedHTTPConnections(t *testing.T) {
	log := testLogger(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	defer p.Close()
	hs, err := intake.NewHTTPServer(intake.HTTPConfig{Addr: "127.0.0.1:0", Token: tokWEC,
		PreAuth: intake.PreAuthConfig{Timeout: 2 * time.Second}}, p, log)
	must(t, err)
	defer hs.Close()
	addr := hs.Addr().String()
	noToken := []byte("POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	silent := holdConns(addr, 150, nil)
	rude := holdConns(addr, 150, noToken)
	defer silent.release()
	defer rude.release()
	time.Sleep(500 * time.Millisecond) // let them fill every pool
	fwd := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
			return d.DialContext(ctx, network, a)
		}}}
	url := "http://" + addr + intake.EventsPath
	now := time.Now()
	served := 0
	var maxUnauth int64
	for i := range 20 {
		status, body, err := postAs(fwd, url, tokWEC, ruleAdded(nil, hostName(i%numHosts), 100+uint64(i), now, uint16(20000+i)))
		if err != nil || status != http.StatusAccepted {
			t.Errorf("forwarder request %d: %d %s %v", i, status, body, err)
			continue
		}
		served++
		maxUnauth = max(maxUnauth, hs.Stats().ConnectionsUnauthenticated)
		if i == 10 {
			fwd.CloseIdleConnections() // a new connection has to get in too
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // past the pre-auth timeout
	st := hs.Stats()
	if served != 20 || maxUnauth > intake.DefaultPreAuthConns {
		t.Fatalf("forwarder served %d/20; unauthenticated connections up to %d (pool %d)", served, maxUnauth, intake.DefaultPreAuthConns)
	}
	if st.Dropped[intake.ReasonUnauthorized] == 0 || rude.closed.Load() == 0 || silent.closed.Load() == 0 ||
		st.Dropped[intake.ReasonPreAuthTimeout]+st.Dropped[intake.ReasonPreAuthLimit]+st.Dropped[intake.ReasonPreAuthEvicted] == 0 {
		t.Fatalf("unauthenticated peers not cut or not counted: %v (rude closed %d)", st.Dropped, rude.closed.Load())
	}
	t.Logf("RESULT 300 unauthenticated keep-alive HTTP connections (150 idle, 150 sending without the token) from 60 addresses, re-opened when closed: "+
		"forwarder served %d/20 (2 connections); unauthenticated connections held at most %d (pool %d); counters unauthorized %d, preauth_timeout %d, "+
		"preauth_limit %d, preauth_evicted %d; connections closed by the server: %d after a 401, %d silent ones",
		served, maxUnauth, intake.DefaultPreAuthConns, st.Dropped[intake.ReasonUnauthorized], st.Dropped[intake.ReasonPreAuthTimeout],
		st.Dropped[intake.ReasonPreAuthLimit], st.Dropped[intake.ReasonPreAuthEvicted], rude.closed.Load(), silent.closed.Load())
}

// 300 TCP connections that never send a ClientHello, from 60 addresses,
// to syslog over TLS and to Beats over TLS (both mTLS), re-opened when
// closed: a forwarder with a valid client certificate is served on both.
func TestHostilePeerTLSNeverHandshaking(t *testing.T) {
	log := testLogger(t)
	pki := newPKI(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	defer p.Close()
	ss, err := intake.NewSyslogTCP(intake.SyslogConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS()}, p, log)
	must(t, err)
	defer ss.Close()
	bs, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS()}, p, log)
	must(t, err)
	defer bs.Close()
	hsys := holdConns(ss.Addr().String(), 300, nil)
	hbeats := holdConns(bs.Addr().String(), 300, nil)
	defer hsys.release()
	defer hbeats.release()
	time.Sleep(500 * time.Millisecond)
	now := time.Now()

	// syslog over TLS, octet-counted RFC 5424 with the Event XML as MSG
	start := time.Now()
	c, err := tls.DialWithDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second},
		"tcp", ss.Addr().String(), pki.clientTLS())
	if err != nil {
		t.Fatalf("syslog certificate holder refused: %v (stats %v)", err, ss.Stats().Dropped)
	}
	msg := "<134>1 " + now.UTC().Format(time.RFC3339) + " wec01 winevt - - - " + string(xmlRule(hostName(3), "tls", 4242, now, 4500))
	_, err = fmt.Fprintf(c, "%d %s", len(msg), msg)
	must(t, err)
	eventually(t, "the syslog event accepted", func() bool { return ss.Stats().Accepted == 1 })
	_ = c.Close()
	syslogTook := time.Since(start)

	// Beats over TLS with go-lumber's client
	start = time.Now()
	cl, err := lumberclient.SyncDialWith(func(network, a string) (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second},
			network, a, pki.clientTLS())
	}, bs.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("beats certificate holder refused: %v (stats %v)", err, bs.Stats().Dropped)
	}
	n, err := cl.Send([]any{ruleAdded(nil, hostName(4), 4343, now, 4501)})
	_ = cl.Close()
	if err != nil || n != 1 {
		t.Fatalf("beats window acknowledged %d of 1: %v", n, err)
	}
	beatsTook := time.Since(start)
	sst, bst := ss.Stats(), bs.Stats()
	for _, st := range []intake.Stats{sst, bst} {
		if st.ConnectionsUnauthenticated > intake.DefaultPreAuthConns ||
			st.Dropped[intake.ReasonPreAuthLimit]+st.Dropped[intake.ReasonPreAuthEvicted] == 0 {
			t.Fatalf("%s: pre-auth pool not enforced or not counted: %+v", st.Transport, st)
		}
	}
	t.Logf("RESULT 300 never-handshaking TCP connections each to syslog-TLS and Beats-TLS from 60 addresses: certificate holder served on syslog in %v "+
		"and on Beats in %v; unauthenticated held %d / %d; syslog preauth_limit %d evicted %d, beats preauth_limit %d evicted %d",
		syslogTook.Round(time.Millisecond), beatsTook.Round(time.Millisecond), sst.ConnectionsUnauthenticated, bst.ConnectionsUnauthenticated,
		sst.Dropped[intake.ReasonPreAuthLimit], sst.Dropped[intake.ReasonPreAuthEvicted],
		bst.Dropped[intake.ReasonPreAuthLimit], bst.Dropped[intake.ReasonPreAuthEvicted])
}

// ackTap records the ACK frames a Beats client reads.
type ackTap struct {
	net.Conn
	mu   sync.Mutex
	buf  []byte
	acks []uint32
}

func (a *ackTap) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	a.mu.Lock()
	a.buf = append(a.buf, p[:n]...)
	for len(a.buf) >= 6 {
		a.acks = append(a.acks, binary.BigEndian.Uint32(a.buf[2:6]))
		a.buf = a.buf[6:]
	}
	a.mu.Unlock()
	return n, err
}

// Issue 12: a Beats window larger than max_batch_events is taken in chunks
// with partial ACKs (no livelock): go-lumber's client sends windows of
// 1,000 relevant events, plain and compressed, to a listener whose
// max_batch_events is 100; every event is accepted and decoded exactly
// once, and the client saw the partial ACKs.
func TestBeatsOversizedWindowEveryEventOnce(t *testing.T) {
	log := testLogger(t)
	sink, _ := fileSink(t)
	p := newPipeline(t, sink, pipeline.Config{}, log)
	defer p.Close()
	bs, err := intake.NewBeatsServer(intake.BeatsConfig{Addr: "127.0.0.1:0", MaxBatchEvents: 100}, p, log)
	must(t, err)
	defer bs.Close()
	now := time.Now()
	const window = 1000
	rec := uint64(7_000_000)
	total := 0
	for _, level := range []int{0, 3} {
		var tap *ackTap
		cl, err := lumberclient.SyncDialWith(func(network, a string) (net.Conn, error) {
			c, err := net.Dial(network, a)
			if err != nil {
				return nil, err
			}
			tap = &ackTap{Conn: c}
			return tap, nil
		}, bs.Addr().String(), lumberclient.JSONEncoder(rawEncoder), lumberclient.CompressionLevel(level),
			lumberclient.Timeout(30*time.Second))
		must(t, err)
		events := make([]any, window)
		for i := range events {
			rec++
			events[i] = ruleAdded(nil, hostName(int(rec%numHosts)), rec, now, uint16(30000+rec%20000))
		}
		n, err := cl.Send(events)
		_ = cl.Close()
		if err != nil || n != window {
			t.Fatalf("level %d: window of %d acknowledged %d: %v (stats %v)", level, window, n, err, bs.Stats().Dropped)
		}
		total += window
		tap.mu.Lock()
		acks := append([]uint32(nil), tap.acks...)
		tap.mu.Unlock()
		var partial []uint32
		for _, a := range acks {
			if a != 0 && (len(partial) == 0 || a != partial[len(partial)-1]) {
				partial = append(partial, a)
			}
		}
		if len(partial) != window/100 || partial[0] != 100 || partial[len(partial)-1] != window {
			t.Fatalf("level %d: ACKs %v, want partial ACKs 100, 200, ... %d", level, partial, window)
		}
		t.Logf("RESULT oversized Beats window (level %d): %d events, max_batch_events 100: acknowledged %d in ACKs %v", level, window, n, partial)
	}
	ls, ds, es := bs.Stats(), p.Decoder().Stats(), p.Engine().Stats()
	relevant := ds.ByFormat["winlogbeat_ecs"].Relevant
	dups := ds.ByFormat["winlogbeat_ecs"].Duplicates
	if ls.Accepted != uint64(total) || relevant != uint64(total) || dups != 0 || es.In["change"] != uint64(total) {
		t.Fatalf("accepted %d, decoded %d (duplicates %d), engine changes %d; want %d each once", ls.Accepted, relevant, dups,
			es.In["change"], total)
	}
	t.Logf("RESULT oversized Beats windows: %d events sent, %d accepted, %d decoded, 0 duplicates, %d changes in the engine", total,
		ls.Accepted, relevant, es.In["change"])
}

// readACKs reads ACK frames from r until one acknowledges want.
func readACKs(r *bufio.Reader, want uint32) error {
	var b [6]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return err
		}
		if b[0] != '2' || b[1] != 'A' {
			return fmt.Errorf("not an ACK: %q", b[:2])
		}
		if binary.BigEndian.Uint32(b[2:]) == want {
			return nil
		}
	}
}
