package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/sensor"
)

// touchKindName is the value of knockwatch.touch.kind: Zeek's conn_state
// name of the touch (REJ, S0, RSTOS0). The names are part of the output's
// contract, so they are spelled here rather than taken from whatever
// TouchKind.String says; an unknown kind prints as kind(N).
func touchKindName(k sensor.TouchKind) string {
	switch k {
	case sensor.TouchREJ:
		return "REJ"
	case sensor.TouchS0:
		return "S0"
	case sensor.TouchRSTOS0:
		return "RSTOS0"
	}
	return k.String()
}

// touchEndpoint is an ECS source or destination.
type touchEndpoint struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port"`
}

// touchLine is one line of `replay --touches`: ECS field names, nested as
// in the alerts (source.ip is {"source":{"ip":...}}).
type touchLine struct {
	Timestamp   string        `json:"@timestamp"`
	Source      touchEndpoint `json:"source"`
	Destination touchEndpoint `json:"destination"`
	Network     struct {
		Transport string `json:"transport"`
	} `json:"network"`
	Knockwatch struct {
		Touch struct {
			Kind string `json:"kind"`
		} `json:"touch"`
	} `json:"knockwatch"`
}

// touchAddr prints an address as Zeek and the alerts do: IPv4 dotted,
// IPv6 compressed, an IPv4-mapped IPv6 address as IPv4.
func touchAddr(a netip.Addr) string { return a.Unmap().String() }

// touchOutput writes the touches of a replay to stdout as they are
// decided, one line each, so memory does not grow with the capture.
type touchOutput struct {
	w     *bufio.Writer
	table bool
	n     int64
}

func newTouchOutput(stdout io.Writer, table bool) *touchOutput {
	return &touchOutput{w: bufio.NewWriterSize(stdout, 64<<10), table: table}
}

// write prints one touch; an error (stdout closed) ends the replay.
func (o *touchOutput) write(t *sensor.TouchRecord) error {
	o.n++
	if o.table {
		_, err := fmt.Fprintf(o.w, "%s  %-6s %s -> %s\n", t.Time.UTC().Format("2006-01-02 15:04:05.000000"),
			touchKindName(t.Kind), netip.AddrPortFrom(t.Src.Unmap(), t.SrcPort), netip.AddrPortFrom(t.Dst.Unmap(), t.Port))
		if err != nil {
			return fmt.Errorf("write touch: %w", err)
		}
		return nil
	}
	var l touchLine
	l.Timestamp = t.Time.UTC().Format(time.RFC3339Nano)
	l.Source = touchEndpoint{IP: touchAddr(t.Src), Port: t.SrcPort}
	l.Destination = touchEndpoint{IP: touchAddr(t.Dst), Port: t.Port}
	l.Network.Transport = "tcp"
	l.Knockwatch.Touch.Kind = touchKindName(t.Kind)
	b, err := json.Marshal(&l)
	if err != nil {
		return fmt.Errorf("write touch: %w", err)
	}
	b = append(b, '\n')
	if _, err := o.w.Write(b); err != nil {
		return fmt.Errorf("write touch: %w", err)
	}
	return nil
}

// close flushes what is buffered; with no touch at all a table says so.
func (o *touchOutput) close() error {
	if o.table && o.n == 0 {
		fmt.Fprintln(o.w, "no touches")
	}
	if err := o.w.Flush(); err != nil {
		return fmt.Errorf("write touches: %w", err)
	}
	return nil
}

// discardAlerts takes the alerts of a `replay --touches`: the rule still
// runs so the summary counts knocks and alerts, but stdout holds touches.
type discardAlerts struct{}

func (discardAlerts) Write(context.Context, []alert.Record) error { return nil }
func (discardAlerts) Close() error                                { return nil }
