// Package timeline draws a knockwatch alert as a picture an analyst can
// read at a glance: a time axis with the knock's touches per port (REJ and
// S0 marked), the host's exposure change with its rule, user and program,
// the knocker's first handshake, the port's last closed and open times,
// the rule's windows shaded, and the verdict and confidence in words.
//
// Read parses alert records (JSON lines as `knockwatch run` and `replay`
// write them, pretty-printed objects, or a JSON array); SVG renders one as
// a self-contained SVG document; PNG converts it with rsvg-convert
// (librsvg). The package reads the alert's JSON only, so it draws records
// of any knockwatch version that has the fields, and records from a SIEM.
package timeline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Alert is what the picture needs of one alert record.
type Alert struct {
	ID         string
	Action     string // created, upgraded
	Timestamp  time.Time
	Confidence string // high, medium
	Basis      string // host_event, network
	Suppressed bool
	Reason     string // suppression reason
	Source     Endpoint
	Dest       Endpoint
	HostName   string
	Observer   string
	Touches    []Touch
	Change     *Change
	SYN        time.Time
	SYNACK     time.Time
	ACK        time.Time
	// PortLastClosed/PortLastOpen are zero when the sensor never saw it.
	PortLastClosed time.Time
	PortLastOpen   time.Time
	Windows        Windows
}

// Endpoint is an address and port.
type Endpoint struct {
	IP   string
	Port uint16
}

// Touch is one closed-port touch of the knock.
type Touch struct {
	Port uint16
	Time time.Time
	Kind string // REJ or S0
}

// Change is the host's exposure change that explains the opening.
type Change struct {
	Time                 time.Time
	Host                 string
	Kind                 string
	Ports                string
	Protocol             string
	Direction            string
	Action               string
	RuleID               string
	RuleName             string
	Application          string
	Service              string
	ModifyingUser        string
	ModifyingApplication string
	EventID              uint32
	RecordID             uint64
	Channel              string
}

// Windows are the rule's windows the alert was decided with.
type Windows struct {
	MinPorts       int
	KnockWindow    time.Duration
	ChangeAfter    time.Duration
	Skew           time.Duration
	HandshakeAfter time.Duration
}

// DefaultWindows are knockwatch's defaults, used for records that do not
// carry knockwatch.rule (written before it existed).
var DefaultWindows = Windows{MinPorts: 3, KnockWindow: 30 * time.Second, ChangeAfter: 60 * time.Second,
	Skew: 5 * time.Second, HandshakeAfter: 300 * time.Second}

// LastTouch is the time of the knock's last touch (zero without touches).
func (a *Alert) LastTouch() time.Time {
	var last time.Time
	for _, t := range a.Touches {
		if t.Time.After(last) {
			last = t.Time
		}
	}
	return last
}

// Ports are the knock's distinct ports in touch order.
func (a *Alert) Ports() []uint16 {
	var out []uint16
	seen := map[uint16]bool{}
	for _, t := range a.Touches {
		if !seen[t.Port] {
			seen[t.Port] = true
			out = append(out, t.Port)
		}
	}
	return out
}

// record is the JSON shape of an alert record (the fields used here).
type record struct {
	Timestamp string `json:"@timestamp"`
	Event     struct {
		ID     string `json:"id"`
		Action string `json:"action"`
		Reason string `json:"reason"`
	} `json:"event"`
	Rule struct {
		ID string `json:"id"`
	} `json:"rule"`
	Observer struct {
		Hostname string `json:"hostname"`
	} `json:"observer"`
	Source      jsonEndpoint `json:"source"`
	Destination jsonEndpoint `json:"destination"`
	Host        struct {
		Name string `json:"name"`
	} `json:"host"`
	Knockwatch struct {
		Confidence        string `json:"confidence"`
		Basis             string `json:"basis"`
		Suppressed        bool   `json:"suppressed"`
		SuppressionReason string `json:"suppression_reason"`
		Knock             struct {
			Touches []struct {
				Port uint16 `json:"port"`
				Time string `json:"time"`
				Kind string `json:"kind"`
			} `json:"touches"`
		} `json:"knock"`
		Change *struct {
			Time                 string `json:"time"`
			Host                 string `json:"host"`
			Kind                 string `json:"kind"`
			Ports                string `json:"ports"`
			Protocol             string `json:"protocol"`
			Direction            string `json:"direction"`
			Action               string `json:"action"`
			RuleID               string `json:"rule_id"`
			RuleName             string `json:"rule_name"`
			Application          string `json:"application"`
			Service              string `json:"service"`
			ModifyingUser        string `json:"modifying_user"`
			ModifyingApplication string `json:"modifying_application"`
			EventID              uint32 `json:"event_id"`
			RecordID             uint64 `json:"record_id"`
			Channel              string `json:"channel"`
		} `json:"change"`
		Handshake struct {
			SYN    string `json:"syn"`
			SYNACK string `json:"syn_ack"`
			ACK    string `json:"ack"`
		} `json:"handshake"`
		PortLastClosed *string `json:"port_last_closed"`
		PortLastOpen   *string `json:"port_last_open"`
		Rule           *struct {
			MinPorts       int     `json:"min_ports"`
			KnockWindow    float64 `json:"knock_window"`
			ChangeAfter    float64 `json:"change_after"`
			Skew           float64 `json:"skew"`
			HandshakeAfter float64 `json:"handshake_after"`
		} `json:"rule"`
	} `json:"knockwatch"`
}

type jsonEndpoint struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port"`
}

// ErrNotAlert marks a JSON object that is not a knockwatch AN0842 alert.
var ErrNotAlert = errors.New("not a knockwatch AN0842 alert record")

// ParseRecord reads one alert record.
func ParseRecord(b []byte) (Alert, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return Alert{}, fmt.Errorf("parse alert: %w", err)
	}
	if r.Rule.ID != "AN0842" || r.Event.ID == "" {
		return Alert{}, ErrNotAlert
	}
	var errs []error
	tm := func(what, s string) time.Time {
		if s == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
		return t
	}
	k := &r.Knockwatch
	a := Alert{
		ID: r.Event.ID, Action: r.Event.Action, Timestamp: tm("@timestamp", r.Timestamp),
		Confidence: k.Confidence, Basis: k.Basis, Suppressed: k.Suppressed, Reason: k.SuppressionReason,
		Source: Endpoint(r.Source), Dest: Endpoint(r.Destination), HostName: r.Host.Name, Observer: r.Observer.Hostname,
		SYN: tm("handshake.syn", k.Handshake.SYN), SYNACK: tm("handshake.syn_ack", k.Handshake.SYNACK),
		ACK: tm("handshake.ack", k.Handshake.ACK), Windows: DefaultWindows,
	}
	if a.Reason == "" && a.Suppressed {
		a.Reason = r.Event.Reason
	}
	if k.PortLastClosed != nil {
		a.PortLastClosed = tm("port_last_closed", *k.PortLastClosed)
	}
	if k.PortLastOpen != nil {
		a.PortLastOpen = tm("port_last_open", *k.PortLastOpen)
	}
	for i, t := range k.Knock.Touches {
		a.Touches = append(a.Touches, Touch{Port: t.Port, Kind: t.Kind, Time: tm(fmt.Sprintf("touch %d", i), t.Time)})
	}
	if c := k.Change; c != nil {
		a.Change = &Change{Time: tm("change.time", c.Time), Host: c.Host, Kind: c.Kind, Ports: c.Ports, Protocol: c.Protocol,
			Direction: c.Direction, Action: c.Action, RuleID: c.RuleID, RuleName: c.RuleName, Application: c.Application,
			Service: c.Service, ModifyingUser: c.ModifyingUser, ModifyingApplication: c.ModifyingApplication,
			EventID: c.EventID, RecordID: c.RecordID, Channel: c.Channel}
	}
	if w := k.Rule; w != nil && w.KnockWindow > 0 {
		sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
		a.Windows = Windows{MinPorts: w.MinPorts, KnockWindow: sec(w.KnockWindow), ChangeAfter: sec(w.ChangeAfter),
			Skew: sec(w.Skew), HandshakeAfter: sec(w.HandshakeAfter)}
	}
	if a.ACK.IsZero() {
		errs = append(errs, errors.New("handshake.ack missing"))
	}
	if len(a.Touches) == 0 {
		errs = append(errs, errors.New("knock has no touches"))
	}
	if len(errs) > 0 {
		return a, fmt.Errorf("parse alert %s: %w", a.ID, errors.Join(errs...))
	}
	return a, nil
}

// Problem is a record Read could not use.
type Problem struct {
	Where string // "line 3" or "record 2"
	Err   error
}

func (p Problem) Error() string { return p.Where + ": " + p.Err.Error() }

// Read reads alert records from r: one JSON object per line (as run and
// replay write them), pretty-printed objects one after another (run with
// --alerts-pretty), or a JSON array of them. Records that are not
// knockwatch alerts or cannot be read are returned as problems, each
// naming where it was; the rest are returned in input order.
func Read(r io.Reader) ([]Alert, []Problem, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("read alerts: %w", err)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil, nil
	}
	var raws []json.RawMessage
	var wheres []string
	if trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, nil, fmt.Errorf("read alerts: JSON array: %w", err)
		}
		for i := range raws {
			wheres = append(wheres, fmt.Sprintf("record %d", i+1))
		}
	} else if lines, ok := jsonLines(data); ok {
		for _, l := range lines {
			raws = append(raws, l.b)
			wheres = append(wheres, fmt.Sprintf("line %d", l.n))
		}
	} else {
		// Pretty-printed objects one after another.
		d := json.NewDecoder(bytes.NewReader(data))
		for i := 1; ; i++ {
			var m json.RawMessage
			if err := d.Decode(&m); err == io.EOF {
				break
			} else if err != nil {
				return nil, nil, fmt.Errorf("read alerts: record %d: %w", i, err)
			}
			raws = append(raws, m)
			wheres = append(wheres, fmt.Sprintf("record %d", i))
		}
	}
	var out []Alert
	var probs []Problem
	for i, raw := range raws {
		a, err := ParseRecord(raw)
		if err != nil {
			probs = append(probs, Problem{Where: wheres[i], Err: err})
			continue
		}
		out = append(out, a)
	}
	return out, probs, nil
}

type line struct {
	n int
	b []byte
}

// jsonLines splits data into lines, unless it is pretty-printed JSON
// (an object opened alone on its first line): then ok is false. A line
// that is not valid JSON stays a line (reported as a problem by Read).
func jsonLines(data []byte) ([]line, bool) {
	var out []line
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if len(out) == 0 && string(b) == "{" {
			return nil, false
		}
		out = append(out, line{n: n, b: append([]byte(nil), b...)})
	}
	return out, sc.Err() == nil
}
