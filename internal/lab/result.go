//go:build linux

package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// Result is what a scenario did and what the sensor said about it.
type Result struct {
	Scenario    string     `json:"scenario"`
	Attacker    netip.Addr `json:"attacker"`
	Client      netip.Addr `json:"client"`
	Host        netip.Addr `json:"host"`
	HostName    string     `json:"host_name"`
	KnockPorts  []uint16   `json:"knock_ports"`
	KnockClient string     `json:"knock_client"`
	Knockd      bool       `json:"knockd"`
	OpenPort    uint16     `json:"open_port"`
	ScanPorts   []uint16   `json:"scan_ports"`
	ServicePort uint16     `json:"service_port"`
	Namespaces  []string   `json:"namespaces"`
	// SensorPID is the process id of `knockwatch run` (the last one, after
	// restarts).
	SensorPID int `json:"sensor_pid"`
	// Restart is Config.Restart; Restarts the kills and restarts done.
	Restart  string    `json:"restart,omitempty"`
	Restarts []Restart `json:"restarts,omitempty"`
	// Knocked is when the attacker's last knock left; Opened when the
	// host's rule went in; Connected when the attacker's handshake
	// completed.
	Knocked   time.Time `json:"knocked"`
	Opened    time.Time `json:"opened"`
	Connected time.Time `json:"connected"`
	// Alerted is when the lab read the attacker's alert from the sensor.
	Alerted time.Time `json:"alerted"`
	// NoTokenStatus is the listener's answer to the event posted without
	// the bearer token (401 expected); EventStatus, EventsAccepted and
	// EventsRejected its answer with it.
	NoTokenStatus  int `json:"no_token_status"`
	EventStatus    int `json:"event_status"`
	EventsAccepted int `json:"events_accepted"`
	EventsRejected int `json:"events_rejected"`
	// Alerts are every alert the sensor wrote, as written (across
	// restarts: each process's, in order).
	Alerts []json.RawMessage `json:"alerts"`
	// Clock is the host-clock phase (Config.HostClockOffset), nil without.
	Clock *ClockResult `json:"clock,omitempty"`
	// OneWay is the one-way port's phase (Config.OneWayPort), nil without.
	OneWay *OneWayResult `json:"one_way,omitempty"`
	// Metrics is the sensor's /metrics scraped after the scenario.
	Metrics  Metrics       `json:"metrics"`
	Duration time.Duration `json:"duration_ns"`
}

// AlertFields are the alert fields the lab checks.
type AlertFields struct {
	RuleID      string `json:"rule_id"`
	Source      string `json:"source_ip"`
	Destination string `json:"destination_ip"`
	Port        uint16 `json:"destination_port"`
	Confidence  string `json:"confidence"`
}

// Fields extracts rule.id, source.ip, destination.ip, destination.port and
// knockwatch.confidence from an ECS alert.
func Fields(raw json.RawMessage) (AlertFields, error) {
	var a struct {
		Rule struct {
			ID string `json:"id"`
		} `json:"rule"`
		Source struct {
			IP string `json:"ip"`
		} `json:"source"`
		Destination struct {
			IP   string `json:"ip"`
			Port uint16 `json:"port"`
		} `json:"destination"`
		Knockwatch struct {
			Confidence string `json:"confidence"`
		} `json:"knockwatch"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return AlertFields{}, fmt.Errorf("decode alert: %w", err)
	}
	return AlertFields{RuleID: a.Rule.ID, Source: a.Source.IP, Destination: a.Destination.IP,
		Port: a.Destination.Port, Confidence: a.Knockwatch.Confidence}, nil
}

func matches(raw json.RawMessage, src, dst netip.Addr, port uint16) bool {
	f, err := Fields(raw)
	return err == nil && sameAddr(f.Source, src) && sameAddr(f.Destination, dst) && f.Port == port
}

// sameAddr compares an address as an alert writes it with a.
func sameAddr(s string, a netip.Addr) bool {
	p, err := netip.ParseAddr(s)
	return err == nil && p.Unmap() == a.Unmap()
}

// Check reports whether the sensor said exactly what the scenario calls
// for: one high-confidence AN0842 alert for the attacker to the host's new
// port, nothing for the client, and the event listener refusing the
// request without the token.
func (r *Result) Check() error {
	var errs []error
	if r.NoTokenStatus != http.StatusUnauthorized {
		errs = append(errs, fmt.Errorf("event without token: status %d, want 401", r.NoTokenStatus))
	}
	found := 0
	for _, raw := range r.Alerts {
		f, err := Fields(raw)
		switch {
		case err != nil:
			errs = append(errs, err)
		case sameAddr(f.Source, r.Attacker) && sameAddr(f.Destination, r.Host) && f.Port == r.OpenPort:
			found++
			if f.RuleID != "AN0842" || f.Confidence != "high" {
				errs = append(errs, fmt.Errorf("alert for the attacker: rule %q confidence %q, want AN0842 high", f.RuleID, f.Confidence))
			}
		default:
			errs = append(errs, fmt.Errorf("unexpected alert: %s %s -> %s:%d (%s)", f.RuleID, f.Source, f.Destination, f.Port, f.Confidence))
		}
	}
	if found != 1 {
		errs = append(errs, fmt.Errorf("%d alerts for %v -> %v:%d, want 1", found, r.Attacker, r.Host, r.OpenPort))
	}
	if r.Restart != "" && len(r.Restarts) != 1 {
		errs = append(errs, fmt.Errorf("restart %q asked for, %d done", r.Restart, len(r.Restarts)))
	}
	if r.OneWay != nil {
		errs = append(errs, r.OneWay.check()...)
	}
	if r.Clock != nil {
		errs = append(errs, r.Clock.check()...)
	}
	return errors.Join(errs...)
}
