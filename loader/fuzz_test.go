package loader

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/testsupport/scenario"
	"github.com/knockwatch/knockwatch/sensor"
)

func FuzzProgram(f *testing.F) {
	s := loadReplay(f, func(c *sensor.Config) {
		c.PairSlots = 64
		c.PortSlots = 64
		c.Candidates = 32
		c.Watches = 16
	})
	rd, err := s.NewReader()
	if err != nil {
		f.Fatal(err)
	}
	defer rd.Close()
	run, err := s.NewRunner()
	if err != nil {
		f.Fatal(err)
	}
	// Seeds: a REJ knock then a connect; an S0 knock; noise.
	f.Add([]byte{0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1, 10, 2, 0, 1, 0, 0, 0, 2, 10, 2, 0, 2, 0, 0, 0, 9, 40, 3, 0, 9, 0, 4, 0, 9, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 1, 50, 0, 0, 2, 50, 0, 0, 3, 50, 0, 0, 4, 50})
	f.Add([]byte{7, 0, 30, 0, 0x45, 0, 0, 40, 5, 1, 2, 3, 0, 0x11, 5, 6, 7, 1, 2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := s.Reset(); err != nil {
			t.Fatal(err)
		}
		steps := scenario.DecodeOps(data)
		for i, st := range steps {
			if r := st.Req; r != nil {
				var err error
				if r.RemoteFlag {
					err = s.SetRemoteFlag(r.Src, r.Dst, t0.Add(r.Until))
				} else {
					err = s.RequestSample(r.Dst, t0.Add(r.Until))
				}
				if err != nil && !errors.Is(err, ErrTableFull) {
					t.Fatalf("step %d: %v", i, err)
				}
				continue
			}
			if st.Sweep {
				if _, err := s.Sweep(t0.Add(st.At)); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				continue
			}
			b := st.Bytes()
			if len(b) < 14 {
				continue
			}
			if _, err := run.Run(b, t0.Add(st.At)); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		if _, err := s.Sweep(t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		recs := drain(t, rd)
		c, err := s.Counters()
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, s.Config(), recs, c)
	})
}

// checkInvariants holds for any packet sequence.
func checkInvariants(t *testing.T, cfg sensor.Config, recs []sensor.Record, c sensor.Counters) {
	t.Helper()
	outcomes := c["non_ip"] + c["non_tcp"] + c["truncated"] + c["fragment"] + c["unknown_ext"] + c["bad_header"] + c["tcp"]
	if outcomes != c["packets"] {
		t.Errorf("parse outcomes %d != packets %d", outcomes, c["packets"])
	}
	if c["syn"]+c["synack"]+c["rst"]+c["bad_flags"] > c["tcp"] {
		t.Errorf("more classified TCP packets than TCP packets: %v", c)
	}
	if c["touch_rej"] > c["rst"] {
		t.Errorf("touch_rej %d > rst %d", c["touch_rej"], c["rst"])
	}
	if c["touch_s0"] > c["syn"] {
		t.Errorf("touch_s0 %d > syn %d", c["touch_s0"], c["syn"])
	}
	if c["touch_rstos0"] > c["rst"] {
		t.Errorf("touch_rstos0 %d > rst %d", c["touch_rstos0"], c["rst"])
	}
	type last struct {
		epoch  uint32
		newest time.Time
	}
	flagged := map[[2]netip.Addr]last{}
	var nk, nh, ns uint64
	for _, r := range recs {
		switch r := r.(type) {
		case *sensor.Knock:
			nk++
			key := [2]netip.Addr{r.Src, r.Dst}
			// No flag without N distinct closed ports within W of its
			// newest closed touch.
			var newest time.Time
			for _, tc := range r.Touches {
				if tc.Kind.Closed() && tc.Time.After(newest) {
					newest = tc.Time
				}
			}
			ports := map[uint16]bool{}
			for _, tc := range r.Touches {
				if tc.Kind.Closed() && newest.Sub(tc.Time) <= cfg.Window {
					ports[tc.Port] = true
				}
			}
			if len(ports) < cfg.MinPorts {
				t.Errorf("knock %v -> %v with %d distinct closed ports in the window: %+v", r.Src, r.Dst, len(ports), r.Touches)
			}
			// A pair's next KNOCK of the same candidate (the next epoch)
			// comes a window after the last one's touches, at the earliest.
			if prev, ok := flagged[key]; ok && r.Epoch == prev.epoch+1 && r.FlagTime.Sub(prev.newest) <= cfg.Window {
				t.Errorf("%v -> %v: epoch %d at %v, within the window of epoch %d's touches (%v)", r.Src, r.Dst, r.Epoch,
					r.FlagTime, prev.epoch, prev.newest)
			}
			if r.Epoch == 0 {
				t.Errorf("knock %v -> %v with epoch 0", r.Src, r.Dst)
			}
			flagged[key] = last{r.Epoch, newest}
		case *sensor.Handshake:
			if r.Sample {
				ns++
			} else {
				nh++
				if _, ok := flagged[[2]netip.Addr{r.Src, r.Dst}]; !ok && !r.RemoteFlag {
					t.Errorf("handshake of unflagged %v -> %v", r.Src, r.Dst)
				}
			}
			if r.ACK.Before(r.SYN) || (!r.SYNACK.IsZero() && (r.ACK.Before(r.SYNACK) || r.SYNACK.Before(r.SYN.Add(-cfg.AnswerSkew)))) {
				t.Errorf("handshake times out of order: %+v", r)
			}
		}
	}
	if ns > c["samples"] {
		t.Errorf("%d sample records, counter %d", ns, c["samples"])
	}
	if lost := c["ringbuf_full"]; nk+lost < c["flags"] || nh+lost < c["handshakes"] {
		t.Errorf("records %d knocks / %d handshakes, counters %d / %d (lost %d)", nk, nh, c["flags"], c["handshakes"], lost)
	}
	if nk > c["flags"] || nh > c["handshakes"] {
		t.Errorf("more records than counted: %d/%d vs %d/%d", nk, nh, c["flags"], c["handshakes"])
	}
}
