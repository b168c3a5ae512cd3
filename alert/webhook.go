package alert

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Body formats of a webhook request.
const (
	// FormatNDJSON sends one JSON object per line (Content-Type
	// application/x-ndjson). It is the default.
	FormatNDJSON = "ndjson"
	// FormatJSONArray sends a JSON array of the objects (Content-Type
	// application/json).
	FormatJSONArray = "json-array"
)

// IDsHeader is the request header that lists the records of a request, in
// body order, as comma-separated "id/action" pairs, each part
// percent-encoded (url.QueryEscape). A receiver de-duplicates on the pairs.
const IDsHeader = "X-Knockwatch-Ids"

// CountHeader is the request header with the number of records in the body.
const CountHeader = "X-Knockwatch-Count"

// Defaults of WebhookConfig.
const (
	DefaultMaxSpoolBytes      = 1 << 30
	DefaultSegmentBytes       = 64 << 20
	DefaultMaxDeadLetterBytes = 256 << 20
	DefaultBatchRecords       = 100
	DefaultBatchBytes         = 1 << 20
	DefaultRequestTimeout     = 10 * time.Second
	DefaultInitialBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff         = 30 * time.Second
	DefaultCloseTimeout       = 5 * time.Second
	// maxIDsHeaderBytes keeps IDsHeader well below the 8 KiB header limit
	// of common servers; a batch is cut when its ids would not fit.
	maxIDsHeaderBytes = 6 << 10
)

// WebhookConfig configures a Webhook. URL and SpoolDir are required; zero
// values of the other fields select the defaults above.
type WebhookConfig struct {
	// Name overrides the sink name reported in Stats ("webhook:<host>").
	Name string
	// URL receives the POST requests (http or https).
	URL string
	// Format is FormatNDJSON (default) or FormatJSONArray.
	Format string
	// BearerToken, when set, is sent as "Authorization: Bearer <token>".
	// It is never logged.
	BearerToken string
	// Headers are added to every request (e.g. an API key header).
	Headers map[string]string
	// CAFile is a PEM bundle of the CAs that verify the receiver's
	// certificate; empty uses the system roots. CertFile and KeyFile are a
	// client certificate for mutual TLS. ServerName overrides the name the
	// certificate is checked against.
	CAFile, CertFile, KeyFile, ServerName string

	// SpoolDir is the directory of the on-disk spool. One Webhook at a
	// time may use it (it is locked).
	SpoolDir string
	// MaxSpoolBytes bounds the spool files on disk; a Write that would
	// pass it is refused with ErrSpoolFull.
	MaxSpoolBytes int64
	// SegmentBytes is the size at which the spool starts a new segment
	// file (at most MaxSpoolBytes/4).
	SegmentBytes int64
	// DeadLetterPath is the file rejected records are appended to
	// (default <SpoolDir>/dead-letter.jsonl); MaxDeadLetterBytes bounds it.
	// When it is full, rejected records stay in the spool and are retried.
	DeadLetterPath     string
	MaxDeadLetterBytes int64

	// BatchRecords and BatchBytes bound one request.
	BatchRecords int
	BatchBytes   int64
	// RequestTimeout bounds one request, response included.
	RequestTimeout time.Duration
	// InitialBackoff is the wait after the first failure; it doubles after
	// every further failure up to MaxBackoff. Each wait is jittered to
	// between half and all of its value.
	InitialBackoff, MaxBackoff time.Duration
	// CloseTimeout bounds the final delivery attempt of Close.
	CloseTimeout time.Duration
	// RetryStatuses are further HTTP statuses to retry instead of
	// dead-lettering (e.g. 401 and 403 while a token is being rotated).
	// 408, 429 and 5xx are always retried.
	RetryStatuses []int

	// Logger receives the sink's logs; nil discards them.
	Logger *zap.Logger
}

// Durable is true: Write returns once the records are synced to the
// spool.
func (w *Webhook) Durable() bool { return true }

// Webhook is the HTTP sink with its on-disk spool. See the package
// documentation for its delivery guarantees.
type Webhook struct {
	cfg     WebhookConfig
	name    string
	url     string
	log     *zap.Logger
	client  *http.Client
	spool   *spool
	dead    *deadLetter
	headers http.Header
	retryOn map[int]bool

	notify chan struct{}
	stop   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
	closeErr  error
	c         counters
}

// Log field names.
const (
	fieldSink     = "sink"
	fieldURL      = "url"
	fieldStatus   = "status"
	fieldRecords  = "records"
	fieldBackoff  = "backoff"
	fieldEventID  = "event_id"
	fieldAction   = "event_action"
	fieldSpoolDir = "spool_dir"
	fieldBytes    = "bytes"
	fieldReply    = "reply"
)

// NewWebhook opens (or resumes) the spool in cfg.SpoolDir and starts the
// background sender. Records left in the spool by an earlier run are sent
// first.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL) // validated by fill
	name := cfg.Name
	if name == "" {
		name = "webhook:" + u.Host
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("alert.webhook").With(zap.String(fieldSink, name))
	client, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	w := &Webhook{
		cfg:     cfg,
		name:    name,
		url:     u.Redacted(),
		log:     log,
		client:  client,
		headers: make(http.Header),
		retryOn: map[int]bool{http.StatusRequestTimeout: true, http.StatusTooManyRequests: true},
		notify:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	for k, v := range cfg.Headers {
		w.headers.Set(k, v)
	}
	for _, s := range cfg.RetryStatuses {
		w.retryOn[s] = true
	}
	sp, notes, err := openSpool(cfg.SpoolDir, cfg.MaxSpoolBytes, cfg.SegmentBytes, &w.c)
	if err != nil {
		return nil, fmt.Errorf("open webhook spool: %w", err)
	}
	for _, n := range notes {
		log.Warn(n, zap.String(fieldSpoolDir, cfg.SpoolDir))
	}
	dl, err := openDeadLetter(cfg.DeadLetterPath, cfg.MaxDeadLetterBytes)
	if err != nil {
		sp.close()
		return nil, err
	}
	w.spool, w.dead = sp, dl
	if u.Scheme == "http" && cfg.BearerToken != "" && !isLoopback(u.Hostname()) {
		log.Warn("webhook bearer token is sent over plain http; use https", zap.String(fieldURL, w.url))
	}
	if recs, _, _ := sp.usage(); recs > 0 {
		log.Info("resuming delivery of spooled alerts", zap.Int64(fieldRecords, recs), zap.String(fieldURL, w.url))
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w, nil
}

func (cfg *WebhookConfig) fill() error {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url.Error repeats the url, which may hold credentials.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("parse webhook url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("parse webhook url %q: want an http or https url with a host", u.Redacted())
	}
	if cfg.SpoolDir == "" {
		return errors.New("configure webhook: no spool directory")
	}
	switch cfg.Format {
	case "":
		cfg.Format = FormatNDJSON
	case FormatNDJSON, FormatJSONArray:
	default:
		return fmt.Errorf("configure webhook: format %q: want %q or %q", cfg.Format, FormatNDJSON, FormatJSONArray)
	}
	if badHeaderValue(cfg.BearerToken) {
		return errors.New("configure webhook: bearer token contains control characters")
	}
	for k, v := range cfg.Headers {
		if !validHeaderName(k) || badHeaderValue(v) {
			return fmt.Errorf("configure webhook: invalid header %q", k)
		}
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return errors.New("configure webhook: a client certificate needs both a cert file and a key file")
	}
	setDefault(&cfg.MaxSpoolBytes, DefaultMaxSpoolBytes)
	setDefault(&cfg.SegmentBytes, DefaultSegmentBytes)
	cfg.SegmentBytes = max(min(cfg.SegmentBytes, cfg.MaxSpoolBytes/4), 1)
	if cfg.DeadLetterPath == "" {
		cfg.DeadLetterPath = filepath.Join(cfg.SpoolDir, "dead-letter.jsonl")
	}
	setDefault(&cfg.MaxDeadLetterBytes, DefaultMaxDeadLetterBytes)
	setDefault(&cfg.BatchRecords, DefaultBatchRecords)
	setDefault(&cfg.BatchBytes, DefaultBatchBytes)
	setDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	setDefault(&cfg.InitialBackoff, DefaultInitialBackoff)
	setDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.InitialBackoff)
	setDefault(&cfg.CloseTimeout, DefaultCloseTimeout)
	return nil
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func badHeaderValue(v string) bool {
	return strings.ContainsFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r > '~' || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}

// Write validates recs, appends the valid ones to the spool and fsyncs it
// before it returns; the sender delivers them in the background. A full
// spool refuses the whole batch with an error wrapping ErrSpoolFull.
// Invalid records are counted and reported in the error; the valid ones are
// spooled all the same.
func (w *Webhook) Write(ctx context.Context, recs []Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write alerts: %w", err)
	}
	good, nBad, badErr := validRecords(recs)
	w.c.invalid.Add(uint64(nBad))
	if len(good) == 0 {
		return badErr
	}
	if err := w.spool.append(good); err != nil {
		switch {
		case errors.Is(err, ErrSpoolFull):
			w.c.refused.Add(uint64(len(good)))
		case errors.Is(err, ErrClosed):
		default:
			w.c.errors.Add(1)
		}
		return errors.Join(fmt.Errorf("spool %d alerts for %s: %w", len(good), w.name, err), badErr)
	}
	w.c.written.Add(uint64(len(good)))
	select {
	case w.notify <- struct{}{}:
	default:
	}
	return badErr
}

// Close stops the sender after a final delivery attempt bounded by
// CloseTimeout and closes the spool; undelivered records stay on disk for
// the next Webhook on the same directory. Close is idempotent.
func (w *Webhook) Close() error {
	w.closeOnce.Do(func() {
		close(w.stop)
		t := time.AfterFunc(w.cfg.CloseTimeout, w.cancel)
		<-w.done
		t.Stop()
		w.cancel()
		w.closeErr = errors.Join(w.spool.close(), w.dead.close())
		w.client.CloseIdleConnections()
		if recs, _, _ := w.spool.usage(); recs > 0 {
			w.log.Info("alerts left in the spool for the next start", zap.Int64(fieldRecords, recs))
		}
	})
	return w.closeErr
}

// Stats returns a snapshot of the counters and the spool's size.
func (w *Webhook) Stats() Stats {
	st := w.c.snapshot(w.name, "webhook")
	recs, pending, disk := w.spool.usage()
	st.SpooledRecords = uint64(recs)
	st.SpooledBytes = uint64(pending)
	st.SpoolDiskBytes = uint64(disk)
	st.SpoolCapacityBytes = uint64(w.cfg.MaxSpoolBytes)
	return st
}
