package pipeline

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// A store-only pipeline (a scale-out sensor or intake role) stores valid
// evidence and counts invalid evidence by reason, evaluates nothing,
// needs no sink; its Busy hook refuses event payloads with ErrBusy.
func TestStoreOnly(t *testing.T) {
	if _, err := New(Config{StoreOnly: true}, nil, nil); err == nil {
		t.Fatal("store-only without an evidence log accepted")
	}
	log := &memLog{}
	var busy error
	p := newTestPipeline(t, nil, Config{StoreOnly: true, Evidence: log, Busy: func() error { return busy }})
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bad := knock(base)
	bad.Touches = nil
	if err := p.AddRecords(context.Background(), []sensor.Record{knock(base), handshake(base.Add(10*time.Second), 4444), bad}); err == nil {
		t.Error("a knock without touches was not an error")
	}
	fw := eventXML("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", 2004, 811, base.Add(5*time.Second),
		"RuleId", "{1}", "RuleName", "r", "LocalPorts", "4444", "Protocol", "6", "Direction", "1", "Action", "3", "Active", "1")
	if res := p.Handle(context.Background(), intake.Message{Transport: "http", Payload: fw, Received: base.Add(6 * time.Second)}); res.Err != nil || res.Accepted != 1 {
		t.Fatalf("handle: %+v", res)
	}
	if len(log.items) != 3 {
		t.Fatalf("stored %d items, want knock, handshake and change", len(log.items))
	}
	st := p.Stats()
	if st.In["knock"] != 2 || st.Rejected["knock"]["no_touches"] != 1 || p.Engine().Stats().Pairs != 0 {
		t.Errorf("stats %+v, engine %+v: want the invalid knock counted and nothing evaluated", st, p.Engine().Stats())
	}
	busy = fmt.Errorf("brokers behind: %w", intake.ErrBusy)
	if res := p.Handle(context.Background(), intake.Message{Transport: "http", Payload: fw, Received: base}); !errors.Is(res.Err, intake.ErrBusy) {
		t.Errorf("busy hook ignored: %+v", res)
	}
	if len(log.items) != 3 {
		t.Error("a refused payload was stored")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
