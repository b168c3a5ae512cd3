// Package reliability holds knockwatch's cross-component reliability tests
// (issue 7): event intake under load through the real listeners, decoder,
// pipeline and correlation engine; hostile input end to end; and faults
// (forwarder disconnects, alert receiver outages). It has no exported API:
// everything is in the _test files. docs/RELIABILITY.md lists every test,
// the command that runs it and the figures of one run.
//
// Knobs (environment): KNOCKWATCH_SOAK_SECONDS (load duration per
// transport, default 5, 2 with -short), KNOCKWATCH_SOAK_RATE (offered
// events/s, default 100000), KNOCKWATCH_OUTAGE_SECONDS (webhook receiver
// outage, default 2), KNOCKWATCH_LAB_FLOOD_PACKETS (SYN flood in the lab,
// default 200000), KNOCKWATCH_STRICT (known gaps fail instead of being
// logged). The BPF, namespace and live `knockwatch run` tests need root
// (internal/testsupport/testenv) and Linux; the rest run anywhere on loopback.
package reliability
