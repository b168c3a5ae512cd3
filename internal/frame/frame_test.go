package frame

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

var testFormat = Format{
	Magic:      "KWT1",
	MaxPayload: 1 << 10,
	HeadBytes:  1,
	Plausible:  func(head []byte, n int) bool { return head[0] == 'p' },
	Valid:      func(p []byte) bool { return len(p) > 0 && p[0] == 'p' },
}

func payloads(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, []byte(fmt.Sprintf("payload %d %s", i, bytes.Repeat([]byte("x"), i%17))))
	}
	return out
}

func readAll(t *testing.T, data []byte) (got [][]byte, frames, skipped int64) {
	t.Helper()
	r := NewReader(&testFormat, bytes.NewReader(data), 0, int64(len(data)))
	for {
		p, f, s, err := r.Next()
		frames += f
		skipped += s
		if errors.Is(err, io.EOF) {
			return got, frames, skipped
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bytes.Clone(p))
	}
}

// Frames round-trip; a torn last frame is reported as skipped bytes; damage
// in the middle costs that frame only.
func TestReader(t *testing.T) {
	ps := payloads(20)
	var b []byte
	var ends []int
	for _, p := range ps {
		b = testFormat.Append(b, p)
		ends = append(ends, len(b))
	}
	got, frames, skipped := readAll(t, b)
	if len(got) != len(ps) || frames != 0 || skipped != 0 {
		t.Fatalf("clean: %d payloads, %d/%d skipped", len(got), frames, skipped)
	}
	for i := range ps {
		if !bytes.Equal(got[i], ps[i]) {
			t.Fatalf("payload %d: %q", i, got[i])
		}
	}

	torn := b[:len(b)-3]
	got, frames, skipped = readAll(t, torn)
	if len(got) != len(ps)-1 || frames != 1 || skipped != int64(len(torn)-ends[len(ends)-2]) {
		t.Fatalf("torn tail: %d payloads, %d frames %d bytes skipped", len(got), frames, skipped)
	}

	damaged := bytes.Clone(b)
	damaged[ends[4]+HeaderSize+2] ^= 0x40 // inside payload 5
	got, frames, skipped = readAll(t, damaged)
	if len(got) != len(ps)-1 || frames != 1 || skipped != int64(ends[5]-ends[4]) {
		t.Fatalf("damaged: %d payloads, %d frames %d bytes skipped", len(got), frames, skipped)
	}
	if !bytes.Equal(got[5], ps[6]) {
		t.Fatalf("after the damage: %q", got[5])
	}
}

// Random damage never yields a payload that was not written, and every byte
// is accounted for as a frame or as skipped (random seeds; the property
// holds for every input).
func TestReaderRandomDamage(t *testing.T) {
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 1))
	ps := payloads(50)
	valid := map[string]bool{}
	var b []byte
	for _, p := range ps {
		b = testFormat.Append(b, p)
		valid[string(p)] = true
	}
	for range 200 {
		d := bytes.Clone(b)
		for range 1 + rng.IntN(8) {
			d[rng.IntN(len(d))] = byte(rng.Uint32())
		}
		d = d[:len(d)-rng.IntN(40)]
		r := NewReader(&testFormat, bytes.NewReader(d), 0, int64(len(d)))
		var framed, skipped int64
		for {
			p, _, s, err := r.Next()
			skipped += s
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !valid[string(p)] {
				t.Fatalf("seed %d: invented payload %q", seed, p)
			}
			framed += r.Pos() - r.LastStart()
		}
		if framed+skipped != int64(len(d)) {
			t.Fatalf("seed %d: framed %d + skipped %d != %d", seed, framed, skipped, len(d))
		}
	}
}
