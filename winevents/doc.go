// Package winevents turns forwarded Windows events into exposure changes:
// normalized evidence that a Windows host's exposure changed (a firewall
// rule added, enabled, modified or deleted, a socket listening, the
// firewall disabled, a service installed or started) or, as host-side
// evidence, that a peer connected to it. It is the second leg of the
// AN0842 port-knocking analytic; the transports that receive the events
// live in winevents/intake, the correlation in correlate.
//
// # API
//
// NewDecoder(Options) returns a Decoder, safe for concurrent use.
// Decoder.Decode(payload) decodes one transport message in any supported
// format and returns its changes and a Result (Read, Relevant, Skipped,
// Duplicates, Rejected with reasons, Emitted; Err when the payload as a
// whole is unreadable: empty, neither XML nor JSON, or no record in it
// decodable). Decoder.DecodeReader(r, emit) reads a file without loading
// it whole. Decoder.Stats() returns cumulative counters by format, by
// rejection reason and for every cap (plain values; the cmd layer exports
// them). ExposureChange.Opens tells whether a change makes ports
// reachable.
//
// # Formats (detected from content)
//
//   - Event XML: one <Event> as forwarded by WEF, with or without
//     RenderingInfo; several concatenated without a root as
//     `wevtutil qe /f:xml` prints them; or wrapped in <Events>, with or
//     without an XML declaration. TimeCreated/@SystemTime in ISO-8601 with
//     Z, or "YYYY-MM-DD hh:mm:ss.ffffff" (read as UTC) as python-evtx and
//     some exporters write it. Host: System/Computer.
//   - Winlogbeat ECS JSON (7.x/8.x): winlog.event_id (number or string),
//     winlog.channel, winlog.computer_name, winlog.record_id,
//     winlog.event_data.*, @timestamp (the event time). host.ip is taken as
//     the host's addresses only when host.name names the same computer: in
//     WEF setups host.* is the collector.
//   - Winlogbeat 6.x JSON: event_id, log_name, computer_name,
//     record_number, event_data.*, @timestamp.
//   - NXLog im_msvistalog JSON and similar flat exports: EventID, Channel,
//     Hostname, RecordNumber, event data as top-level members. EventTime
//     (or a TimeCreated without zone) is the host's local time with no zone
//     and one-second resolution: the zone comes from Options.Zones by host
//     name or host-group glob ("*.branch.example"), else
//     Options.DefaultZone, else UTC. In a zone with daylight saving time the
//     repeated hour at the fall-back is read as its first occurrence.
//
// Payloads may hold one event, JSON lines, concatenated or pretty-printed
// JSON objects, or a JSON array. The host of an event is always <Computer>,
// winlog.computer_name, computer_name or NXLog Hostname, never host.name,
// beat.hostname or host, which name the collector.
//
// # Cost and limits
//
// A record's channel and event ID are read first (a byte scan of the
// System block for XML, one allocation-free validating pass for JSON);
// unrelated records and outbound 5156 are counted as skipped without a
// full parse. Relevant XML events are read by a small scanner that accepts
// only plain Event XML and otherwise falls back to encoding/xml in strict
// mode; a DTD or entity declaration refuses the payload (nothing is ever
// expanded), nesting is capped at 16 levels, an event at
// Options.MaxEventBytes (1 MiB), a payload at Options.MaxPayloadBytes
// (64 MiB), JSON nesting at 64. Bad input is rejected with a Reason and
// counted; it never panics.
//
// # Supported events and the fields used
//
// Firewall channel (Microsoft-Windows-Windows Firewall With Advanced
// Security/Firewall):
//   - 2004, 2071, 2097 rule added -> rule_added; 2005, 2073, 2099 rule
//     modified (carrying the new values) -> rule_modified, or rule_enabled
//     when the rule was last seen inactive (added with Active=0, then
//     enabled: the port opens at the enable). Fields: RuleId, RuleName,
//     Direction (1 in, 2 out), Protocol (6 TCP, 17 UDP, 256 any),
//     LocalPorts ("22", "80,443", "5000-5010", "*", empty = any, keywords:
//     RPC = 49152-65535, RPC-EPMap = 135, IPHTTPS(In/Out) = 443, mDNS =
//     5353, others such as Teredo or Ply2Disc kept as unresolved),
//     Action (3 allow, 2 block), Active, Profiles, ApplicationPath,
//     ServiceName, ModifyingUser, ModifyingApplication, EmbeddedContext.
//   - 2006, 2052 rule deleted -> rule_deleted (RuleId, RuleName,
//     ModifyingUser, ModifyingApplication; ports from the rule's last known
//     state). 2033, 2059 all rules deleted -> rule_deleted, any port.
//   - 2003, 2082 setting changed (Profiles, SettingType, SettingValueString
//     / SettingValueDisplay / SettingValue): "Enable Windows (Defender)
//     Firewall" (or type 1) = No/0/false/off, or the default inbound action
//     set to Allow -> firewall_disabled, every port.
//
// Security:
//   - 4946 rule added, 4947 modified, 4948 deleted (RuleId, RuleName,
//     ProfileChanged): no port. Joined to the Firewall-channel event of the
//     same RuleId and operation (then the Security record adds nothing and
//     is counted as Stats.Redundant, in either arrival order: see
//     Replaces below) or to the 5447 filters whose FilterName equals
//     RuleName (ports, protocol, action, direction).
//   - 4950 setting changed (ProfileChanged, SettingType, SettingValue):
//     "Enable Windows Firewall" = No or "Default Inbound Action" = Allow ->
//     firewall_disabled.
//   - 5447 WFP filter changed (FilterName, FilterId, ChangeType %%16384
//     add / %%16385 delete, Action %%16390 permit / %%16389 block,
//     LayerName, Conditions: FWPM_CONDITION_IP_LOCAL_PORT
//     {0c1ba1af-5765-453f-af22-a8f791ac775b} holds the port in hex, e.g.
//     0x01c2 = 450, or a range; FWPM_CONDITION_IP_PROTOCOL
//     {3971ef2b-623e-4f9a-8cb1-6e79b806b9a7} the protocol). Never emits on
//     its own: it gives 4946/4947/4948 their ports and 5154/5158 their rule.
//     A permit or block filter on an inbound ALE layer without a port
//     condition (a program rule) stands for every port; the ALE listen
//     layers mean TCP.
//   - 5154 listen permitted and 5158 bind permitted (Application,
//     ProcessId, SourceAddress, SourcePort = the local port, Protocol,
//     FilterRTID = the 5447 FilterId of the rule that allowed it, LayerName)
//     -> listener. http.sys listeners show Application "System". A TCP
//     socket that is only bound does not open (Opens is false until its
//     5154); a bound UDP socket does.
//   - 5156 connection permitted, inbound only (Direction %%14592; outbound
//     %%14593 is skipped): SourceAddress, SourcePort, DestAddress,
//     DestPort, Protocol, Application, ProcessID, FilterRTID -> connection.
//
// System: 7045 service installed (ServiceName, ImagePath, StartType,
// AccountName) and 7036 service entered the running state (param1 name,
// param2 "running"; other states ignored) -> service, weak evidence without
// a port.
//
// Sysmon (Microsoft-Windows-Sysmon/Operational): 3 network connection with
// Initiated=false (SourceIp, SourcePort, DestinationIp, DestinationPort,
// Protocol, Image, ProcessId) -> connection.
//
// Connections: Windows versions differ in which of Source/Dest is local in
// 5156, and Sysmon versions in which is local for Initiated=false, so the
// local side is decided by the host's addresses (host.ip when trustworthy,
// the addresses of its listeners and of connections decided by those),
// then by a port the host listens on (5154), then for Sysmon by the side
// whose SourceHostname/DestinationHostname names the computer, then by the
// dynamic port range (the peer uses a port >= 49152), then for Sysmon by
// Initiated=false (the destination is local). LocalSideBy says which;
// "unknown" keeps the fields as written (destination as local). Only the
// first two teach the host's addresses: names (PTR records), port ranges
// and Sysmon's orientation can be wrong, and a wrong address would file
// the host's changes under a peer's address.
//
// # When changes are emitted (joins in event time, either arrival order)
//
// Every relevant record is emitted as soon as it is decoded with what it
// carries. When the partner of a join arrives later, the change is emitted
// again, enriched, with the same Source (the record it describes) and
// Joined naming the partner; consumers key changes by Source and keep the
// latest, and drop the change a later one names in Replaces. Joins need the two records within Options.JoinWindow (30 s) of
// each other in event time.
//   - 4946 then its 5447s: a rule_added without ports, then the same change
//     with the ports. 5447 then 4946: one rule_added with ports. Filters
//     are grouped in batches (20 ms); a rule joins the batch nearest in
//     event time, so two rules of one name (the TCP and UDP rules of an
//     "allow python.exe") get their own protocol.
//   - 5447 then 5154/5158 with FilterRTID = FilterId: the listener names
//     the rule. Listener first: emitted at once, then again with the rule.
//   - 2004 (Active=0) then 2005 (Active=1): rule_added (not opening), then
//     rule_enabled at the 2005's time. 2005 first: rule_modified (opening),
//     then, when the older 2004 arrives, rule_added and the same 2005 change
//     again as rule_enabled. An older record never overwrites the state
//     left by a newer one.
//   - 2006/2052 and 4948 take the ports of the rule they delete.
//   - Firewall 2004/2005/2006 (and their newer ids) and Security
//     4946/4947/4948 of the same RuleId and operation within JoinWindow are
//     one change, whichever WEF delivers first (it does not order records
//     across channels). Firewall first: the Security record is redundant
//     and not emitted. Security first: it is emitted at once (port-less),
//     and the Firewall record's change then carries Replaces naming it;
//     consumers drop the replaced change, and a 5447 arriving after that
//     no longer re-emits it. Either way the Firewall record's change is
//     the one that remains, and Stats.Redundant counts one.
//
// # Telling Windows' own churn from an operator or an attacker
//
// At logon Windows rewrites the firewall rules of AppX packages through
// svchost.exe under a service SID: many inbound allow rules for any port.
// Actor ("system" for S-1-5-18/19/20 and service SIDs S-1-5-80-..., "user"
// for account SIDs), ModifyingApplication, WindowsManaged (system actor
// through svchost.exe) and AppPackageRule (EmbeddedContext "@{...}") tell
// them apart: such rules apply only inside their app container and Opens
// is false for them. netsh, PowerShell (WmiPrvSE.exe) or the MMC show a
// user SID and their own ModifyingApplication.
//
// # Duplicates and bounded state
//
// A relevant record seen again (same computer, channel and record id, in
// any format) is counted as a duplicate and not emitted; records without a
// record id cannot be recognised. The remembered keys (Options.DedupeSize,
// 65536), the hosts with join state (Options.MaxHosts, 4096) and each
// per-host join table (Options.MaxPerHost, 1024) are LRUs, and all join
// entries together are capped (Options.MaxJoinEntries, 262144) by dropping
// the least recently active hosts; a flooding host fills only its own
// tables first. Every eviction is counted in Stats, as are joins abandoned
// because too many records waited for one partner. No clock is read: all state is in event time.
package winevents
