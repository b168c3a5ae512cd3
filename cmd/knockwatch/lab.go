//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/knockwatch/knockwatch/daemon"
	"github.com/knockwatch/knockwatch/internal/lab"
	"github.com/knockwatch/knockwatch/internal/netns"
)

func init() {
	commands["lab"] = command{
		summary: "play a port-knocking attack in network namespaces against the real sensor (root)",
		run:     runLab,
	}
}

const labUsage = `usage: knockwatch lab [--s0 | --rej] [--ipv6] [--tap] [--one-way-port] [--host-clock-offset D] [--restart[=POINT]] [--keep] [--timeout D] [--json] [--report FILE] [FLAGS]

Builds a small network in namespaces (an attacker, a benign client and a
Windows host on a switch whose host port is mirrored to a sensor), starts the
real 'knockwatch run' on the sensor's capture interface (native XDP, an HTTPS
event listener with a bearer token, metrics on loopback) and plays AN0842:
the attacker knocks three closed ports, the host opens a new port and
forwards the Windows Firewall 2004 "rule added" event, the attacker connects.
A benign client scans closed ports and uses an open service meanwhile.
Prints each alert as it fires (indented on a terminal, one JSON line
otherwise), then a summary of the sensor's metrics, and removes every
namespace, link and firewall table, also on Ctrl-C or failure. Exits non-zero
unless exactly the expected alert fired. Needs root.

--restart kills the sensor with kill -9 in the middle of the attack and starts
it again with the same --state-dir and --pin-path: after the knock, after the
event's 202 (the default), after the handshake with the alert made but not
yet written, or after the alert. The restarted sensor rebuilds its engine
from its evidence log; the alert must still come exactly once.

--one-way-port adds a file server whose link reaches the sensor on a second
capture interface in one direction only (a tap whose other port is missing);
after the attack the client uses its shares, and the sensor must report that
interface one way within a minute and hold the knocks every client of it seems
to make. The lab prints what knockwatch coverage shows.

--host-clock-offset D stamps the host's events with a clock D off (e.g. -90s,
far beyond rule.skew). The host audits its inbound connections (5156): before
the attack the client and the attacker use its web service until the sensor
has measured the offset, and the alert must still be high, corrected.

flags:
`

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, labUsage)
		fs.PrintDefaults()
	}
	scenario := fs.String("scenario", lab.ScenarioS0, "how the host treats SYNs to closed ports: s0 (dropped silently, as Windows Firewall does) or rej (refused with RST)")
	s0 := fs.Bool("s0", false, "short for --scenario s0")
	rej := fs.Bool("rej", false, "short for --scenario rej")
	keep := fs.Bool("keep", false, "keep the namespaces and the sensor running after the scenario (for debugging) until Ctrl-C, then tear down")
	timeout := fs.Duration("timeout", 90*time.Second, "give up on the whole lab after this long")
	jsonOut := fs.Bool("json", false, "machine output: every alert as one JSON line, the summary as one JSON line")
	report := fs.String("report", "", "write the full result (scenario, addresses, alerts, scraped metrics) as JSON to `FILE`")
	capture := fs.String("capture", "", "record the mirrored traffic with tcpdump into the pcap `FILE` and the forwarded event into FILE.events.xml (a replay case)")
	verbose := fs.Bool("verbose", false, "copy the sensor's log to standard error")
	knockClient := fs.String("knock-client", "auto", "attacker's knock client: auto (Debian's knock if installed), knock, or go (Go dials)")
	ipv6 := fs.Bool("ipv6", false, "play the scenario over IPv6")
	tap := fs.Bool("tap", false, "mirror like a passive tap: the host's two directions on two capture interfaces, one sensor on both")
	clockOffset := fs.Duration("host-clock-offset", 0, "set the Windows host's clock this far off (e.g. -90s: behind); it audits its inbound connections (5156),\nthe sensor measures the offset before the attack and must still alert high, corrected (knockwatch.clock)")
	oneWay := fs.Bool("one-way-port", false, "add a file server mirrored to a second capture interface in one direction only (a tap missing its other port);\nafter the attack the client uses it, and the sensor must report that interface one way within a minute (knockwatch coverage)")
	knockd := fs.String("knockd", "auto", "the host's port-knocking backdoor: auto (Debian's knockd if installed: it sees the knock and opens the port), on, or off (the lab opens the port itself)")
	knockPorts := fs.String("knock-ports", "7000,8000,9000", "closed `PORTS` the attacker knocks, comma-separated")
	openPort := fs.Uint("open-port", 4444, "`PORT` the host opens after the knock")
	alertTimeout := fs.Duration("alert-timeout", 10*time.Second, "wait this long for the alert after the attacker's handshake")
	var restart restartArg
	fs.Var(&restart, "restart", "kill -9 the sensor at `POINT` and restart it with the same --state-dir and --pin-path: "+
		strings.Join(lab.RestartPoints, ", ")+" (--restart alone: "+lab.RestartAfterEvent+")")
	var sensorArgs listArg
	fs.Var(&sensorArgs, "sensor-arg", "extra `ARG` for 'knockwatch run' (repeatable), e.g. --sensor-arg=--set --sensor-arg=rule.skew=10s")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: lab: unexpected argument %q", errUsage, fs.Arg(0))
	}
	switch {
	case *s0 && *rej:
		return fmt.Errorf("%w: lab: --s0 and --rej exclude each other", errUsage)
	case *s0:
		*scenario = lab.ScenarioS0
	case *rej:
		*scenario = lab.ScenarioREJ
	}
	ports, err := parsePorts(*knockPorts)
	if err != nil {
		return fmt.Errorf("%w: lab: --knock-ports: %v", errUsage, err)
	}
	if *openPort == 0 || *openPort > 65535 {
		return fmt.Errorf("%w: lab: --open-port %d: want 1-65535", errUsage, *openPort)
	}

	out := &alertPrinter{w: stdout, pretty: !*jsonOut && daemon.IsTerminal(stdout)}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "lab: "+format+"\n", a...) }
	cfg := lab.Config{
		Scenario:        *scenario,
		KnockPorts:      ports,
		OpenPort:        uint16(*openPort),
		KnockClient:     *knockClient,
		Knockd:          *knockd,
		IPv6:            *ipv6,
		Tap:             *tap,
		OneWayPort:      *oneWay,
		HostClockOffset: *clockOffset,
		AlertTimeout:    *alertTimeout,
		Logf:            logf,
		OnAlert:         out.alert,
		SensorArgs:      sensorArgs,
		Capture:         *capture,
		Restart:         string(restart),
	}
	if *verbose {
		cfg.SensorLog = stderr
	}

	interrupted := ctx // --keep waits for Ctrl-C, not for --timeout
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		return labErr(ctx, err)
	}
	closed := false
	teardown := func() error {
		if closed {
			return nil
		}
		closed = true
		logf("tearing down: stopping the sensor, removing %d namespaces", len(l.Namespaces()))
		if err := l.Close(); err != nil {
			return fmt.Errorf("tear down lab: %w", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			return fmt.Errorf("tear down lab: namespaces still present: %s (remove with 'ip netns del NAME')", strings.Join(left, " "))
		}
		logf("torn down: sensor stopped, no namespace (with its links, XDP program and nftables table) left")
		return nil
	}
	defer teardown()

	res, playErr := l.Play(ctx)
	checkErr := playErr
	if playErr == nil {
		checkErr = res.Check()
	}
	if ctx.Err() == nil {
		if *jsonOut {
			out.summaryJSON(res, checkErr)
		} else {
			out.summary(res, firstLine(checkErr))
		}
	}
	if *report != "" {
		if err := writeReport(*report, res); err != nil {
			return errors.Join(err, teardown())
		}
	}
	if *keep {
		names := l.Namespaces()
		logf("--keep: namespaces %s stay up with the sensor running; Ctrl-C tears down", strings.Join(names, " "))
		if t := l.Topology(); t != nil {
			logf("  metrics: ip netns exec %s curl -s http://%s/metrics", t.Sensor.Name, lab.MetricsAddr)
			// Not on the capture interface: XDP drops the copies before
			// tcpdump could see them.
			logf("  traffic: ip netns exec %s tcpdump -ni %s tcp", t.Switch.Name, netns.SpanIface)
			logf("  firewall: ip netns exec %s nft list ruleset", t.Host.NS.Name)
		}
		<-interrupted.Done()
	}
	tdErr := teardown()
	switch {
	case playErr != nil:
		return errors.Join(labErr(ctx, playErr), tdErr)
	case checkErr != nil:
		return errors.Join(fmt.Errorf("lab: the sensor did not alert as expected: %w", checkErr), tdErr)
	}
	return tdErr
}

// labErr says "interrupted" or "timed out" rather than a bare context error.
func labErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("lab: timed out (--timeout): %w", err)
	case ctx.Err() != nil:
		return fmt.Errorf("lab: interrupted: %w", err)
	}
	return fmt.Errorf("lab: %w", err)
}

// firstLine keeps the first line of err (the sensor's log lines that
// follow are printed with the final error).
func firstLine(err error) error {
	if err == nil {
		return nil
	}
	if line, _, ok := strings.Cut(err.Error(), "\nlast sensor log lines:"); ok {
		return errors.New(line)
	}
	return err
}

// alertPrinter writes alerts as they fire and the summary, one at a time.
type alertPrinter struct {
	mu     sync.Mutex
	w      io.Writer
	pretty bool
}

func (p *alertPrinter) alert(raw json.RawMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b bytes.Buffer
	var err error
	if p.pretty {
		err = json.Indent(&b, raw, "", "  ")
	} else {
		err = json.Compact(&b, raw)
	}
	if err != nil {
		b.Reset()
		b.Write(raw)
	}
	b.WriteByte('\n')
	_, _ = p.w.Write(b.Bytes())
}

func (p *alertPrinter) summary(r *lab.Result, checkErr error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lab.WriteSummary(p.w, r, checkErr)
}

// summaryJSON writes the summary as one JSON object: the scenario, the
// outcome and the metrics of lab.SummaryMetrics.
func (p *alertPrinter) summaryJSON(r *lab.Result, checkErr error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := struct {
		Summary struct {
			Scenario   string             `json:"scenario"`
			Attacker   string             `json:"attacker"`
			Client     string             `json:"client"`
			Host       string             `json:"host"`
			HostName   string             `json:"host_name"`
			KnockPorts []uint16           `json:"knock_ports"`
			OpenPort   uint16             `json:"open_port"`
			Alerts     int                `json:"alerts"`
			OK         bool               `json:"ok"`
			Problem    string             `json:"problem,omitempty"`
			Seconds    float64            `json:"seconds"`
			Metrics    map[string]float64 `json:"metrics"`
		} `json:"summary"`
	}{}
	x := &s.Summary
	x.Scenario, x.Attacker, x.Client, x.Host, x.HostName = r.Scenario, r.Attacker.String(), r.Client.String(), r.Host.String(), r.HostName
	x.KnockPorts, x.OpenPort, x.Alerts, x.OK, x.Seconds = r.KnockPorts, r.OpenPort, len(r.Alerts), checkErr == nil, r.Duration.Seconds()
	if checkErr != nil {
		x.Problem = checkErr.Error()
	}
	x.Metrics = lab.SummaryMetrics(r.Metrics)
	b, _ := json.Marshal(s)
	_, _ = p.w.Write(append(b, '\n'))
}

func writeReport(path string, r *lab.Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		v, err := strconv.ParseUint(f, 10, 16)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("%q: want ports 1-65535, comma-separated", f)
		}
		out = append(out, uint16(v))
	}
	if len(out) < 2 {
		return nil, errors.New("want at least two ports")
	}
	return out, nil
}

// restartArg is --restart[=POINT]: alone it means the event point.
type restartArg string

func (r *restartArg) String() string   { return string(*r) }
func (r *restartArg) IsBoolFlag() bool { return true }

func (r *restartArg) Set(v string) error {
	switch v {
	case "true":
		v = lab.RestartAfterEvent
	case "false":
		v = ""
	}
	for _, p := range lab.RestartPoints {
		if v == p || v == "" {
			*r = restartArg(v)
			return nil
		}
	}
	return fmt.Errorf("want one of %s", strings.Join(lab.RestartPoints, ", "))
}

// listArg is a repeatable string flag.
type listArg []string

func (l *listArg) String() string { return strings.Join(*l, " ") }

func (l *listArg) Set(v string) error {
	*l = append(*l, v)
	return nil
}
