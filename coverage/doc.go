// Package coverage tells the operator which hosts knockwatch can actually
// protect, and measures what the rule otherwise assumes: the hosts'
// clocks. It is pure Go; the pipeline feeds it what the sensor reported
// and what the Windows events said, the daemon (or a replay) ticks it and
// gives it a way to ask the XDP program for samples, and /v1/coverage,
// `knockwatch coverage` and `knockwatch replay --coverage` print its
// Report. docs/COVERAGE.md explains every finding and its fix.
//
// # Host clocks
//
// Hosts that audit inbound connections (Security 5156, Sysmon 3 with
// Initiated=false) log connections the sensor also sees. A Tracker asks
// the program for a calibration sample of such a host now and then (the
// next handshake completed to it, whoever made it: Sampler.RequestSample),
// matches each handshake it gets (samples and flagged sources' handshakes
// alike) with the host's connection event on the 4-tuple, and keeps the
// difference of the two times: host time minus sensor time. A host's
// offset is the median of its samples' per-peer medians over the last
// hours, valid once enough peers agree with it; the pipeline passes it to
// the correlation engine (correlate.Engine.SetHostClock), which corrects
// the host's change times.
//
// What someone who wants to shift a host's clock (to push its firewall
// change out of the knock's window) can do, and what holds:
//   - forge connection events for connections that never happened: a
//     sample needs the sensor to have seen the handshake, so they never
//     match (they wait, bounded, and are counted unmatched);
//   - make connections and forge their events with shifted times: the
//     host's real event of the same connection conflicts with the forged
//     one and both are discarded (counted); without the real one, each
//     peer address is one vote and the median needs a majority of peers
//     agreeing within a second, so one attacker address cannot move it;
//   - claim a huge offset: offsets beyond max_offset are refused (counted)
//     and reported; the engine refuses them too;
//   - claim another host's address: a match whose address the inventory
//     gives to another computer is refused (counted).
//
// The engine evaluates a change at its own time as well as at the
// corrected one, so a wrong measurement can add a match but never hide one
// the uncorrected rule finds.
//
// # Blind spots
//
// Host side: hosts taking traffic (the sensor reported handshakes or
// knocks to them, or answered a sample) that never sent an event; hosts
// whose channels went quiet while traffic continued; hosts without
// connection events (clock unverified); the event lag per host
// (arrival minus event time on the sensor's clock), which tells a Windows
// Event Forwarding subscription in Normal mode (15-minute batches) from
// Minimize Latency.
//
// Network side: the sensor's counters over a sliding window. SYNs almost
// never answered (no SYN-ACK, no RST) while SYNs flow is a capture missing
// the server-to-client direction; answers without their SYNs the reverse.
// Per capture interface the same from the interface's own SYN and answer
// counts when the program keeps them, otherwise from the seconds in which
// only that interface carried TCP. Per host: SYNs to it that are only ever
// S0 in knocks, with no answer seen. On such a path every connection looks
// like an S0 touch, so the pipeline holds knocks of unanswered touches to
// a blind path (bounded) instead of flooding the engine with them, and
// lets them through as soon as the path shows an answer (the handshake of
// the knocker itself, seen with its SYN-ACK, is one): a blind verdict an
// attacker provokes costs them nothing they need.
package coverage
