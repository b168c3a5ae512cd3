package loader

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/knockwatch/knockwatch/sensor"
)

// bpfConfig converts c to the C struct kw_config.
func bpfConfig(c sensor.Config) (knockwatchKwConfig, error) {
	seed := c.HashSeed
	if seed == 0 {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return knockwatchKwConfig{}, fmt.Errorf("read random hash seed: %w", err)
		}
		seed = binary.LittleEndian.Uint32(b[:]) | 1
	}
	t := c.Tables()
	k := knockwatchKwConfig{
		WindowNs:           uint64(c.Window),
		S0TimeoutNs:        uint64(c.S0Timeout),
		HandshakeTimeoutNs: uint64(c.HandshakeTimeout),
		PortRefreshNs:      uint64(c.PortRefresh),
		FlagTtlNs:          uint64(c.FlagTTL),
		AnswerSkewNs:       uint64(c.AnswerSkew),
		WindowUs:           uint32(c.Window / time.Microsecond),
		S0TimeoutUs:        uint32(c.S0Timeout / time.Microsecond),
		AnswerSkewUs:       uint32(c.AnswerSkew / time.Microsecond),
		FlagTtlMs:          uint32(c.FlagTTL / time.Millisecond),
		MinPorts:           uint32(c.MinPorts),
		HashSeed:           seed,
		PairMask:           t.PairBuckets - 1,
		CandMask:           t.CandBuckets - 1,
		PortMask:           t.PortSlots - 1,
		WatchMask:          t.Watches - 1,
	}
	flags := []struct {
		on  bool
		dst *uint8
	}{{c.Replay, &k.Replay}, {c.Pass, &k.Pass}, {c.CoarseClock, &k.CoarseClock}, {c.ReportTouches, &k.ReportTouches},
		{c.AckProof, &k.AckProof}, {c.VerifyChecksums, &k.VerifyCsum}}
	for _, f := range flags {
		if f.on {
			*f.dst = 1
		}
	}
	return k, nil
}
