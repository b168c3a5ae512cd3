// Package alert delivers knockwatch alerts to where an analyst reads them:
// standard output or a file (Writer), an HTTP receiver (Webhook), or several
// of them at once (Fanout).
//
// Alerts reach this package already marshalled: a Record is one ECS JSON
// object (one line, no trailing newline) with its event.id and event.action.
// An upgrade of an alert (a medium alert completed by a late host event)
// shares the id of the alert it upgrades but has a different action, so the
// pair (ID, Action) identifies a record.
//
// # Delivery guarantees
//
// Writer appends one line per record to stdout or to a file opened with
// O_APPEND; for a file every Write call ends with an fsync, so a Write that
// returned nil survives a crash of the process or of the machine.
//
// Webhook is at-least-once with ids. Write appends the records to an on-disk
// spool and fsyncs it before it returns, so a record accepted by Write is
// never lost: not when the receiver is down, not when knockwatch restarts.
// A single background sender posts the spooled records in the order they
// were written, and advances a durably committed offset only after the
// receiver answered 2xx. A record acknowledged by a 2xx is therefore never
// sent again, across restarts too. The one window for a duplicate is a crash
// between the receiver's 2xx and the fsync of the committed offset, or a
// timeout after the receiver already processed the request; then the same
// records are sent again with the same ids. A receiver that de-duplicates on
// (id, action) — the request header X-Knockwatch-Ids lists the pairs of every
// request, and each line carries its event.id — gets every alert exactly
// once.
//
// Requests: a POST per batch (at most BatchRecords records and BatchBytes of
// JSON), by default with an NDJSON body (Content-Type application/x-ndjson,
// one object per line) or, with FormatJSONArray, a JSON array
// (application/json). Headers: X-Knockwatch-Ids (the id/action pairs in
// body order), X-Knockwatch-Count, the optional bearer token and custom
// headers.
//
// Responses: 2xx delivers the batch. 408, 429, 5xx, timeouts and connection
// errors are retried with exponential backoff and jitter (Retry-After is
// honoured up to the maximum backoff); so is a 3xx, which is logged as a
// misconfigured url (redirects are not followed). Any other 4xx is a
// rejection: a rejected batch of several records is re-sent one record at a
// time to find the rejected ones, and each rejected record is moved to the
// dead-letter file (one JSON line with the status, the receiver's answer and
// the record) and counted; it is not retried forever and never dropped
// silently. WebhookConfig.RetryStatuses turns chosen 4xx (say 401 while a
// token is rotated) into retries.
//
// The spool is bounded (WebhookConfig.MaxSpoolBytes, 1 GiB by default). When
// a Write would pass the bound, the whole Write is refused with an error
// wrapping ErrSpoolFull and the records are counted as refused: nothing is
// dropped without the caller knowing, and the caller logs or counts what it
// could not hand over. Records already in the spool are kept.
//
// The spool is a directory of segment files. Every record is one frame:
// magic, length and a CRC-32C of the payload (internal/frame, the framing
// the evidence log shares). A torn frame (a crash in the
// middle of an append) or a corrupted region is detected, skipped and
// counted (Stats.CorruptFrames, Stats.CorruptBytes); the sender resumes at
// the next valid frame. Close gives the sender a bounded final attempt to
// deliver what is spooled; what is still undelivered stays on disk and is
// sent by the next Webhook opened on the same directory.
//
// Every sink reports a Stats snapshot of plain values; the command layer
// exports them as Prometheus metrics. This package registers nothing itself.
package alert
