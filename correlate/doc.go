// Package correlate is knockwatch's correlation engine: it evaluates MITRE
// ATT&CK analytic AN0842 (port knocking, T1205.001) in event time over three
// kinds of evidence — knocks and first handshakes from the XDP sensor, and
// exposure changes from forwarded Windows events — and emits ECS-shaped
// alerts. It is pure Go and needs no privileges.
//
// # The rule
//
// With the defaults (every value is a Config field), the engine alerts for
// source S, Windows host D and port P when:
//
//  1. S touched at least 3 distinct closed TCP ports on D (SYN answered by
//     RST, or never answered) within 30 s — the knock — and no more than 16:
//     a source touching more is scanning, which is counted, never alerted;
//  2. an exposure change on D that opens P inbound — an allow rule for
//     inbound TCP (or any protocol) that is added active, enabled, or
//     modified to active; a listener on P; or the firewall switched off —
//     happened at most 60 s after the knock's last touch, or up to 5 s
//     before it, because host and sensor clocks differ (Config.Skew);
//  3. S then completed its first handshake to D:P at most 300 s after the
//     change (again tolerating Skew before it).
//
// The alert is "high" when all three hold and the change names P: exactly,
// in a list, in a range, as any port ("*"), or by switching the firewall
// off. It is "medium" when the change carries no port (a 4946 that only
// names the rule), or when there is no matching host event (yet) but the
// network itself shows P went from closed to open: the sensor saw D:P
// closed within the retention period and not open since. The medium alert
// is emitted at once; when the host event arrives later a second record
// with the same event.id and event.action "upgraded" follows.
//
// There is never an alert when the sensor saw D:P open before the knock and
// not closed since (open all along), when anyone was seen connecting to
// D:P after the knock and before S (someone else was first: a successful
// connection means the port was already open, so whatever opened it did so
// before S came; comparing sensor times only, this needs no clock
// tolerance), for changes
// that are outbound-only, block rules, inactive, deletions, not TCP, or on
// another host, for scanners, or without all of the knock and the
// handshake. Matches covered by the analyst's suppressions (allowed source
// prefixes, approved change windows per host or host group, known
// administrative users and applications) are counted by reason and, with
// Config.EmitSuppressed, emitted with knockwatch.suppressed true and the
// reason in event.reason.
//
// # Event time
//
// Every arrival is evaluated at once against everything retained, so the
// pieces may arrive in any order and an alert fires whichever comes last.
// Duplicates (the same knock touches, the same handshake, the same Windows
// record by host, channel and record id with the same content) change
// nothing; a record given again with more in it (a join completed later:
// everything the stored version said, and more) replaces its stored
// version, while one that contradicts it (a forgery claiming its id) is
// kept beside it, so a record id can never be used to erase evidence; a
// change naming another record of its host and rule in Replaces (a
// Firewall-channel record superseding the Security 4946 of the same rule
// change) drops that one, which stays dropped if it arrives again (before
// or after its replacement, re-sent, or after a restart); and a handshake's outcome only ever improves,
// so its final outcome (confidence, suppressed or not) does not depend on
// arrival order. Alert ids hash (S, D, P, ACK time), so a re-run over the
// same evidence yields the same ids.
//
// The watermark is the newest sensor event time seen (knock touches,
// handshake ACKs, or Engine.Advance for a live clock) minus
// Config.SensorLateness. Windows event times never move it: host clocks
// are not trusted and forwarded events are late by design. Evidence is kept
// while it is newer than watermark - Config.Retention (default 20 minutes,
// above Windows Event Forwarding's 15-minute batching); a pair lives as long
// as its newest evidence. Evidence that arrives later than that is still
// evaluated against what is retained, counted as late, and expires at the
// next sweep. A sensor timestamp far in the future moves the watermark
// with it and expires everything older: the sensor's clock is the
// reference, so keep it right (and pass Advance only that clock).
//
// # Bounded state
//
// State is keyed by destination address: every pair belongs to its
// destination host, which holds the host's changes and the pairs with
// handshakes that a change can complete; the pair table is keyed by a
// hash of (destination, source). Nothing joins across hosts, so the
// engine can be partitioned by host. Tracked pairs,
// pending changes and handshakes are capped (Config.MaxPairs, MaxChanges,
// MaxHandshakes). Pairs sit in one list per eviction class, least recently
// updated first: scanners, half knocks, knocks (or handshakes waiting for
// their knock), knocks followed by a change on their host, knocks with a
// handshake, alerted pairs. At the pair cap the front of the lowest class
// goes, in O(1), so a flood of scanners cannot push an attacker out;
// changes and handshakes at their caps are evicted in batches, those that
// cannot complete a knock first. Every cap hit, eviction and expiry is
// counted; Stats returns the sizes and every counter as plain values.
//
// # Host names
//
// Windows events name hosts; the sensor sees addresses. An Inventory (for
// example Hosts, parsed from an /etc/hosts-format file by ParseHosts) maps
// names to addresses, case-insensitively and with a short name matching its
// FQDN; the addresses a change carries are used too. Changes for unknown
// hosts are kept (within the caps) and resolved again by SetInventory.
//
// # Concurrency
//
// An Engine is safe for concurrent use by the ring-buffer reader and the
// event listeners. Alerts go to an Emitter outside the state lock, one at
// a time and in decision order, with no lock held: Emit may call back into
// the engine.
//
// # What cannot be taken back
//
// An alert record, once emitted, stays. If evidence arriving later
// explains it (an administrator's change), a record with the same
// id and event.action "upgraded" carries the new outcome — with
// knockwatch.suppressed true when suppression now applies, even if
// suppressed matches are not otherwise emitted. Evidence that makes a
// source a scanner stops all further alerts for that pair.
package correlate
