package alert

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkWriterFile measures the file sink, fsync per Write, by batch
// size; ns/op is per record.
func BenchmarkWriterFile(b *testing.B) {
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			w, err := NewWriter(WriterConfig{Path: filepath.Join(b.TempDir(), "a.jsonl")})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			rs := recs("bench", batch)
			b.SetBytes(int64(len(rs[0].JSON) + 1))
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				if err := w.Write(context.Background(), rs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWebhookSpool measures Webhook.Write (validate, frame, append,
// fsync) with the receiver down, by batch size; ns/op is per record.
func BenchmarkWebhookSpool(b *testing.B) {
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			cfg := testConfig(b, "http://"+downAddr(b)+"/alerts", b.TempDir())
			cfg.InitialBackoff, cfg.MaxBackoff = time.Hour, time.Hour
			cfg.CloseTimeout = time.Millisecond
			w := mustWebhook(b, cfg)
			rs := recs("bench", batch)
			b.SetBytes(int64(len(rs[0].JSON)))
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				if err := w.Write(context.Background(), rs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWebhookDelivery measures end to end: Write in batches of 100 and
// wait until a real HTTP receiver acknowledged every record; ns/op is per
// record.
func BenchmarkWebhookDelivery(b *testing.B) {
	rv := newReceiver(b)
	addr := downAddr(b)
	serveAt(b, addr, rv)
	cfg := testConfig(b, "http://"+addr+"/alerts", b.TempDir())
	cfg.BatchRecords = 100
	w := mustWebhook(b, cfg)
	rs := recs("bench", 100)
	b.SetBytes(int64(len(rs[0].JSON)))
	b.ResetTimer()
	n := 0
	for ; n < b.N; n += len(rs) {
		if err := w.Write(context.Background(), rs); err != nil {
			b.Fatal(err)
		}
	}
	for w.Stats().Delivered < uint64(n) {
		time.Sleep(100 * time.Microsecond)
	}
}

// BenchmarkFrameReader measures reading spool frames (CRC-32C check and
// decode).
func BenchmarkFrameReader(b *testing.B) {
	var seg []byte
	for _, r := range recs("bench", 1000) {
		seg = appendFrame(seg, r)
	}
	b.SetBytes(int64(len(seg)) / 1000)
	b.ResetTimer()
	for i := 0; i < b.N; {
		r := newFrameReader(bytes.NewReader(seg), 0, int64(len(seg)))
		for ; i < b.N; i++ {
			if _, _, _, err := r.next(); err != nil {
				break
			}
		}
	}
}
