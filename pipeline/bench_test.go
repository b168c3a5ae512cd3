package pipeline

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/sensor"
	"github.com/knockwatch/knockwatch/winevents"
	"github.com/knockwatch/knockwatch/winevents/intake"
)

// eventTemplate is the real Firewall 2004 sample (Psmths record 6661) with
// a placeholder for the record id, so every iteration is a new record.
func eventTemplate(b *testing.B) (head, tail string) {
	raw, err := os.ReadFile("../testdata/winevents/psmths_2004_2071_2006_5156_examples.xml")
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, "<Event\n")
	j := strings.Index(s[i:], "</Event>")
	ev := s[i : i+j+len("</Event>")]
	head, tail, ok := strings.Cut(ev, "<EventRecordID>6661</EventRecordID>")
	if !ok {
		b.Fatal("sample changed")
	}
	return head + "<EventRecordID>", "</EventRecordID>" + tail
}

func payloadN(head, tail string, n int) []byte {
	return []byte(head + strconv.Itoa(n) + tail)
}

// BenchmarkDecodeAndAdd is the baseline: the decoder and the engine called
// directly, as the pipeline does for one event payload.
func BenchmarkDecodeAndAdd(b *testing.B) {
	head, tail := eventTemplate(b)
	d := winevents.NewDecoder(winevents.Options{})
	e, err := correlate.New(correlate.DefaultConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		changes, _ := d.Decode(payloadN(head, tail, i))
		for j := range changes {
			if c, ok, _ := ChangeFromWinevents(&changes[j]); ok {
				_ = e.AddChange(c)
			}
		}
	}
}

// BenchmarkHandle is the same through Pipeline.Handle (intake.Handler):
// the difference is the pipeline's own cost (busy check, counters, lag).
func BenchmarkHandle(b *testing.B) {
	head, tail := eventTemplate(b)
	p, err := New(Config{Engine: correlate.DefaultConfig()}, alert.NewStreamWriter(discard{}, "bench", false), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		res := p.Handle(ctx, intake.Message{Transport: intake.TransportHTTP, Payload: payloadN(head, tail, i), Received: now})
		if res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func benchKnock(i int, base time.Time) (*sensor.Knock, *sensor.Handshake) {
	src := netip.AddrFrom4([4]byte{198, byte(i >> 16), byte(i >> 8), byte(i)})
	dst := netip.AddrFrom4([4]byte{10, 0, 0, 5})
	t := base.Add(time.Duration(i) * time.Millisecond)
	k := &sensor.Knock{Src: src, Dst: dst, Distinct: 3, Touches: []sensor.Touch{
		{Port: 1001, Time: t, Kind: sensor.TouchREJ}, {Port: 1002, Time: t.Add(time.Millisecond), Kind: sensor.TouchREJ},
		{Port: 1003, Time: t.Add(2 * time.Millisecond), Kind: sensor.TouchS0}}}
	h := &sensor.Handshake{Src: src, Dst: dst, SrcPort: 40000, Port: 22, SYN: t.Add(time.Second),
		SYNACK: t.Add(time.Second + time.Microsecond), ACK: t.Add(time.Second + 2*time.Microsecond), PortLastOpen: t.Add(-time.Hour), Distinct: 3}
	return k, h
}

// BenchmarkSensorRecordsDirect: a knock and a handshake (port open all
// along: no alert) converted and added to the engine directly.
func BenchmarkSensorRecordsDirect(b *testing.B) {
	e, err := correlate.New(correlate.DefaultConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k, h := benchKnock(i, base)
		_ = e.AddKnock(KnockFromLoader(k))
		_ = e.AddHandshake(HandshakeFromLoader(h))
	}
}

// BenchmarkSensorRecords: the same through Pipeline.AddRecord.
func BenchmarkSensorRecords(b *testing.B) {
	p, err := New(Config{Engine: correlate.DefaultConfig()}, alert.NewStreamWriter(discard{}, "bench", false), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k, h := benchKnock(i, base)
		_ = p.AddRecord(ctx, k)
		_ = p.AddRecord(ctx, h)
	}
}
