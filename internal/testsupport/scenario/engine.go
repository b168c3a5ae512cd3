package scenario

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// Engine is one of the sensor's engines as the scenarios drive it: the XDP
// program through BPF_PROG_RUN (loader) or the Go twin (gotwin).
type Engine interface {
	// Run pushes one frame stamped ts and returns the verdict.
	Run(frame []byte, ts time.Time) (uint32, error)
	// Sweep ages pending SYNs at now and returns the touches found.
	Sweep(now time.Time) (int, error)
	// Records returns (and consumes) the records produced so far, in order.
	Records() ([]sensor.Record, error)
	// Counters returns the counters by name.
	Counters() (sensor.Counters, error)
}

// Requester is an Engine that takes userspace's requests (both do).
type Requester interface {
	SetRemoteFlag(src, dst netip.Addr, until time.Time) error
	RequestSample(host netip.Addr, until time.Time) error
}

// request makes st's request of e.
func request(e Engine, r *Request) error {
	q, ok := e.(Requester)
	if !ok {
		return fmt.Errorf("engine %T takes no requests", e)
	}
	if r.RemoteFlag {
		return q.SetRemoteFlag(r.Src, r.Dst, T0.Add(r.Until))
	}
	return q.RequestSample(r.Dst, T0.Add(r.Until))
}

// Outcome is what an engine made of a step sequence.
type Outcome struct {
	Records  []sensor.Record
	Counters sensor.Counters
	Verdicts []uint32
	Sweeps   []int
	Packets  int // frames run (sweeps and frames shorter than Ethernet excluded)
}

// Knocks returns the KNOCK records.
func (o Outcome) Knocks() []*sensor.Knock {
	var out []*sensor.Knock
	for _, r := range o.Records {
		if k, ok := r.(*sensor.Knock); ok {
			out = append(out, k)
		}
	}
	return out
}

// Handshakes returns the HANDSHAKE records.
func (o Outcome) Handshakes() []*sensor.Handshake {
	var out []*sensor.Handshake
	for _, r := range o.Records {
		if h, ok := r.(*sensor.Handshake); ok {
			out = append(out, h)
		}
	}
	return out
}

// Play runs steps through e and collects its outcome. Frames shorter than
// an Ethernet header are skipped: BPF_PROG_RUN refuses them before the
// program runs (see gotwin's package doc).
func Play(t testing.TB, e Engine, steps []Step) Outcome {
	t.Helper()
	var o Outcome
	for i, st := range steps {
		if st.Req != nil {
			if err := request(e, st.Req); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			continue
		}
		if st.Sweep {
			n, err := e.Sweep(T0.Add(st.At))
			if err != nil {
				t.Fatalf("step %d: sweep: %v", i, err)
			}
			o.Sweeps = append(o.Sweeps, n)
			continue
		}
		b := st.Bytes()
		if len(b) < 14 {
			continue
		}
		v, err := e.Run(b, T0.Add(st.At))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		o.Verdicts = append(o.Verdicts, v)
		o.Packets++
	}
	var err error
	if o.Counters, err = e.Counters(); err != nil {
		t.Fatal(err)
	}
	if o.Records, err = e.Records(); err != nil {
		t.Fatal(err)
	}
	return o
}

// Compare reports every difference between two engines' outcomes (a is
// named "xdp", b "go"); "" when they agree.
func Compare(a, b Outcome) string {
	var s strings.Builder
	for _, name := range sensor.CounterNames {
		if a.Counters[name] != b.Counters[name] {
			fmt.Fprintf(&s, "counter %s: xdp %d, go %d\n", name, a.Counters[name], b.Counters[name])
		}
	}
	if !reflect.DeepEqual(a.Verdicts, b.Verdicts) {
		fmt.Fprintf(&s, "verdicts differ\n")
	}
	if !reflect.DeepEqual(a.Sweeps, b.Sweeps) {
		fmt.Fprintf(&s, "sweep results: xdp %v, go %v\n", a.Sweeps, b.Sweeps)
	}
	for i := range max(len(a.Records), len(b.Records)) {
		var ar, br sensor.Record
		if i < len(a.Records) {
			ar = a.Records[i]
		}
		if i < len(b.Records) {
			br = b.Records[i]
		}
		if !reflect.DeepEqual(ar, br) {
			fmt.Fprintf(&s, "record %d:\n  xdp %s\n  go  %s\n", i, Show(ar), Show(br))
		}
	}
	return s.String()
}

// Show prints a record for a test failure.
func Show(r sensor.Record) string {
	switch r := r.(type) {
	case *sensor.Knock:
		return fmt.Sprintf("KNOCK %+v", *r)
	case *sensor.Handshake:
		return fmt.Sprintf("HANDSHAKE %+v", *r)
	}
	return "none"
}
