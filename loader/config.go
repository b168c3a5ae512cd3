package loader

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

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
	k := knockwatchKwConfig{
		WindowNs:           uint64(c.Window),
		S0TimeoutNs:        uint64(c.S0Timeout),
		HandshakeTimeoutNs: uint64(c.HandshakeTimeout),
		PortRefreshNs:      uint64(c.PortRefresh),
		MinPorts:           uint32(c.MinPorts),
		HashSeed:           seed,
		PairSlotsMask:      sensor.RoundPow2(c.PairSlots) - 1,
		PortSlotsMask:      sensor.RoundPow2(c.PortSlots) - 1,
	}
	if c.Replay {
		k.Replay = 1
	}
	if c.Pass {
		k.Pass = 1
	}
	if c.CoarseClock {
		k.CoarseClock = 1
	}
	return k, nil
}
