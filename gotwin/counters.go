package gotwin

import "github.com/knockwatch/knockwatch/sensor"

// Counter indices, in the order of enum kw_counter (bpf/include/counters.h)
// and sensor.CounterNames (TestTwinCounterNames holds the three equal).
const (
	cPackets = iota
	cBytes
	cNonIP
	cNonTCP
	cTruncated
	cFragment
	cUnknownExt
	cBadHeader
	cTCP
	cSYN
	cSYNACK
	cRST
	cBadFlags
	cSYNRetrans
	cTouchREJ
	cTouchS0
	cBackscatter
	cSYNACKUnmatched
	cPortOpen
	cPendingEvicted
	cSlotTakeover
	cCandidates
	cFlags
	cHandshakes
	cHandshakeBadAck
	cHandshakeRepeat
	cWatchStarted
	cAllowlisted
	cRingbufFull
	cMapInsertFail
	cPortSlotTakeover
	cNoMeta
	cIPv4
	cIPv6
	cVLAN
	cBadCsum
	cTouchRSTOS0
	cAnswerEarly
	cAckProof
	cPairFull
	cCandEvicted
	cMarkEvicted
	cKnockDeferred
	cReportedOverflow
	cWatchLost
	cAttempted
	cRemoteFlag
	cSamples
	cSynDstNew
	cSynDstFull
	numCounters
)

// Counters returns the counters by name, like (*loader.Sensor).Counters.
func (t *Twin) Counters() sensor.Counters {
	out := make(sensor.Counters, len(sensor.CounterNames))
	for i, name := range sensor.CounterNames {
		if i < numCounters {
			out[name] = t.c[i]
		}
	}
	return out
}
