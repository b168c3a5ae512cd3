package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/knockwatch/knockwatch/alert"
	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/pipeline"
	"github.com/knockwatch/knockwatch/sensor"
)

// envInt reads a positive integer knob from the environment.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// soakDuration is how long a load test offers events (per transport):
// KNOCKWATCH_SOAK_SECONDS, else 5 s (2 s with -short).
func soakDuration(t testing.TB) time.Duration {
	def := 5
	if testing.Short() {
		def = 2
	}
	return time.Duration(envInt(t, "KNOCKWATCH_SOAK_SECONDS", def)) * time.Second
}

// Hosts of the test inventory: host i is ws<i>.corp.example at 10.0.0.<i+1>.
func hostName(i int) string         { return fmt.Sprintf("WS%02d.corp.example", i) }
func hostAddr(i int) netip.Addr     { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}) }
func attackerAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}) }

const numHosts = 32

func inventory(t testing.TB) *correlate.Hosts {
	t.Helper()
	var b strings.Builder
	for i := range numHosts {
		fmt.Fprintf(&b, "%s %s\n", hostAddr(i), strings.ToLower(hostName(i)))
	}
	inv, err := correlate.ParseHosts(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// newPipeline wires a pipeline the way `knockwatch run` does (default rule,
// the inventory, a real decoder, an evidence log fsyncing every batch
// before it is acknowledged) in front of sink.
func newPipeline(t testing.TB, sink alert.Sink, cfg pipeline.Config, log *zap.Logger) *pipeline.Pipeline {
	t.Helper()
	if cfg.Engine.MinPorts == 0 {
		cfg.Engine = correlate.DefaultConfig()
	}
	cfg.EngineOptions = append(cfg.EngineOptions, correlate.WithInventory(inventory(t)))
	var evlog *evidence.Log
	if cfg.Evidence == nil {
		l, err := evidence.OpenLog(evidence.LogConfig{Dir: t.TempDir(), MaxAge: time.Hour, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() }) // after the pipeline's own cleanup
		cfg.Evidence, evlog = l, l
	}
	p, err := pipeline.New(cfg, sink, log)
	if err != nil {
		t.Fatal(err)
	}
	if evlog != nil {
		evidenceLogs.Store(p, evlog)
	}
	return p
}

// evidenceLogs maps a pipeline newPipeline made to its evidence log.
var evidenceLogs sync.Map

// evidenceOf returns the evidence log newPipeline gave p.
func evidenceOf(p *pipeline.Pipeline) *evidence.Log {
	l, _ := evidenceLogs.Load(p)
	return l.(*evidence.Log)
}

// fileSink is the real alert file writer in a temporary directory.
func fileSink(t testing.TB) (*alert.Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	w, err := alert.NewWriter(alert.WriterConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	return w, path
}

// faultySink puts the real file writer behind a switch: while failing is
// set, Write reports an I/O error (a full or failing disk) without
// writing, so the pipeline keeps the alerts queued and retries.
type faultySink struct {
	*alert.Writer
	failing atomic.Bool
	refused atomic.Uint64
}

var errDiskFailing = errors.New("input/output error (injected disk fault)")

func (s *faultySink) Write(ctx context.Context, recs []alert.Record) error {
	if s.failing.Load() {
		s.refused.Add(1)
		return errDiskFailing
	}
	return s.Writer.Write(ctx, recs)
}

// Event rendering. Events are Winlogbeat 8.x ECS JSON, the shape
// Winlogbeat's output.logstash sends over Beats and NXLog/Logstash forward
// over HTTP.

const (
	fwProvider = "Microsoft-Windows-Windows Firewall With Advanced Security"
	fwChannel  = fwProvider + "/Firewall"
)

// ruleAdded renders a Windows Firewall 2004 "rule added" (inbound, TCP,
// allow, active) on host for port.
func ruleAdded(b []byte, host string, record uint64, at time.Time, port uint16) []byte {
	b = append(b, `{"@timestamp":"`...)
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":{"code":"2004","kind":"event","provider":"`+fwProvider+`"},`+
		`"host":{"name":"wec01"},"agent":{"type":"winlogbeat","version":"8.11.0"},`+
		`"winlog":{"event_id":2004,"channel":"`+fwChannel+`","provider_name":"`+fwProvider+`","computer_name":"`...)
	b = append(b, host...)
	b = append(b, `","record_id":`...)
	b = strconv.AppendUint(b, record, 10)
	b = append(b, `,"api":"wineventlog","event_data":{"RuleId":"{rel-`...)
	b = strconv.AppendUint(b, record, 10)
	b = append(b, `}","RuleName":"reliability `...)
	b = strconv.AppendUint(b, uint64(port), 10)
	b = append(b, `","Origin":"1","Direction":"1","Protocol":"6","LocalPorts":"`...)
	b = strconv.AppendUint(b, uint64(port), 10)
	b = append(b, `","RemotePorts":"*","Action":"3","Profiles":"2147483647","LocalAddresses":"*",`+
		`"RemoteAddresses":"*","Active":"1","ModifyingUser":"S-1-5-21-1-2-3-500",`+
		`"ModifyingApplication":"C:\\Windows\\System32\\netsh.exe"}},"message":"A rule has been added"}`...)
	return b
}

// logon renders a Security 4624 (unrelated to the analytic: skipped
// cheaply by the decoder), the bulk of a real forwarded stream.
func logon(b []byte, host string, record uint64, at time.Time) []byte {
	b = append(b, `{"@timestamp":"`...)
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":{"code":"4624","kind":"event","provider":"Microsoft-Windows-Security-Auditing"},`+
		`"host":{"name":"wec01"},"agent":{"type":"winlogbeat","version":"8.11.0"},`+
		`"winlog":{"event_id":4624,"channel":"Security","provider_name":"Microsoft-Windows-Security-Auditing","computer_name":"`...)
	b = append(b, host...)
	b = append(b, `","record_id":`...)
	b = strconv.AppendUint(b, record, 10)
	b = append(b, `,"api":"wineventlog","event_data":{"SubjectUserSid":"S-1-5-18","TargetUserName":"wardog",`+
		`"TargetDomainName":"CORP","LogonType":"3","LogonProcessName":"Kerberos","IpAddress":"10.0.0.200","IpPort":"56610"}},`+
		`"message":"An account was successfully logged on."}`...)
	return b
}

// mixEvent renders event number n of the load mix: one in eight is a
// relevant firewall rule (a fresh port on one of the hosts), the rest
// logons. It reports whether the event is relevant.
// Record ids are n+1: Windows numbers records from 1 and the decoder
// treats 0 as "no record id" (never a duplicate).
func mixEvent(b []byte, n uint64, at time.Time) ([]byte, bool) {
	host := hostName(int(n % numHosts))
	if n%8 == 0 {
		return ruleAdded(b, host, n+1, at, uint16(1024+n/8%60000)), true
	}
	return logon(b, host, n+1, at), false
}

// knock is the sensor's KNOCK record for attacker i against host i.
func knock(i int, at time.Time) *sensor.Knock {
	k := &sensor.Knock{Src: attackerAddr(i), Dst: hostAddr(i), Distinct: 3, FlagTime: at.Add(2 * time.Second)}
	for j, port := range []uint16{7000, 8000, 9000} {
		k.Touches = append(k.Touches, sensor.Touch{Port: port, Time: at.Add(time.Duration(j) * time.Second), Kind: sensor.TouchREJ})
	}
	return k
}

// handshake is the sensor's HANDSHAKE record for attacker i to host i.
func handshake(i int, at time.Time, port uint16) *sensor.Handshake {
	return &sensor.Handshake{
		Src: attackerAddr(i), Dst: hostAddr(i), SrcPort: 51000, Port: port,
		SYN: at, SYNACK: at.Add(time.Millisecond), ACK: at.Add(2 * time.Millisecond),
		PortLastClosed: at.Add(-time.Minute), Distinct: 3,
	}
}

// testLogger logs warnings and errors of the components under test.
func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// eventually polls cond for up to 20 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
