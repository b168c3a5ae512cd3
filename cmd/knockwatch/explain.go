package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/knockwatch/knockwatch/timeline"
)

func init() {
	commands["explain"] = command{
		summary: "draw alerts as timeline pictures (SVG, optionally PNG) from an alert file, stdin or replay's output",
		run:     runExplain,
	}
}

func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	outDir := fs.String("out", ".", "`DIR` to write one picture per alert record into (created if missing); - writes the one selected record's SVG to stdout")
	png := fs.Bool("png", false, "also write a PNG beside each SVG (needs rsvg-convert: Debian librsvg2-bin)")
	id := fs.String("id", "", "draw only the records of this alert `ID` (event.id; a unique prefix is enough)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: knockwatch explain [--out DIR|-] [--png] [--id ID] [FILE|-]...")
		fmt.Fprintln(stderr, "\nReads knockwatch alerts (JSON lines as run and replay write them, pretty-printed, or a JSON")
		fmt.Fprintln(stderr, "array; '-' or no FILE is stdin) and draws each record as a timeline: the knock's touches per")
		fmt.Fprintln(stderr, "port, the host's exposure change, the first handshake, the port's last closed/open times, the")
		fmt.Fprintln(stderr, "rule's windows and the verdict in words. Files are named ALERT-ID.svg (ALERT-ID.upgraded.svg for")
		fmt.Fprintln(stderr, "an upgrade record); their paths are printed on stdout.")
		fmt.Fprintln(stderr, "\n  knockwatch replay --pcap cap.pcap --events ev.xml --hosts hosts | knockwatch explain --out pics --png")
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	inputs := fs.Args()
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	var alerts []timeline.Alert
	problems := 0
	for _, name := range inputs {
		var r io.Reader = os.Stdin
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return fmt.Errorf("open alerts: %w", err)
			}
			defer f.Close()
			r = f
		}
		as, probs, err := timeline.Read(r)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, p := range probs {
			problems++
			fmt.Fprintf(stderr, "knockwatch explain: %s: %s: skipped: %v\n", name, p.Where, p.Err)
		}
		alerts = append(alerts, as...)
	}
	if *id != "" {
		kept := alerts[:0]
		for _, a := range alerts {
			if strings.HasPrefix(a.ID, *id) {
				kept = append(kept, a)
			}
		}
		alerts = kept
	}
	if len(alerts) == 0 {
		if problems > 0 {
			return fmt.Errorf("explain: no alert could be drawn (%d records skipped)", problems)
		}
		return errors.New("explain: no alert records in the input")
	}
	if *outDir == "-" {
		if len(alerts) != 1 {
			return fmt.Errorf("%w: explain: --out - writes one picture; the input has %d records (select one with --id)", errUsage, len(alerts))
		}
		if *png {
			return fmt.Errorf("%w: explain: --png needs --out DIR", errUsage)
		}
		return timeline.SVG(stdout, alerts[0])
	}
	paths, err := writeTimelines(ctx, *outDir, alerts, *png)
	for _, p := range paths {
		fmt.Fprintln(stdout, p)
	}
	if err != nil {
		return err
	}
	if problems > 0 {
		return fmt.Errorf("explain: drew %d records, skipped %d that could not be read", len(alerts), problems)
	}
	return nil
}

// timelineName is the file name (without extension) of a record's picture.
func timelineName(a timeline.Alert) string {
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, a.ID)
	if a.Action != "" && a.Action != "created" {
		id += "." + a.Action
	}
	return id
}

// writeTimelines draws each record into dir as NAME.svg (and NAME.png)
// and returns the paths written.
func writeTimelines(ctx context.Context, dir string, alerts []timeline.Alert, png bool) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create timeline directory: %w", err)
	}
	var paths []string
	used := map[string]int{}
	for _, a := range alerts {
		var buf bytes.Buffer
		if err := timeline.SVG(&buf, a); err != nil {
			return paths, err
		}
		name := timelineName(a)
		// The same record twice (inputs concatenated from several runs)
		// gets its own file, not an overwrite.
		if used[name]++; used[name] > 1 {
			name = fmt.Sprintf("%s-%d", name, used[name])
		}
		base := filepath.Join(dir, name)
		if err := os.WriteFile(base+".svg", buf.Bytes(), 0o644); err != nil {
			return paths, fmt.Errorf("write timeline: %w", err)
		}
		paths = append(paths, base+".svg")
		if png {
			b, err := timeline.PNG(ctx, buf.Bytes(), 1)
			if err != nil {
				return paths, err
			}
			if err := os.WriteFile(base+".png", b, 0o644); err != nil {
				return paths, fmt.Errorf("write timeline: %w", err)
			}
			paths = append(paths, base+".png")
		}
	}
	return paths, nil
}
