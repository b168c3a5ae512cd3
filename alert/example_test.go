package alert_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/knockwatch/knockwatch/alert"
)

// A sensor writes every alert to a file and to a webhook; the webhook spools
// to disk so a receiver outage loses nothing.
func Example() {
	file, err := alert.NewWriter(alert.WriterConfig{Path: "/var/log/knockwatch/alerts.jsonl"})
	if err != nil {
		log.Fatal(err)
	}
	hook, err := alert.NewWebhook(alert.WebhookConfig{
		URL:         "https://siem.example.net/ingest/knockwatch",
		BearerToken: "…",
		CAFile:      "/etc/knockwatch/siem-ca.pem",
		SpoolDir:    "/var/lib/knockwatch/spool",
		// Defaults: 1 GiB spool, batches of 100, 10 s per request,
		// backoff 0.5 s doubling to 30 s with jitter.
		RequestTimeout: 5 * time.Second,
	})
	if err != nil {
		file.Close()
		log.Fatal(err)
	}
	sink := alert.NewFanout(file, hook)
	defer sink.Close()

	err = sink.Write(context.Background(), []alert.Record{{
		ID:     "5f0c…",
		Action: "created",
		JSON:   []byte(`{"@timestamp":"2026-11-27T17:00:00Z","event":{"kind":"alert","id":"5f0c…","action":"created"},"rule":{"id":"AN0842"}}`),
	}})
	if errors.Is(err, alert.ErrSpoolFull) {
		log.Print("webhook spool full; the alert is in the file only: ", err)
	}
	for _, st := range alert.StatsOf(sink) {
		log.Printf("%s: written %d delivered %d spooled %d", st.Name, st.Written, st.Delivered, st.SpooledRecords)
	}
}
