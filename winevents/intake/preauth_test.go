package intake

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func dialSrc(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return err == nil // EOF: closed by the peer
}

// An idle connection that never authenticates is closed at the pre-auth
// timeout and counted; one that sent a valid token stays (keep-alive); a
// 401 closes the connection at once.
func TestHTTPPreAuthTimeoutAnd401(t *testing.T) {
	rec := newRecorder()
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Token: "tok", PreAuth: PreAuthConfig{Timeout: 300 * time.Millisecond}},
		rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr := srv.Addr().String()
	idle := dialSrc(t, "127.0.0.1", addr)
	eventually(t, "one unauthenticated connection", func() bool { return srv.Stats().ConnectionsUnauthenticated == 1 })
	if !closedWithin(idle, 5*time.Second) {
		t.Fatal("idle unauthenticated connection not closed")
	}
	eventually(t, "preauth_timeout counted", func() bool { return srv.Stats().Dropped[ReasonPreAuthTimeout] == 1 })

	noTok := dialSrc(t, "127.0.0.1", addr)
	fmt.Fprint(noTok, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	br := bufio.NewReader(noTok)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = noTok.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := br.ReadByte(); !resp.Close || !errors.Is(err, io.EOF) {
		t.Fatalf("the connection stayed open after a 401: %v", err)
	}

	authed := dialSrc(t, "127.0.0.1", addr)
	br = bufio.NewReader(authed)
	for i := range 2 {
		fmt.Fprint(authed, "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nContent-Length: 2\r\n\r\n{}")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("request %d with the token: %v %v", i, resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		time.Sleep(500 * time.Millisecond) // past the pre-auth timeout: still open
	}
	if st := srv.Stats(); st.ConnectionsUnauthenticated != 0 || st.Dropped[ReasonPreAuthTimeout] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// One source holds at most PerSource unauthenticated connections; a full
// pool makes room for a source that holds fewer by closing the oldest
// connection of the source that holds the most, and refuses otherwise.
func TestPreAuthPoolFairAcrossSources(t *testing.T) {
	rec := newRecorder()
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Token: "tok",
		PreAuth: PreAuthConfig{MaxConns: 4, PerSource: 3, Timeout: time.Minute}}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr := srv.Addr().String()
	var a []net.Conn
	for range 4 {
		a = append(a, dialSrc(t, "127.0.0.2", addr))
	}
	// the fourth from 127.0.0.2 is over its share
	if !closedWithin(a[3], 2*time.Second) {
		t.Fatal("fourth connection from one source not refused")
	}
	b := dialSrc(t, "127.0.0.3", addr) // the pool has room: 3 + 1
	eventually(t, "4 unauthenticated", func() bool { return srv.Stats().ConnectionsUnauthenticated == 4 })
	c := dialSrc(t, "127.0.0.4", addr) // full: takes the oldest slot of 127.0.0.2 (3 > 0)
	if !closedWithin(a[0], 2*time.Second) {
		t.Fatal("the oldest connection of the biggest source was not closed for a smaller source")
	}
	d := dialSrc(t, "127.0.0.3", addr) // 127.0.0.3 holds 1, 127.0.0.2 holds 2: takes one more
	_ = d
	e := dialSrc(t, "127.0.0.4", addr) // everyone holds 2 or fewer: 127.0.0.4 holds 1, the biggest 2 -> evicts
	_ = e
	eventually(t, "the second eviction", func() bool { return srv.Stats().Dropped[ReasonPreAuthEvicted] >= 2 })
	st := srv.Stats()
	if st.ConnectionsUnauthenticated > 4 || st.Dropped[ReasonPreAuthLimit] != 1 || st.Dropped[ReasonPreAuthEvicted] < 2 {
		t.Fatalf("stats %+v", st)
	}
	// A peer with the token gets in and is served while the pool is full.
	cl := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+EventsPath, strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := cl.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("forwarder: %v %v", resp, err)
	}
	_ = b
	_ = c
}

// A TLS peer that never sends its ClientHello is closed at the pre-auth
// timeout (syslog over TLS and Beats over TLS), while a certificate holder
// is served.
func TestTLSPreAuthTimeout(t *testing.T) {
	pki := newTestPKI(t)
	rec := newRecorder()
	ss, err := NewSyslogTCP(SyslogConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t, true),
		PreAuth: PreAuthConfig{Timeout: 300 * time.Millisecond}}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	bs := startBeats(t, BeatsConfig{TLS: pki.serverTLS(t, true), PreAuth: PreAuthConfig{Timeout: 300 * time.Millisecond}}, rec)
	for _, l := range []Listener{ss, bs} {
		silent := dialSrc(t, "127.0.0.2", l.Addr().String())
		if !closedWithin(silent, 5*time.Second) {
			t.Fatalf("%s: never-handshaking peer not closed", l.Stats().Transport)
		}
		eventually(t, "preauth_timeout counted", func() bool { return l.Stats().Dropped[ReasonPreAuthTimeout] == 1 })
		c, err := tls.Dial("tcp", l.Addr().String(), pki.clientTLS(&pki.clientPair))
		if err != nil {
			t.Fatalf("%s: certificate holder: %v", l.Stats().Transport, err)
		}
		time.Sleep(500 * time.Millisecond) // past the pre-auth timeout: authenticated, still open
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("%s: authenticated connection closed: %v", l.Stats().Transport, err)
		}
		if st := l.Stats(); st.ConnectionsUnauthenticated != 0 || st.Dropped[ReasonTLSHandshake] != 0 {
			t.Fatalf("%s: %+v", st.Transport, st)
		}
		_ = c.Close()
	}
}

func TestMemoryBudget(t *testing.T) {
	b := NewMemoryBudget(4 << 20)
	if !b.TryAcquire(3<<20) || b.TryAcquire(2<<20) {
		t.Fatal("try acquire")
	}
	got := make(chan int, 3)
	for i, n := range []int64{2 << 20, 1 << 20} { // FIFO: the 1 MiB waits behind the 2 MiB
		go func() {
			if err := b.Acquire(context.Background(), n); err == nil {
				got <- i
			}
		}()
		time.Sleep(50 * time.Millisecond)
	}
	if b.TryAcquire(1 << 20) {
		t.Fatal("TryAcquire jumped the queue")
	}
	select {
	case i := <-got:
		t.Fatalf("waiter %d served before the budget was released", i)
	case <-time.After(100 * time.Millisecond):
	}
	b.Release(1 << 20) // 2 MiB in use: the first waiter fits, the second then does not
	if first := <-got; first != 0 {
		t.Fatalf("served waiter %d first, want arrival order", first)
	}
	select {
	case i := <-got:
		t.Fatalf("waiter %d served over the budget", i)
	case <-time.After(100 * time.Millisecond):
	}
	b.Release(2 << 20)
	if second := <-got; second != 1 {
		t.Fatalf("served %d", second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Acquire(ctx, 4<<20); err == nil {
		t.Fatal("acquired over the budget")
	}
	if err := b.Acquire(context.Background(), 5<<20); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("more than the whole budget: %v", err)
	}
	b.Release(3 << 20)
	if st := b.Stats(); st.InUse != 0 || st.Peak != 4<<20 || st.Waits < 2 || st.Refused != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// An HTTP body is read under the memory budget: with the budget held, a
// request waits, then is answered 429 and counted.
func TestHTTPBodyUnderBudget(t *testing.T) {
	rec := newRecorder()
	b := NewMemoryBudget(1 << 20)
	srv, err := NewHTTPServer(HTTPConfig{Addr: "127.0.0.1:0", Budget: b, BudgetWait: 100 * time.Millisecond}, rec, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "http://" + srv.Addr().String() + EventsPath
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"a":1}`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%v %v", resp, err)
	}
	if !b.TryAcquire(1 << 20) {
		t.Fatal("budget not given back")
	}
	resp, err = http.Post(url, "application/json", strings.NewReader(`{"a":2}`))
	if err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("with the budget exhausted: %v %v", resp, err)
	}
	b.Release(1 << 20)
	if st := srv.Stats(); st.Dropped[ReasonMemoryBudget] != 1 || b.Stats().InUse != 0 {
		t.Fatalf("stats %+v %+v", st.Dropped, b.Stats())
	}
}
