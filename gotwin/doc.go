// Package gotwin is a pure-Go twin of knockwatch's XDP program (bpf/): the
// same parser, the same tracking state machine, the same counters and the
// same KNOCK/HANDSHAKE records, driven by packet timestamps. It lets
// `knockwatch replay` run unprivileged, and a differential test
// (differential_test.go, FuzzDifferential) holds it equal to the real
// program run with BPF_PROG_RUN in replay mode.
//
// What is the same, by construction:
//   - configuration: a sensor.Config; table sizes are rounded up to powers of
//     two exactly as the loader does, and HashSeed keys the same hash
//     functions (kw_hash_pair, kw_hash_port, little-endian word loads as on
//     bpfel), so direct-mapped collisions and slot takeovers happen for the
//     same packets. A zero HashSeed picks a random odd seed, as at load.
//   - every branch of bpf/knockwatch.c and bpf/include/*.h, in the same
//     order, including the quirks (see the comments that cite the C);
//   - the global gates any_flagged and watch_until, which decide whether a
//     SYN-ACK consults the watch table and whether a plain ACK is looked at;
//   - the ring buffer's capacity: a record that would not fit beside the
//     undrained ones is lost and counted as ringbuf_full, with the kernel's
//     accounting (8-byte header, 8-byte alignment). Records drains it.
//   - the counters, by sensor.CounterNames.
//
// What differs:
//   - LRU maps (candidates, flagged, watch). The twin keeps an exact LRU
//     order (lookups and updates make an entry most recent, eviction takes
//     the least recent) and evicts only when a table holds its configured
//     number of entries. The kernel's LRU is approximate: lookups only set
//     a reference bit, eviction scans inactive/active lists in batches, and
//     with per-CPU free lists (candidates uses BPF_F_NO_COMMON_LRU) a CPU
//     can evict before the map is full. So under eviction pressure the two
//     may evict different pairs; the differential test sizes the LRU maps
//     so nothing is evicted. Evictions() reports how often the twin evicted.
//   - While no watched handshake waits for its ACK, the twin skips the
//     watch lookup of a plain ACK (the program looks up and finds nothing
//     it can use); records and counters are the same, only LRU recency
//     differs, which matters only under eviction.
//   - Concurrency: the twin is single-threaded (one replay stream); the
//     program's spin locks have no counterpart.
//   - A frame shorter than an Ethernet header: BPF_PROG_RUN refuses it
//     (EINVAL) before the program runs; the twin counts it as packets and
//     truncated. Callers that need both engines equal skip such frames.
package gotwin
