package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/coverage"
	"github.com/knockwatch/knockwatch/internal/config"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/replay"
	"github.com/knockwatch/knockwatch/timeline"
)

func init() {
	commands["replay"] = command{
		summary: "replay packet captures and exported Windows events through the sensor and the rule",
		run:     runReplay,
	}
}

// replayList collects a repeatable string flag.
type replayList []string

func (l *replayList) String() string     { return strings.Join(*l, ",") }
func (l *replayList) Set(v string) error { *l = append(*l, v); return nil }

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var pcaps, events, allow replayList
	fs.Var(&pcaps, "pcap", "capture `FILE` (pcap or pcapng, plain or gzip; Ethernet, Linux SLL/SLL2 or raw IP); repeat to merge captures by timestamp")
	fs.Var(&events, "events", "Windows events `FILE`: Event XML (wevtutil qe /f:xml, with or without <Events>), Winlogbeat or NXLog JSON lines, plain or gzip; repeatable")
	hosts := fs.String("hosts", "", "inventory `FILE` in /etc/hosts format (address name...), as for run; default: hosts from --config")
	fs.Var(&allow, "allow-source", "source `CIDR` (or address) that is never flagged and whose alerts are suppressed; repeatable")
	cfgPath := fs.String("config", "", "configuration `FILE` (the YAML of run: sensor, rule, suppression, decoder, hosts); default: run's defaults")
	engine := fs.String("engine", replay.EngineAuto, "tracking engine: xdp (the XDP program via BPF_PROG_RUN; root), go (its pure-Go twin), auto (xdp when it loads, else go)")
	format := fs.String("format", "json", "output on stdout: json (ECS JSON lines; alerts as run writes them) or table (a readable timeline)")
	timelineDir := fs.String("timeline", "", "also draw every alert record as an SVG timeline into `DIR` (see knockwatch explain)")
	timelinePNG := fs.Bool("timeline-png", false, "with --timeline, also write PNGs (needs rsvg-convert: Debian librsvg2-bin)")
	noCsum := fs.Bool("ignore-checksums", false, "accept TCP segments with wrong checksums (a capture taken on a sending host with checksum offload, as Zeek's -C); by default SYN-ACKs, RSTs and proving ACKs with a wrong checksum are ignored and counted")
	covOut := fs.Bool("coverage", false, "print the coverage report of the recording on stdout instead of the alerts (in --format):\nhost clocks measured from its connection events, hosts without events, one-way captures (docs/COVERAGE.md)")
	alertsPath := fs.String("alerts", "", "write the alerts (ECS JSON lines) to `FILE` instead of stdout (with --coverage: the alerts are kept there)")
	touches := fs.Bool("touches", false, "print one line per closed-port touch instead of alerts: its kind (REJ, S0, RSTOS0, as Zeek's conn_state)\nand the SYN's 4-tuple and time; JSON lines, or a table with --format table")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: knockwatch replay --pcap FILE [--pcap FILE]... [--events FILE]... [--hosts FILE] [--allow-source CIDR]...")
		fmt.Fprintln(stderr, "                        [--config FILE] [--engine auto|xdp|go] [--format json|table] [--timeline DIR [--timeline-png]]")
		fmt.Fprintln(stderr, "                        [--touches] [--ignore-checksums] [--coverage] [--alerts FILE]")
		fmt.Fprintln(stderr, "\nReplays recorded captures and exported Windows events through the sensor's tracking and the AN0842")
		fmt.Fprintln(stderr, "rule, in the evidence's own time. Alerts go to stdout, a summary to stderr.")
		fmt.Fprintln(stderr, "\nWith --touches, stdout gets every closed-port touch instead, one per line in the order the sensor")
		fmt.Fprintln(stderr, "decided them (an S0 once its timeout passed): what exactly did a source touch? As JSON:")
		fmt.Fprintln(stderr, `  {"@timestamp":"2026-11-20T14:30:21.5Z","source":{"ip":"198.51.100.7","port":40001},`)
		fmt.Fprintln(stderr, `   "destination":{"ip":"10.0.0.5","port":7000},"network":{"transport":"tcp"},"knockwatch":{"touch":{"kind":"REJ"}}}`)
		fmt.Fprintln(stderr, "@timestamp is the SYN's capture time; source is the SYN's sender, destination the touched host and port.")
		fmt.Fprintln(stderr, "Kinds, named as Zeek's conn_state: REJ (answered by an RST), S0 (never answered), RSTOS0 (the")
		fmt.Fprintln(stderr, "originator reset its own SYN, no answer seen). docs/DETECTION.md explains the classification.")
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		fs.Usage()
		return fmt.Errorf("%w: replay: unexpected argument %q (captures go after --pcap)", errUsage, fs.Arg(0))
	case len(pcaps) == 0:
		fs.Usage()
		return fmt.Errorf("%w: replay: no --pcap given", errUsage)
	case *format != "json" && *format != "table":
		return fmt.Errorf("%w: replay: --format %q is not json or table", errUsage, *format)
	case *engine != replay.EngineAuto && *engine != replay.EngineXDP && *engine != replay.EngineGo:
		return fmt.Errorf("%w: replay: --engine %q is not auto, xdp or go", errUsage, *engine)
	case *timelinePNG && *timelineDir == "":
		return fmt.Errorf("%w: replay: --timeline-png needs --timeline DIR", errUsage)
	case *covOut && *touches:
		return fmt.Errorf("%w: replay: --coverage and --touches both want stdout", errUsage)
	}

	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.LoadFile(*cfgPath); err != nil {
			return err
		}
	}
	for _, v := range allow {
		if _, err := parseReplayPrefix(v); err != nil {
			return fmt.Errorf("%w: replay: --allow-source: %v", errUsage, err)
		}
		cfg.Suppression.AllowedSources = append(cfg.Suppression.AllowedSources, v)
	}
	if *hosts != "" {
		cfg.Hosts = *hosts
	}
	if *noCsum {
		cfg.Sensor.VerifyChecksums = false
	}
	built, err := cfg.Build()
	if err != nil {
		return err
	}
	// Coverage measures the hosts' clocks from the recording's connection
	// events (its alerts are corrected by them) and finds its blind spots.
	cov, err := built.NewCoverage()
	if err != nil {
		return err
	}
	if *covOut && cov == nil {
		return fmt.Errorf("%w: replay: --coverage with coverage.enabled: false in --config", errUsage)
	}
	// The observer is this machine replaying the captures (they do not
	// say which interface recorded them).
	built.Pipeline.EngineOptions = append(built.Pipeline.EngineOptions, correlate.WithObserver(sensorObserver(nil)))
	// Every input is checked before the work starts, so a typo costs no
	// wait and gets one line.
	for _, p := range pcaps {
		c, err := replay.OpenCapture(p)
		if err != nil {
			return err
		}
		c.Close()
	}
	for _, p := range events {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("open events: %w", err)
		}
		f.Close()
	}

	// The live heap is mostly fixed tables; what a replay allocates after
	// them is short-lived (records, alerts). A low GC target keeps the peak
	// close to the tables instead of letting garbage double it.
	debug.SetGCPercent(25)
	built.Sensor.ReportTouches = *touches
	eng, note, err := replay.NewEngine(*engine, built.Sensor, built.Allowed)
	if err != nil {
		return err
	}
	defer eng.Close()
	fmt.Fprintf(stderr, "knockwatch replay: %s\n", note)

	var sink alert.Sink
	var table *replayTable
	var touchOut *touchOutput
	switch {
	case *alertsPath != "":
		f, err := os.Create(*alertsPath)
		if err != nil {
			return fmt.Errorf("open --alerts: %w", err)
		}
		sink = alert.NewStreamWriter(f, *alertsPath, false)
		defer f.Close()
		if *touches {
			touchOut = newTouchOutput(stdout, *format == "table")
		}
	case *touches:
		touchOut = newTouchOutput(stdout, *format == "table")
		sink = discardAlerts{}
	case *covOut:
		sink = discardAlerts{} // counted in the summary; --alerts FILE keeps them
	case *format == "table":
		table = &replayTable{}
		sink = table
	default:
		sink = alert.NewStreamWriter(stdout, "stdout", false)
	}
	var tee *recordTee
	if *timelineDir != "" {
		tee = &recordTee{next: sink}
		sink = tee
	}
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(zapcore.AddSync(stderr)), zapcore.WarnLevel)).Named("replay")
	p, err := pipeline.New(built.Pipeline, sink, log)
	if err != nil {
		return err
	}
	opts := replay.Options{
		Captures: pcaps, Events: events, Engine: eng, Decoder: p.Decoder(), Sink: p,
		FinalSweep: built.Sensor.S0Timeout + time.Second, GapSweeps: replay.GapSweepsFor(built.Sensor),
	}
	bar := newReplayProgress(stderr, func() uint64 {
		st := p.Stats()
		return st.Alerts["high"] + st.Alerts["medium"]
	})
	if touchOut != nil {
		opts.OnTouch = touchOut.write
	}
	if cov != nil {
		opts.OnSweep = func(now time.Time, paths []replay.Path) error {
			c, err := eng.Counters()
			if err != nil {
				return err
			}
			p.ObserveSensor(now, c, pathInterfaces(paths), eng)
			return eng.PruneRequests(now)
		}
	}
	if bar != nil {
		opts.Progress = bar.update
	}
	sum, runErr := replay.Run(ctx, opts)
	if bar != nil {
		bar.done() // before anything else is written to stderr
	}
	closeErr := p.Close()
	var touchErr error
	if touchOut != nil {
		// What was decided before an error is still printed.
		touchErr = touchOut.close()
	}
	if runErr != nil {
		return runErr
	}
	if closeErr != nil {
		return fmt.Errorf("flush alerts: %w", closeErr)
	}
	if touchErr != nil {
		return touchErr
	}
	if table != nil {
		table.print(stdout)
	}
	var report *coverage.Report
	if cov != nil {
		r := cov.Report(true)
		report = &r
	}
	if *covOut {
		if err := writeCoverage(stdout, *report, *format); err != nil {
			return err
		}
	}
	printReplaySummary(stderr, sum, p.Stats(), *touches)
	if report != nil {
		n := report.Summary.Findings
		hint := ""
		if !*covOut {
			hint = " (knockwatch replay --coverage shows them)"
		}
		fmt.Fprintf(stderr, "  coverage   %d hosts, clocks measured %d; findings: %d critical, %d warning, %d info%s\n",
			report.Summary.Hosts, report.Summary.ClockMeasured, n[coverage.SevCritical], n[coverage.SevWarning], n[coverage.SevInfo], hint)
	}
	if tee != nil {
		return tee.draw(ctx, *timelineDir, *timelinePNG, stderr)
	}
	return nil
}

func parseReplayPrefix(v string) (netip.Prefix, error) {
	v = strings.TrimSpace(v)
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix or an address", v)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func printReplaySummary(w io.Writer, s replay.Summary, ps pipeline.Stats, touchLines bool) {
	c := s.Counters
	fmt.Fprintf(w, "summary: engine %s, %d capture(s), %d event file(s)\n", s.Engine, s.Captures, s.EventFiles)
	span := "no packets"
	if !s.First.IsZero() {
		span = fmt.Sprintf("%s .. %s", s.First.UTC().Format(time.RFC3339Nano), s.Last.UTC().Format(time.RFC3339Nano))
	}
	fmt.Fprintf(w, "  packets    %d (%s)", s.Packets, span)
	if s.Short+s.Unusable > 0 {
		fmt.Fprintf(w, "; skipped %d too short, %d without an Ethernet form", s.Short, s.Unusable)
	}
	fmt.Fprintln(w)
	for _, path := range s.CutShort {
		fmt.Fprintf(w, "  WARNING    %s ends in the middle of a packet (cut short); read up to there\n", path)
	}
	fmt.Fprintf(w, "  parsed     tcp %d, ipv4 %d, ipv6 %d, vlan %d, non-ip %d, non-tcp %d, truncated %d, fragments %d, bad headers %d\n",
		c["tcp"], c["ipv4"], c["ipv6"], c["vlan"], c["non_ip"], c["non_tcp"], c["truncated"], c["fragment"], c["bad_header"]+c["unknown_ext"])
	fmt.Fprintf(w, "  touches    %d (REJ %d, S0 %d, RSTOS0 %d), backscatter RSTs %d\n", s.Touches(), c["touch_rej"], c["touch_s0"],
		c["touch_rstos0"], c["backscatter"])
	if bad := c["bad_csum"]; bad > 0 {
		fmt.Fprintf(w, "  WARNING    %d TCP segments with a wrong checksum were ignored as answers (a capture taken on a sending host\n"+
			"             with checksum offload has them on every packet it sent: replay it with --ignore-checksums)\n", bad)
	}
	if touchLines {
		fmt.Fprintf(w, "  printed    %d touch lines\n", s.TouchRecords)
		if s.TouchRecords == 0 && s.Touches() > 0 {
			fmt.Fprintf(w, "  WARNING    the %s engine counted %d touches but reported none to print\n", s.Engine, s.Touches())
		}
	}
	fmt.Fprintf(w, "  knocks     %d (allowlisted %d)\n", s.Knocks, c["allowlisted"])
	fmt.Fprintf(w, "  handshakes %d\n", s.Handshakes)
	if lost := c["ringbuf_full"] + c["map_insert_fail"]; lost > 0 {
		fmt.Fprintf(w, "  WARNING    %d records lost (ring buffer full %d, map insert failures %d)\n", lost, c["ringbuf_full"], c["map_insert_fail"])
	}
	ev := s.Events
	rejected := uint64(ev.Rejected) + replaySum(ps.Rejected["change"])
	fmt.Fprintf(w, "  events     %d records read: %d relevant, %d unrelated, %d duplicates; changes used %d, not applicable %d, rejected %d\n",
		ev.Read, ev.Relevant, ev.Skipped, ev.Duplicates, ps.In["change"], replaySum(ps.ChangesSkipped), rejected)
	if len(ev.Reasons) > 0 {
		fmt.Fprintf(w, "             rejected records by reason: %v\n", ev.Reasons)
	}
	fmt.Fprintf(w, "  alerts     %d (high %d, medium %d)", ps.Alerts["high"]+ps.Alerts["medium"], ps.Alerts["high"], ps.Alerts["medium"])
	if ps.AlertsSuppressed+ps.AlertsUpgraded > 0 {
		fmt.Fprintf(w, "; suppressed %d, upgrades %d", ps.AlertsSuppressed, ps.AlertsUpgraded)
	}
	fmt.Fprintln(w)
	rate := ""
	if sec := s.Duration.Seconds(); sec > 0 {
		rate = fmt.Sprintf(" (%.0f packets/s)", float64(s.Packets)/sec)
	}
	fmt.Fprintf(w, "  time taken %s%s\n", s.Duration.Round(time.Millisecond), rate)
}

func replaySum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// replayTable keeps the alerts of a replay to print them as a timeline.
type replayTable struct {
	mu   sync.Mutex
	recs []alert.Record
}

func (t *replayTable) Write(_ context.Context, recs []alert.Record) error {
	t.mu.Lock()
	for _, r := range recs {
		r.JSON = append([]byte(nil), r.JSON...)
		t.recs = append(t.recs, r)
	}
	t.mu.Unlock()
	return nil
}

func (t *replayTable) Close() error { return nil }

// replayTableAlert is the part of an ECS alert the timeline shows.
type replayTableAlert struct {
	Timestamp string `json:"@timestamp"`
	Event     struct {
		ID     string `json:"id"`
		Action string `json:"action"`
	} `json:"event"`
	Source      struct{ IP string } `json:"source"`
	Destination struct {
		IP   string `json:"ip"`
		Port uint16 `json:"port"`
	} `json:"destination"`
	Host struct {
		Name string `json:"name"`
	} `json:"host"`
	Knockwatch struct {
		Confidence string `json:"confidence"`
		Basis      string `json:"basis"`
		Suppressed bool   `json:"suppressed"`
		Knock      struct {
			Touches []struct {
				Port uint16 `json:"port"`
				Time string `json:"time"`
				Kind string `json:"kind"`
			} `json:"touches"`
		} `json:"knock"`
		Change *struct {
			Time      string `json:"time"`
			Host      string `json:"host"`
			Kind      string `json:"kind"`
			Ports     string `json:"ports"`
			RuleName  string `json:"rule_name"`
			Service   string `json:"service"`
			EventID   uint32 `json:"event_id"`
			RecordID  uint64 `json:"record_id"`
			Direction string `json:"direction"`
		} `json:"change"`
		Handshake struct {
			SYN    string `json:"syn"`
			SYNACK string `json:"syn_ack"`
			ACK    string `json:"ack"`
		} `json:"handshake"`
		PortLastClosed string `json:"port_last_closed"`
		PortLastOpen   string `json:"port_last_open"`
	} `json:"knockwatch"`
}

func replayClock(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		if s == "" {
			return "-"
		}
		return s
	}
	return t.UTC().Format("2006-01-02 15:04:05.000")
}

// print writes the alerts in time order, each with its evidence.
func (t *replayTable) print(w io.Writer) {
	var as []replayTableAlert
	for _, r := range t.recs {
		var a replayTableAlert
		if err := json.Unmarshal(r.JSON, &a); err != nil {
			fmt.Fprintf(os.Stderr, "knockwatch replay: alert %s not shown: %v\n", r.ID, err)
			continue
		}
		as = append(as, a)
	}
	sort.SliceStable(as, func(i, j int) bool { return as[i].Timestamp < as[j].Timestamp })
	if len(as) == 0 {
		fmt.Fprintln(w, "no alerts")
		return
	}
	for _, a := range as {
		k := &a.Knockwatch
		status := strings.ToUpper(k.Confidence)
		if a.Knockwatch.Suppressed {
			status += " (suppressed)"
		}
		if a.Event.Action == correlate.ActionUpgraded {
			status += " (upgraded)"
		}
		host := ""
		if a.Host.Name != "" {
			host = " (" + a.Host.Name + ")"
		}
		fmt.Fprintf(w, "%s  %-6s %s -> %s:%d%s  [%s]\n", replayClock(a.Timestamp), status, a.Source.IP, a.Destination.IP,
			a.Destination.Port, host, a.Event.ID)
		var ts []string
		for _, tc := range k.Knock.Touches {
			ts = append(ts, fmt.Sprintf("%d %s at %s", tc.Port, tc.Kind, replayClock(tc.Time)[11:]))
		}
		fmt.Fprintf(w, "    knock      %s\n", strings.Join(ts, ", "))
		if c := k.Change; c != nil {
			what := c.RuleName
			if what == "" {
				what = c.Service
			}
			fmt.Fprintf(w, "    change     %s  %s %q ports %s on %s (event %d, record %d)\n", replayClock(c.Time), c.Kind, what,
				c.Ports, c.Host, c.EventID, c.RecordID)
		} else {
			fmt.Fprintf(w, "    change     none seen (%s)\n", k.Basis)
		}
		fmt.Fprintf(w, "    handshake  SYN %s, SYN-ACK %s, ACK %s\n", replayClock(k.Handshake.SYN), replayClock(k.Handshake.SYNACK)[11:],
			replayClock(k.Handshake.ACK)[11:])
		fmt.Fprintf(w, "    port       last seen closed %s, last seen open %s\n", replayClock(k.PortLastClosed), replayClock(k.PortLastOpen))
	}
}

// recordTee passes records on and keeps their JSON for --timeline.
type recordTee struct {
	next alert.Sink
	mu   sync.Mutex
	recs [][]byte
}

func (t *recordTee) Write(ctx context.Context, recs []alert.Record) error {
	if err := t.next.Write(ctx, recs); err != nil {
		return err
	}
	t.mu.Lock()
	for _, r := range recs {
		t.recs = append(t.recs, append([]byte(nil), r.JSON...))
	}
	t.mu.Unlock()
	return nil
}

func (t *recordTee) Close() error { return t.next.Close() }

// draw writes one timeline per kept record into dir.
func (t *recordTee) draw(ctx context.Context, dir string, png bool, stderr io.Writer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var as []timeline.Alert
	for _, b := range t.recs {
		a, err := timeline.ParseRecord(b)
		if err != nil {
			return fmt.Errorf("draw timeline: %w", err)
		}
		as = append(as, a)
	}
	if len(as) == 0 {
		fmt.Fprintf(stderr, "  timelines  none (no alerts)\n")
		return nil
	}
	paths, err := writeTimelines(ctx, dir, as, png)
	fmt.Fprintf(stderr, "  timelines  %d files in %s\n", len(paths), dir)
	return err
}

// pathInterfaces names each capture's counters as a capture interface's
// (the file's base name).
func pathInterfaces(paths []replay.Path) []coverage.Interface {
	out := make([]coverage.Interface, len(paths))
	for i, p := range paths {
		out[i] = coverage.Interface{Name: filepath.Base(p.Name), Counters: p.Counters}
	}
	return out
}

// writeCoverage writes a coverage report as JSON (the /v1/coverage
// document) or as the table of knockwatch coverage.
func writeCoverage(w io.Writer, r coverage.Report, format string) error {
	if format == "table" {
		return coverage.WriteTable(w, r)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("render coverage: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
