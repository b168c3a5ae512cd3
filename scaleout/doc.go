// Package scaleout is knockwatch on Kafka: many taps and many event
// collectors feeding correlators through topics (docs/SCALE-OUT.md).
//
// One binary runs in roles (`knockwatch run --role`): a sensor publishes
// its KNOCK and HANDSHAKE records as evidence and its flags; an intake
// publishes the exposure changes its listeners and the forwarders' own raw
// topics deliver; a correlator owns partitions of the evidence topic and
// runs the AN0842 engine on them, writing alerts to the alert topic.
//
//	sensor A ─┐  evidence (key: destination host) ┌─► correlator 1 ─┐
//	sensor B ─┼──────────────────────────────────►├─► correlator 2 ─┼─► alerts
//	intake ───┘                                   └─► correlator 3 ─┘  (transactions)
//	   ▲ raw topics (Winlogbeat, NXLog, OpenWEC)
//	sensor A ◄──── flags ────► sensor B (each inserts the others' flags into
//	                                     its XDP program: SetRemoteFlag)
//
// The pieces:
//
//   - Evidence is the pipeline's evidence log on a topic: Append produces
//     each item keyed by its destination host (an exposure change once per
//     address it resolves to, to every partition when it resolves to
//     none), Sync waits for the brokers' acknowledgements, and Busy tells
//     the listeners to refuse events (HTTP 429, no Beats ACK) while the
//     brokers do not answer.
//   - Producer.PublishFlag publishes a sensor's flags; a FlagSubscriber
//     applies the other sensors' through a RemoteFlags table that keeps
//     the program's flags_in within its size and, when full, gives up the
//     flag that expires first (a flood must outnumber the table within a
//     flag's lifetime to evict one).
//   - Correlator is a consumer group with one engine per partition. On a
//     partition's first records it rebuilds the engine from the records of
//     the last retention before them (found by timestamp) without emitting,
//     then goes live; alerts and the consumed offsets are committed in one
//     Kafka transaction (GroupTransactSession), so a crash or a rebalance
//     neither loses nor duplicates an alert.
//   - RawIntake consumes the forwarders' raw topics into an intake.Handler
//     and commits only what the handler took and made durable.
//
// Records of knockwatch's own topics carry the item encoding of package
// evidence (versioned, bounded decoders) and, with a record key file, an
// HMAC-SHA256 over topic, key, value and producing node: a producer
// without the key (a forwarder with write access to a topic, a mistaken
// ACL) cannot forge evidence, flags or alerts.
package scaleout
