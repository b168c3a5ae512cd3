package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/knockwatch/knockwatch/winevents"
)

func init() {
	commands["events"] = command{
		summary: "decode Windows event files and print the exposure changes they contain",
		run:     runEvents,
	}
}

// eventLine is one line of `knockwatch events` output.
type eventLine struct {
	Host        string     `json:"host"`
	HostIPs     []string   `json:"host_ips,omitempty"`
	Time        string     `json:"time"`
	Kind        string     `json:"kind"`
	Ports       string     `json:"ports"`
	Protocol    string     `json:"protocol,omitempty"`
	Direction   string     `json:"direction,omitempty"`
	Action      string     `json:"action,omitempty"`
	Active      bool       `json:"active"`
	Opens       bool       `json:"opens"`
	RuleID      string     `json:"rule_id,omitempty"`
	RuleName    string     `json:"rule_name,omitempty"`
	Application string     `json:"application,omitempty"`
	Service     string     `json:"service,omitempty"`
	ModifiedBy  string     `json:"modifying_application,omitempty"`
	Actor       string     `json:"actor,omitempty"`
	AppPackage  bool       `json:"app_package_rule,omitempty"`
	WinManaged  bool       `json:"windows_managed,omitempty"`
	Local       string     `json:"local_address,omitempty"`
	Remote      string     `json:"remote,omitempty"`
	LocalSideBy string     `json:"local_side_by,omitempty"`
	Setting     string     `json:"setting,omitempty"`
	File        string     `json:"file"`
	Channel     string     `json:"channel"`
	EventID     uint32     `json:"event_id"`
	RecordID    uint64     `json:"record_id,omitempty"`
	Joined      *joinedRef `json:"joined,omitempty"`
	Replaces    *joinedRef `json:"replaces,omitempty"`
}

type joinedRef struct {
	EventID  uint32 `json:"event_id"`
	RecordID uint64 `json:"record_id,omitempty"`
}

// zoneFlag collects --zone HOST=ZONE values.
type zoneFlag map[string]*time.Location

func (z zoneFlag) String() string { return "" }

func (z zoneFlag) Set(v string) error {
	host, name, ok := strings.Cut(v, "=")
	if !ok || host == "" || name == "" {
		return fmt.Errorf("parse zone %q: want HOST=ZONE (HOST may be a glob such as *.corp.example)", v)
	}
	loc, err := loadZone(name)
	if err != nil {
		return err
	}
	z[host] = loc
	return nil
}

// loadZone accepts IANA names ("Europe/Berlin"), "UTC", "Local" and fixed
// offsets ("+08:00", "-0400").
func loadZone(name string) (*time.Location, error) {
	if len(name) >= 3 && (name[0] == '+' || name[0] == '-') {
		for _, layout := range []string{"-07:00", "-0700", "-07"} {
			if t, err := time.Parse(layout, name); err == nil {
				_, off := t.Zone()
				return time.FixedZone(name, off), nil
			}
		}
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("load time zone %q: %w", name, err)
	}
	return loc, nil
}

func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tz := fs.String("tz", "UTC", "time zone of hosts whose events carry local time without a zone (NXLog EventTime): IANA name or offset such as +08:00")
	zones := zoneFlag{}
	fs.Var(zones, "zone", "time zone of one host or host group, HOST=ZONE (repeatable; HOST may be a glob such as *.corp.example)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: knockwatch events [--tz ZONE] [--zone HOST=ZONE]... FILE...")
		fmt.Fprintln(stderr, "\nReads Windows event files (Event XML, Winlogbeat ECS or 6.x JSON, NXLog JSON;")
		fmt.Fprintln(stderr, "one event, JSON lines, JSON arrays, concatenated or wrapped <Event>s; '-' is stdin)")
		fmt.Fprintln(stderr, "and prints every exposure change as one JSON object per line, then a summary")
		fmt.Fprintln(stderr, "on stderr. Exits non-zero when a file cannot be read.")
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: events: no FILE given", errUsage)
	}
	def, err := loadZone(*tz)
	if err != nil {
		return fmt.Errorf("%w: --tz: %v", errUsage, err)
	}
	dec := winevents.NewDecoder(winevents.Options{Zones: zones, DefaultZone: def})
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)

	var total winevents.Result
	var failed []string
	for _, name := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := decodeFile(dec, name, func(c winevents.ExposureChange) {
			_ = enc.Encode(toLine(name, c))
		})
		addResult(&total, res)
		if err != nil {
			_ = out.Flush()
			fmt.Fprintf(stderr, "knockwatch events: %s: %v\n", name, err)
			failed = append(failed, name)
		}
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	printSummary(stderr, total)
	if len(failed) > 0 {
		return fmt.Errorf("events: %d of %d files could not be read", len(failed), fs.NArg())
	}
	return nil
}

func decodeFile(dec *winevents.Decoder, name string, emit func(winevents.ExposureChange)) (winevents.Result, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return winevents.Result{}, fmt.Errorf("open file: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return winevents.Result{}, fmt.Errorf("stat file: %w", err)
		}
		if st.IsDir() {
			return winevents.Result{}, errors.New("is a directory")
		}
		r = f
	}
	res, err := dec.DecodeReader(r, emit)
	if err != nil {
		return res, err
	}
	if res.Read == 0 {
		return res, errors.New("no events found")
	}
	if res.Rejected == res.Read {
		return res, fmt.Errorf("no event could be decoded (%s)", reasonList(res.Reasons))
	}
	return res, nil
}

func toLine(file string, c winevents.ExposureChange) eventLine {
	l := eventLine{
		Host: c.Host, Time: c.Time.UTC().Format(time.RFC3339Nano), Kind: string(c.Kind),
		Ports: c.Ports.String(), Protocol: c.Protocol.String(), Direction: string(c.Direction),
		Action: string(c.Action), Active: c.Active, Opens: c.Opens(), RuleID: c.RuleID, RuleName: c.RuleName,
		Application: c.Application, Service: c.Service, ModifiedBy: c.ModifyingApplication,
		Actor: string(c.Actor), AppPackage: c.AppPackageRule, WinManaged: c.WindowsManaged, Setting: c.Setting,
		LocalSideBy: c.LocalSideBy,
		File:        file, Channel: c.Source.Channel, EventID: c.Source.EventID, RecordID: c.Source.RecordID,
	}
	for _, a := range c.HostIPs {
		l.HostIPs = append(l.HostIPs, a.String())
	}
	if c.LocalAddress.IsValid() {
		l.Local = c.LocalAddress.String()
	}
	if c.RemoteAddress.IsValid() {
		l.Remote = netip.AddrPortFrom(c.RemoteAddress, c.RemotePort).String()
	}
	if c.Joined != nil {
		l.Joined = &joinedRef{EventID: c.Joined.EventID, RecordID: c.Joined.RecordID}
	}
	if c.Replaces != nil {
		l.Replaces = &joinedRef{EventID: c.Replaces.EventID, RecordID: c.Replaces.RecordID}
	}
	return l
}

func addResult(t *winevents.Result, r winevents.Result) {
	t.Read += r.Read
	t.Relevant += r.Relevant
	t.Skipped += r.Skipped
	t.Duplicates += r.Duplicates
	t.Rejected += r.Rejected
	t.Emitted += r.Emitted
	for k, v := range r.Reasons {
		if t.Reasons == nil {
			t.Reasons = map[winevents.Reason]int{}
		}
		t.Reasons[k] += v
	}
}

func reasonList(m map[winevents.Reason]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[winevents.Reason(k)]))
	}
	return strings.Join(parts, ", ")
}

func printSummary(w io.Writer, r winevents.Result) {
	fmt.Fprintf(w, "read %d, relevant %d, skipped %d, duplicates %d, rejected %d, changes %d\n",
		r.Read, r.Relevant, r.Skipped, r.Duplicates, r.Rejected, r.Emitted)
	if len(r.Reasons) == 0 {
		return
	}
	reasons := make([]string, 0, len(r.Reasons))
	for k := range r.Reasons {
		reasons = append(reasons, string(k))
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		fmt.Fprintf(w, "rejected %s: %d\n", k, r.Reasons[winevents.Reason(k)])
	}
}
