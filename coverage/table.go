package coverage

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// maxTableHosts is how many hosts the table lists (worst first): one
// screen, the rest summed up.
const maxTableHosts = 15

// WriteTable writes r as a person reads it in one screen: the capture's
// state, hosts by state, the worst hosts, and every finding with its fix
// (`knockwatch coverage`, `knockwatch replay --coverage --format table`).
func WriteTable(w io.Writer, r Report) error {
	tw := &tableWriter{w: w}
	when := "no traffic yet"
	if !r.Generated.IsZero() {
		when = r.Generated.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	kind := "live"
	if r.Final {
		kind = "a recording: final"
	}
	tw.printf("knockwatch coverage at %s (%s)\n", when, kind)
	paths := []string{"sensor " + pathLine(r.Sensor)}
	for _, p := range r.Interfaces {
		paths = append(paths, p.Name+" "+pathLine(p))
	}
	tw.printf("capture   %s\n", strings.Join(paths, "; "))
	var states []string
	for _, st := range HostStates {
		if n := r.Summary.States[st]; n > 0 {
			states = append(states, fmt.Sprintf("%d %s", n, st))
		}
	}
	clocks := fmt.Sprintf("clocks measured %d", r.Summary.ClockMeasured)
	if r.Summary.ClockMeasured > 0 {
		clocks += fmt.Sprintf(" (largest offset %.1f s)", r.Summary.LargestOffset)
	}
	tw.printf("hosts     %d: %s; %s\n", r.Summary.Hosts, strings.Join(states, ", "), clocks)
	if len(r.Hosts) > 0 {
		tw.printf("\n%-28s %-18s %-16s %7s  %-24s %s\n", "HOST", "ADDRESSES", "STATE", "EVENTS", "CLOCK", "LAG p50")
		for i, h := range r.Hosts {
			if i == maxTableHosts {
				tw.printf("... and %d more hosts (knockwatch coverage --format json lists every one)\n", len(r.Hosts)-i)
				break
			}
			tw.printf("%-28s %-18s %-16s %7d  %-24s %s\n", cut(h.Host, 28), cut(strings.Join(h.IPs, ","), 18), h.State,
				h.Events.Count, clockCell(h.Clock), lagCell(h.Lag))
		}
	}
	n := r.Summary.Findings
	tw.printf("\nFINDINGS (%d critical, %d warning, %d info)\n", n[SevCritical], n[SevWarning], n[SevInfo])
	if len(r.Findings) == 0 {
		tw.printf("none\n")
	}
	for _, f := range r.Findings {
		subject := f.Host
		switch {
		case f.Interface != "":
			subject = "capture interface " + f.Interface
		case f.Host == "" && (f.Kind == FindOneWay || f.Kind == FindAnswersOnly):
			subject = "the sensor's capture"
		case len(f.IPs) > 0:
			subject += " (" + strings.Join(f.IPs, ", ") + ")"
		}
		tw.printf("%-8s  %s  %s\n", strings.ToUpper(f.Severity), f.Kind, subject)
		tw.wrap("  missing: ", f.Missing)
		tw.wrap("  fix:     ", f.Fix)
	}
	return tw.err
}

func pathLine(p PathReport) string {
	if p.State == StateIdle || p.State == StateUnknown || p.State == "" {
		return p.State
	}
	return fmt.Sprintf("%s (%d SYNs, %d answers in %.0f s)", p.State, p.SYN, p.Answers, p.WindowSeconds)
}

func clockCell(c ClockReport) string {
	switch c.State {
	case "measured", "beyond_bound":
		if c.Offset != nil {
			s := fmt.Sprintf("%+.3f s (%d from %d)", *c.Offset, c.Samples, c.Sources)
			if c.State == "beyond_bound" {
				s += " BEYOND BOUND"
			}
			return s
		}
	case "measuring":
		return fmt.Sprintf("measuring (%d matched)", c.Samples)
	}
	return c.State
}

func lagCell(l *LagReport) string {
	if l == nil {
		return "-"
	}
	return fmt.Sprintf("%s (%s)", (time.Duration(l.P50 * float64(time.Second))).Round(100*time.Millisecond), l.Mode)
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

type tableWriter struct {
	w   io.Writer
	err error
}

func (t *tableWriter) printf(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.w, format, args...)
	}
}

// wrap writes text after prefix, folded at 100 columns under it.
func (t *tableWriter) wrap(prefix, text string) {
	const width = 100
	indent := strings.Repeat(" ", len(prefix))
	line, empty := prefix, true
	for _, word := range strings.Fields(text) {
		if !empty && len(line)+1+len(word) > width {
			t.printf("%s\n", line)
			line, empty = indent, true
		}
		if !empty {
			line += " "
		}
		line += word
		empty = false
	}
	t.printf("%s\n", line)
}
