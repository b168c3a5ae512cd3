package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/internal/config"
)

func init() {
	commands["coverage"] = command{
		summary: "show what a running sensor can and cannot see: host clocks, blind hosts and capture paths",
		run:     runCoverage,
	}
}

// defaultMetricsAddr is where `knockwatch coverage` looks without --addr
// or --config (the address docs/CONFIG.md suggests for --metrics).
const defaultMetricsAddr = "127.0.0.1:9742"

// maxCoverageBytes bounds the report read from a sensor.
const maxCoverageBytes = 64 << 20

func runCoverage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("coverage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "the sensor's metrics listener `HOST:PORT` (knockwatch run --metrics); default: metrics.addr of --config, else "+defaultMetricsAddr)
	cfgPath := fs.String("config", "", "the sensor's configuration `FILE`, for its metrics.addr")
	format := fs.String("format", "table", "table (one screen for a person) or json (the /v1/coverage document)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: knockwatch coverage [--addr HOST:PORT | --config FILE] [--format table|json] [--timeout D]")
		fmt.Fprintln(stderr, "\nReads GET /v1/coverage from a running knockwatch run (its --metrics listener) and shows which hosts")
		fmt.Fprintln(stderr, "it can protect: their clocks, measured from connections both sides saw; hosts that take traffic but")
		fmt.Fprintln(stderr, "send no events; capture interfaces that see one direction only. Each finding says what is missing")
		fmt.Fprintln(stderr, "and how to fix it (docs/COVERAGE.md). Exit status 0 whatever the findings.")
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		fs.Usage()
		return fmt.Errorf("%w: coverage: unexpected argument %q", errUsage, fs.Arg(0))
	case *format != "table" && *format != "json":
		return fmt.Errorf("%w: coverage: --format %q is not table or json", errUsage, *format)
	case *addr != "" && *cfgPath != "":
		return fmt.Errorf("%w: coverage: give --addr or --config, not both", errUsage)
	}
	target := *addr
	if *cfgPath != "" {
		cfg, err := config.LoadFile(*cfgPath)
		if err != nil {
			return err
		}
		if cfg.Metrics.Addr == "" {
			return fmt.Errorf("coverage: %s has no metrics.addr: the sensor serves /v1/coverage on its --metrics listener", *cfgPath)
		}
		target = cfg.Metrics.Addr
	}
	if target == "" {
		target = defaultMetricsAddr
	}
	u, err := coverageURL(target)
	if err != nil {
		return fmt.Errorf("%w: coverage: %v", errUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	body, err := fetchCoverage(ctx, u)
	if err != nil {
		return err
	}
	if *format == "json" {
		_, err := stdout.Write(body)
		return err
	}
	var r coverage.Report
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("coverage: %s: not a coverage report: %w", u, err)
	}
	return coverage.WriteTable(stdout, r)
}

// coverageURL makes the report's URL of a listener address (HOST:PORT,
// or a URL when the listener is behind a proxy).
func coverageURL(addr string) (string, error) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("%q is not a URL", addr)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/coverage"
		}
		return u.String(), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q is not HOST:PORT: %v", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1" // a listener on every address answers on loopback
	}
	return "http://" + net.JoinHostPort(host, port) + "/v1/coverage", nil
}

func fetchCoverage(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("coverage: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("coverage: no sensor answers at %s (is knockwatch run started with --metrics on that address?): %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCoverageBytes+1))
	if err != nil {
		return nil, fmt.Errorf("coverage: read %s: %w", u, err)
	}
	if len(body) > maxCoverageBytes {
		return nil, fmt.Errorf("coverage: %s: report larger than %d bytes", u, maxCoverageBytes)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusNotFound:
		return nil, fmt.Errorf("coverage: %s: %s (an older knockwatch, or coverage.enabled: false)", u, strings.TrimSpace(string(firstLineOf(body))))
	}
	return nil, fmt.Errorf("coverage: %s: %s: %s", u, resp.Status, strings.TrimSpace(string(firstLineOf(body))))
}

func firstLineOf(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}
