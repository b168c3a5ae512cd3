// Package intake receives forwarded Windows events over the transports SOC
// deployments use and hands each received unit, as a Message, to a Handler.
// It does not parse events: the decoders in package winevents do, behind a
// Handler (this package does not import winevents). In knockwatch that
// Handler is pipeline.Pipeline, which decodes each payload and feeds the
// correlation engine; a minimal one looks like this:
//
//	h := intake.HandlerFunc(func(ctx context.Context, m intake.Message) intake.Result {
//		changes, res := decoder.Decode(m.Payload) // *winevents.Decoder
//		for _, c := range changes {
//			use(c)
//		}
//		return intake.Result{Accepted: len(changes), Rejected: res.Rejected, Err: res.Err}
//	})
//
// # Transports
//
// HTTP(S) — NewHTTPServer. POST /v1/events with a body of Event XML, JSON
// lines or a JSON array, passed on as one Message. Content-Encoding gzip is
// accepted. Answers: 202 {"accepted":N,"rejected":M}; 400 for an empty,
// corrupt-gzip or unreadable body (Result.Err); 401 without the bearer token
// (and the connection closed); 413 over MaxBodyBytes (default 10 MiB), which applies both on the wire and
// after decompression, so a gzip bomb gets 413 after reading at most the
// limit; 415 for other encodings; 429 with Retry-After when the handler
// returns ErrBusy or the memory budget stays exhausted; 503 when the
// authenticated connection limit is reached, and 503 with Retry-After when
// the handler could not make the events durable (ErrNotDurable, or its Sync
// failed); 405 and 404 for other methods and paths. Slow clients are
// cut by ReadHeaderTimeout (10 s) and ReadTimeout (60 s).
//
// Syslog — NewSyslogUDP and NewSyslogTCP (TLS when SyslogConfig.TLS is set,
// RFC 5425). Messages are RFC 5424 or RFC 3164 (ParseSyslog); the MSG part,
// without a leading UTF-8 BOM, is the Message payload and the header goes into
// Message.Meta (hostname, appname, procid, msgid, timestamp, facility,
// severity, syslog_format). In RFC 3164 the TAG may end with ':' or, as RFC
// 3164 §4.1.3 allows and rsyslog's default forwarding templates send it, with
// a space ("winevt <Event ...", "winevt[42] {...}"). A frame with no <PRI> header that starts like a
// JSON or XML event is taken as is (NXLog om_tcp without xm_syslog). UDP
// carries one message per datagram. On TCP and TLS the framing is detected
// per frame (RFC 6587): a frame starting with a non-zero digit followed by
// digits and a space is octet-counted ("LEN SP MSG", the only framing that
// carries multi-line XML intact); any other frame ends at LF or NUL, with a
// CR before the LF dropped. A message over MaxMessageBytes (default 256 KiB)
// is skipped and counted, and the stream stays in sync. A frame must complete
// within IdleTimeout (default 5 min).
//
// Beats — NewBeatsServer, Lumberjack v2 as Winlogbeat's output.logstash
// speaks it, TLS optional, served by this package (not go-lumber's server,
// which trusts the sizes in frame headers and holds two whole windows per
// connection). Each event's JSON is one Message (its bytes as sent, not
// re-encoded). Events are acknowledged only after they went through the
// handler, so the forwarder gets at-least-once delivery: while the handler
// returns ErrBusy the ACK is withheld (keepalive ACKs repeating the last one
// keep the client waiting) and nothing more is read from that connection;
// on Close unacknowledged events are resent by the clients. A window is read
// event by event, compressed frames inflated as a stream, and every
// announced size checked before anything is read: MaxEventBytes per event
// (default 1 MiB; a larger event is skipped, counted too_large and
// acknowledged so it is not resent forever). The events go to the handler in
// chunks — at the window's end, at MaxBatchEvents events (default 16384), at
// MaxBatchBytes bytes (default 64 MiB), or when the memory budget cannot take
// the next event — each acknowledged by a partial ACK carrying the sequence
// number of its last event, so a window of any size is taken without
// holding more than one chunk (a window larger than MaxBatchEvents is not
// refused: a refused window is resent forever).
//
// Durability — a Handler that implements Syncer (the pipeline, whose
// evidence log fsyncs in batches) may return from Handle before what it
// took is durable. HTTP calls Sync before its 202, Beats before each (partial)
// ACK, the file follower before it saves a position; when Sync fails the
// acknowledgement is withheld (503, no ACK, position not saved) and counted
// not_durable, so the sender keeps the events and offers them again.
//
// Files — NewFileFollower follows files, directories or globs of JSON lines or
// Event XML (OpenWEC's Files output, NXLog om_file), polling every
// PollInterval (default 1 s). The format is decided by the first non-blank
// byte ('<': XML, records end at </Event>; else one record per line). Only
// complete records are delivered: a partial last line waits for its newline.
// Files are tracked by device and inode, so a rename keeps its position (point
// the follower at the directory, or a glob matching rotated names, to read
// the tail of a file rotated while stopped); a rotated-away file is read to
// its end and closed once it stopped growing. A file that shrank, or whose
// first KiB changed (copytruncate, rewrite), is read again from the start.
// Positions (inode, offset of the end of the last record the handler took,
// fingerprint of the first KiB) are kept in StatePath, written atomically
// (temporary file, fsync, rename). Records over MaxRecordBytes (default
// 10 MiB) are skipped and counted.
//
// # Authentication
//
// A listener bound to a non-loopback address must authenticate its peers:
// HTTP with a bearer token (compared in constant time over SHA-256 digests,
// never logged; read it with ReadTokenFile; HTTPConfig.Tokens adds named
// tokens, whose name a request carries in Meta[MetaTokenName]) or mTLS;
// syslog-TLS and Beats with mTLS (a tls.Config whose ClientAuth is
// RequireAndVerifyClientCert with ClientCAs, see ServerTLSConfig). UDP and
// plain TCP syslog cannot authenticate and are allowed on loopback only.
// Otherwise the constructor returns an error wrapping ErrUnauthenticated,
// unless Config.Insecure is set. A verified client certificate's subject is
// passed in Meta (client_cert_subject).
//
// Peers that have not authenticated yet (TLS handshake not done, no request
// with a valid token yet) are kept in a pool of their own (PreAuthConfig:
// 64 per listener, 8 per source address, 10 s to authenticate), so they
// cannot take the MaxConns slots of authenticated forwarders; a full pool
// gives the slot of the oldest connection of the address that holds the
// most to an address that holds fewer. An HTTP 401 closes the connection.
//
// # Memory
//
// One MemoryBudget, shared by every listener, bounds the event bytes held
// at once: taken before a Beats event is read (or inflated) or an HTTP body
// is read (or decompressed), released once the handler is done with it. A
// Beats connection that finds it exhausted hands on what it holds and
// waits; an HTTP request waits up to BudgetWait and is then answered 429.
//
// # Limits and counters
//
// Every network listener caps open connections (MaxConns; a connection over
// the cap is closed at once and counted) and bounds message size and read
// time. Stats returns a snapshot per transport: connections, messages,
// bytes, events accepted and rejected by the handler, and Dropped by reason
// (too_large, unauthorized, bad_frame, bad_syslog, bad_request, unreadable,
// busy, read_timeout, too_many_conns, tls_handshake, truncated, io,
// too_many_files, preauth_limit, preauth_timeout, preauth_evicted,
// memory_budget). Nothing is dropped without a counter.
//
// # Backpressure
//
// A Handler returns Result{Err: ErrBusy} (or an error wrapping it) when it
// cannot take a message now. HTTP answers 429; Beats withholds the ACK; TCP
// and TLS syslog and files retry the same message with a growing pause (up
// to 500 ms) and read nothing more meanwhile, so the sender's TCP window
// fills; UDP cannot push back and drops the datagram (counted busy).
package intake
