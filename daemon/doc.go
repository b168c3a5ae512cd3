// Package daemon is `knockwatch run`: the live sensor as one lifecycle. It
// loads the XDP program and keeps it attached to the capture interfaces
// (loader), starts the event listeners (winevents/intake), the
// correlation pipeline and its alert sinks (pipeline, alert), the
// Prometheus metrics and health endpoints, and the loops that feed them
// (ring-buffer reader, S0 sweep, watermark clock, netlink re-attach).
//
// Start brings the parts up in an order that fails early and cleanly
// (files and addresses before the kernel); Stop takes them down in the
// order that loses nothing: detach first (so no program stays attached),
// then the listeners, then the pipeline's final flush. Reload applies what
// can change without losing state (suppression lists, the XDP allowlist,
// the host inventory) and reopens the alert file. Done is closed when a
// part fails after start.
//
// cmd/knockwatch is only flags, signals and output around it.
package daemon
