// Package replay runs recorded evidence through knockwatch: packet captures
// (pcap or pcapng, plain or gzip, any link type a tap produces) merged by
// timestamp and streamed packet by packet through a tracking engine — the
// real XDP program with BPF_PROG_RUN in replay mode (EngineXDP) or its pure
// Go twin (EngineGo, package gotwin) — and exported Windows event files,
// whose records go with the engine's KNOCK and HANDSHAKE records into the
// correlation engine through pipeline.
//
// Captures are never loaded whole: each is read through a small buffer and
// a heap holds one packet per capture. Pending SYNs are swept on capture
// time, once per capture-second, and once more after the last packet (as a
// live sensor's sweep would find them later), so captures end with their
// S0 touches counted.
//
// Both engines see exactly the same frames: link types other than Ethernet
// get a synthesized Ethernet header, frames shorter than an Ethernet header
// are counted and skipped (BPF_PROG_RUN refuses them), and frames longer
// than MaxFrame are cut to it (headers are all the engines read; the
// program's byte counter then counts the cut length).
package replay
