// Package sensor is the vocabulary of knockwatch's XDP sensor, in pure Go:
// the records it reports (Knock, Handshake and their Touches), its
// load-time configuration (Config), the names of its counters and the
// attach modes and verdicts. It imports neither cilium/ebpf nor netlink, so
// everything that only needs to name a record or a setting — the Go twin
// (gotwin), replay, the pipeline, the configuration and the metrics — can
// do so without the kernel side.
//
// The kernel side lives in package loader: it loads bpf/knockwatch.c with
// a Config, attaches it, decodes the ring buffer into these records and
// reads the counters named here. gotwin produces the same records from
// the same Config in pure Go.
package sensor
