package loader

import (
	"encoding/binary"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"github.com/knockwatch/knockwatch/sensor"
)

// These tests decode ring-buffer records written out byte by byte, with the
// C layout annotated, so a change to struct knock_rec / handshake_rec in
// bpf/include/types.h that is not mirrored here fails loudly.

func putAddr(b []byte, a netip.Addr) { s := a.As16(); copy(b, s[:]) }

func TestDecodeKnockBytes(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.5")
	b := make([]byte, 312)
	binary.NativeEndian.PutUint32(b[0:], 1)    // __u32 type = KW_REC_KNOCK
	binary.NativeEndian.PutUint16(b[4:], 2)    // __u16 n
	binary.NativeEndian.PutUint16(b[6:], 300)  // __u16 distinct
	binary.NativeEndian.PutUint16(b[8:], 310)  // __u16 attempted
	binary.NativeEndian.PutUint16(b[10:], 0)   // __u16 _pad
	binary.NativeEndian.PutUint32(b[12:], 4)   // __u32 epoch
	putAddr(b[16:], src)                       // struct kw_pair pair: src[16]
	putAddr(b[32:], dst)                       //                      dst[16]
	binary.NativeEndian.PutUint64(b[48:], 3e9) // __u64 flag_ts
	// struct kw_touch touches[16] at 56, 16 bytes each:
	// ts u64, port u16, sport u16, kind u8, pad[3]
	binary.NativeEndian.PutUint64(b[56:], 2e9)
	binary.NativeEndian.PutUint16(b[64:], 8000)
	binary.NativeEndian.PutUint16(b[66:], 41000)
	b[68] = 2 // S0
	binary.NativeEndian.PutUint64(b[72:], 1e9)
	binary.NativeEndian.PutUint16(b[80:], 7000)
	binary.NativeEndian.PutUint16(b[82:], 40999)
	b[84] = 1 // REJ

	if got := unsafe.Sizeof(knockwatchKnockRec{}); got != uintptr(len(b)) {
		t.Fatalf("sizeof(knock_rec) = %d, annotated layout has %d", got, len(b))
	}
	rec, err := DecodeRecord(b, sensor.UnixClock)
	if err != nil {
		t.Fatal(err)
	}
	k, ok := rec.(*sensor.Knock)
	if !ok {
		t.Fatalf("decoded %T, want *Knock", rec)
	}
	if k.Src != src || k.Dst != dst || k.Distinct != 300 || k.Attempted != 310 || k.Epoch != 4 ||
		!k.FlagTime.Equal(time.Unix(3, 0)) {
		t.Errorf("knock header = %+v", k)
	}
	// Touches come out ordered by time.
	want := []sensor.Touch{{Port: 7000, SrcPort: 40999, Time: time.Unix(1, 0).UTC(), Kind: sensor.TouchREJ},
		{Port: 8000, SrcPort: 41000, Time: time.Unix(2, 0).UTC(), Kind: sensor.TouchS0}}
	if len(k.Touches) != 2 || k.Touches[0] != want[0] || k.Touches[1] != want[1] {
		t.Errorf("touches = %+v, want %+v", k.Touches, want)
	}
}

func TestDecodeHandshakeBytes(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("2001:db8:1::5")
	b := make([]byte, 112)
	binary.NativeEndian.PutUint32(b[0:], 2)      // __u32 type = KW_REC_HANDSHAKE
	binary.NativeEndian.PutUint16(b[4:], 3)      // __u16 distinct
	binary.NativeEndian.PutUint16(b[6:], 5)      // __u16 attempted
	binary.NativeEndian.PutUint32(b[8:], 2)      // __u32 epoch
	binary.NativeEndian.PutUint32(b[12:], 5)     // __u32 why = KW_HS_FLAGGED | KW_HS_REMOTE
	putAddr(b[16:], src)                         // struct kw_conn conn: pair.src
	putAddr(b[32:], dst)                         //                      pair.dst
	binary.NativeEndian.PutUint16(b[48:], 51000) //                      sport
	binary.NativeEndian.PutUint16(b[50:], 4444)  //                      dport
	binary.NativeEndian.PutUint32(b[52:], 0)     //                      _pad
	binary.NativeEndian.PutUint64(b[56:], 10e9)  // syn_ts
	binary.NativeEndian.PutUint64(b[64:], 11e9)  // synack_ts
	binary.NativeEndian.PutUint64(b[72:], 12e9)  // ack_ts
	binary.NativeEndian.PutUint64(b[80:], 5e9)   // port_last_closed
	binary.NativeEndian.PutUint64(b[88:], 6e9)   // port_first_open
	binary.NativeEndian.PutUint64(b[96:], 0)     // port_last_open: never
	binary.NativeEndian.PutUint64(b[104:], 7e9)  // port_other_done

	if got := unsafe.Sizeof(knockwatchHandshakeRec{}); got != uintptr(len(b)) {
		t.Fatalf("sizeof(handshake_rec) = %d, annotated layout has %d", got, len(b))
	}
	rec, err := DecodeRecord(b, sensor.UnixClock)
	if err != nil {
		t.Fatal(err)
	}
	h := rec.(*sensor.Handshake)
	if h.Src != src || h.Dst != dst || h.SrcPort != 51000 || h.Port != 4444 || h.Distinct != 3 || h.Attempted != 5 || h.Epoch != 2 ||
		!h.RemoteFlag || h.Sample {
		t.Errorf("handshake = %+v", h)
	}
	if !h.SYN.Equal(time.Unix(10, 0)) || !h.SYNACK.Equal(time.Unix(11, 0)) || !h.ACK.Equal(time.Unix(12, 0)) {
		t.Errorf("times = %v %v %v", h.SYN, h.SYNACK, h.ACK)
	}
	if !h.PortLastClosed.Equal(time.Unix(5, 0)) || !h.PortFirstOpen.Equal(time.Unix(6, 0)) || !h.PortLastOpen.IsZero() ||
		!h.PortOtherDone.Equal(time.Unix(7, 0)) {
		t.Errorf("port state = %v / %v / %v / %v", h.PortLastClosed, h.PortFirstOpen, h.PortLastOpen, h.PortOtherDone)
	}
}

func TestDecodeTouchBytes(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.0.0.5")
	b := make([]byte, 56)
	binary.NativeEndian.PutUint32(b[0:], 3)      // __u32 type = KW_REC_TOUCH
	b[4] = 3                                     // __u8 kind = KW_TOUCH_RSTOS0, pad[3]
	putAddr(b[8:], src)                          // struct kw_conn conn: pair.src
	putAddr(b[24:], dst)                         //                      pair.dst
	binary.NativeEndian.PutUint16(b[40:], 40001) //                      sport
	binary.NativeEndian.PutUint16(b[42:], 7000)  //                      dport
	binary.NativeEndian.PutUint64(b[48:], 9e9)   // ts

	if got := unsafe.Sizeof(knockwatchTouchRec{}); got != uintptr(len(b)) {
		t.Fatalf("sizeof(touch_rec) = %d, annotated layout has %d", got, len(b))
	}
	rec, err := DecodeRecord(b, sensor.UnixClock)
	if err != nil {
		t.Fatal(err)
	}
	want := sensor.TouchRecord{Src: src, Dst: dst, SrcPort: 40001, Port: 7000, Time: time.Unix(9, 0).UTC(), Kind: sensor.TouchRSTOS0}
	if got, ok := rec.(*sensor.TouchRecord); !ok || *got != want {
		t.Errorf("decoded %+v, want %+v", rec, want)
	}
}

func TestDecodeBadRecords(t *testing.T) {
	for _, b := range [][]byte{nil, {1, 0}, {1, 0, 0, 0, 5}, {2, 0, 0, 0}, {9, 0, 0, 0}} {
		if _, err := DecodeRecord(b, sensor.UnixClock); err == nil {
			t.Errorf("DecodeRecord(%v) succeeded", b)
		}
	}
}

// TestCounterNames holds sensor.CounterNames and sensor.InterfaceCounterNames
// to enum kw_counter and enum kw_if_counter as compiled: name by name, in
// order, read from the object's BTF (KW_C_SYN_RETRANS is "syn_retrans" at
// the same index). A counter added, removed or moved on one side only fails.
func TestCounterNames(t *testing.T) {
	spec, err := loadKnockwatch()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		enum, prefix string
		names        []string
		width        int // length of the counters array in the value struct
	}{
		{"kw_counter", "KW_C_", sensor.CounterNames, len(knockwatchKwCounters{}.C)},
		{"kw_if_counter", "KW_IF_", sensor.InterfaceCounterNames, len(knockwatchKwIfCounters{}.C)},
	} {
		var e *btf.Enum
		if err := spec.Types.TypeByName(tc.enum, &e); err != nil {
			t.Fatalf("enum %s not in BTF: %v", tc.enum, err)
		}
		var got []string
		for _, v := range e.Values {
			if v.Name == tc.prefix+"_MAX" {
				if int(v.Value) != len(tc.names) {
					t.Errorf("%s_MAX is %d, Go names %d counters", tc.prefix, v.Value, len(tc.names))
				}
				continue
			}
			if int(v.Value) != len(got) {
				t.Fatalf("enum %s: %s = %d, want %d (values must be 0, 1, 2, ...)", tc.enum, v.Name, v.Value, len(got))
			}
			got = append(got, strings.ToLower(strings.TrimPrefix(v.Name, tc.prefix)))
		}
		if !reflect.DeepEqual(got, tc.names) {
			t.Errorf("enum %s in C:\n  %v\nnames in Go:\n  %v", tc.enum, got, tc.names)
		}
		if tc.width != len(tc.names) {
			t.Errorf("%s: the value struct holds %d counters, Go names %d", tc.enum, tc.width, len(tc.names))
		}
	}
	if n := len(knockwatchKnockRec{}.Touches); n != sensor.MaxTouches {
		t.Errorf("KW_MAX_TOUCHES is %d, sensor.MaxTouches %d", n, sensor.MaxTouches)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0})
	f.Add(make([]byte, 304))
	f.Add(append([]byte{2, 0, 0, 0}, make([]byte, 84)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := DecodeRecord(b, sensor.UnixClock)
		if err == nil && rec == nil {
			t.Fatal("nil record without error")
		}
		if k, ok := rec.(*sensor.Knock); ok && len(k.Touches) > sensor.MaxTouches {
			t.Fatalf("%d touches", len(k.Touches))
		}
	})
}
