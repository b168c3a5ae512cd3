//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
)

// ruleAddedXML is the real Firewall 2004 sample of
// testdata/winevents/psmths_2004_2071_2006_5156_examples.xml (record 6661)
// with the computer, time, record id and port of this scenario.
func ruleAddedXML(t *testing.T, computer string, at time.Time, port int) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(winSamples, "psmths_2004_2071_2006_5156_examples.xml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "<Event\n")
	j := strings.Index(s[i:], "</Event>")
	ev := s[i : i+j+len("</Event>")]
	for _, r := range []struct{ old, new string }{
		{"<Computer>HLPC01</Computer>", "<Computer>" + computer + "</Computer>"},
		{`SystemTime="2023-05-04T17:01:45.8409961Z"`, `SystemTime="` + at.UTC().Format(time.RFC3339Nano) + `"`},
		{"<EventRecordID>6661</EventRecordID>", "<EventRecordID>900001</EventRecordID>"},
		{`<Data Name="LocalPorts">22</Data>`, fmt.Sprintf(`<Data Name="LocalPorts">%d</Data>`, port)},
	} {
		if !strings.Contains(ev, r.old) {
			t.Fatalf("sample lacks %q", r.old)
		}
		ev = strings.Replace(ev, r.old, r.new, 1)
	}
	return []byte(ev)
}

// TestRunEndToEnd runs `knockwatch run` on the lab topology's span port
// (native XDP) and plays AN0842 with real TCP: the attacker knocks three
// closed ports, the host opens a listener and its Windows Firewall event is
// posted to the HTTP listener, the attacker connects. Exactly one high
// alert must come out on stdout, and SIGTERM must leave nothing attached.
func TestRunEndToEnd(t *testing.T) {
	testenv.RequirePrivileged(t)
	runEndToEnd(t, "kwrune2e", nil, nil)
}

// runEndToEnd plays the scenario of TestRunEndToEnd with the sensor
// process started with extraEnv (see TestRunUnderServiceSandbox), calls
// ready (if set) with the sensor's pid once it is ready, and returns its
// last metrics scrape.
func runEndToEnd(t *testing.T, name string, extraEnv []string, ready func(pid int)) string {
	env, err := netns.NewEnv(name)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	defer env.CloseOnSignal()()
	topo, err := env.NewTopology(netns.TopologyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte(topo.Host.IP.String()+" win01.corp.example win01\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	args := strings.Join([]string{"--iface", topo.CaptureIface, "--xdp-mode", "native", "--events-http", "127.0.0.1:0",
		"--hosts", hosts, "--alerts", "-", "--metrics", "127.0.0.1:0", "--alerts-pretty", "false", "--log-format", "json",
		"--state-dir", filepath.Join(dir, "state"), "--set", "sensor.pair_slots=4096", "--set", "sensor.candidates=1024", "--set", "sensor.ring_bytes=65536"}, "\x1f")
	cmd := topo.Sensor.Command(ctx, os.Args[0], "-test.v=false")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+args), extraEnv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs bytes.Buffer
	httpAddr := make(chan string, 1)
	metricsAddr := make(chan string, 1)
	metricsRE := regexp.MustCompile(`"msg":"serving /metrics.*"addr":"([0-9.:]+)"`)
	readyC := make(chan struct{})
	addrRE := regexp.MustCompile(`"msg":"http intake listening".*"addr":"([0-9.:]+)"`)
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		readyOnce := false
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			logs.WriteString(line + "\n")
			mu.Unlock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				httpAddr <- m[1]
			}
			if m := metricsRE.FindStringSubmatch(line); m != nil {
				metricsAddr <- m[1]
			}
			if !readyOnce && strings.Contains(line, `"msg":"ready`) {
				readyOnce = true
				close(readyC)
			}
		}
	}()
	alerts := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			alerts <- sc.Text()
		}
		close(alerts)
	}()
	dump := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	select {
	case <-readyC:
	case <-ctx.Done():
		t.Fatalf("not ready:\n%s", dump())
	}
	if ready != nil {
		ready(cmd.Process.Pid)
	}
	addr := <-httpAddr

	dial := func(port int) (net.Conn, error) {
		d := &net.Dialer{Timeout: 2 * time.Second}
		return topo.Attacker.NS.Dial(ctx, d, "tcp", net.JoinHostPort(topo.Host.IP.String(), fmt.Sprint(port)))
	}
	// 1. The knock: three closed ports, each answered by an RST (REJ).
	for _, p := range []int{7001, 8002, 9003} {
		if c, err := dial(p); err == nil {
			c.Close()
			t.Fatalf("port %d unexpectedly open", p)
		}
	}
	// 2. The host opens 4444 and reports the firewall rule.
	ln, err := topo.Host.NS.Listen(ctx, "tcp", net.JoinHostPort(topo.Host.IP.String(), "4444"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		return topo.Sensor.Dial(ctx, nil, network, a)
	}}}
	resp, err := client.Post("http://"+addr+"/v1/events", "application/xml",
		bytes.NewReader(ruleAddedXML(t, "WIN01", time.Now().Add(-500*time.Millisecond), 4444)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("event POST: %d", resp.StatusCode)
	}
	// 3. The attacker's first handshake to the opened port.
	c, err := dial(4444)
	if err != nil {
		t.Fatalf("connect to the opened port: %v", err)
	}
	c.Close()

	var line string
	select {
	case line = <-alerts:
	case <-time.After(15 * time.Second):
		t.Fatalf("no alert:\n%s", dump())
	}
	var a struct {
		Source      struct{ IP string }
		Destination struct {
			IP   string
			Port int
		}
		Host       struct{ Name string }
		Knockwatch struct{ Confidence string }
	}
	if err := json.Unmarshal([]byte(line), &a); err != nil {
		t.Fatalf("alert is not JSON: %v: %s", err, line)
	}
	if a.Source.IP != topo.Attacker.IP.String() || a.Destination.IP != topo.Host.IP.String() ||
		a.Destination.Port != 4444 || a.Knockwatch.Confidence != "high" {
		t.Fatalf("unexpected alert: %s", line)
	}
	// 4. Coverage lists a host nobody names, from the SYNs to it alone: a
	// second address on the mirrored link (not in --hosts, no event, no
	// record) refuses one connection of the attacker. The sensor reads
	// the program's table of SYN destinations every 5 s.
	maddr := <-metricsAddr
	unnamed := netip.AddrFrom4([4]byte{10, 203, 0, 99})
	if !topo.Subnet4.Contains(unnamed) {
		t.Fatalf("%v outside the topology's %v", unnamed, topo.Subnet4)
	}
	if err := topo.Host.NS.AddAddr(netns.EndpointIface, netip.PrefixFrom(unnamed, topo.Subnet4.Bits())); err != nil {
		t.Fatal(err)
	}
	if c, err := topo.Attacker.NS.Dial(ctx, &net.Dialer{Timeout: 2 * time.Second}, "tcp",
		net.JoinHostPort(unnamed.String(), "7777")); err == nil {
		c.Close()
		t.Fatalf("port 7777 of %v unexpectedly open", unnamed)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		var rep struct {
			Hosts []struct {
				Host      string `json:"host"`
				Inventory bool   `json:"inventory"`
				Traffic   struct {
					Last *time.Time `json:"last"`
				} `json:"traffic"`
			} `json:"hosts"`
		}
		resp, err := client.Get("http://" + maddr + "/v1/coverage")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("decode /v1/coverage: %v", err)
		}
		found := false
		for _, h := range rep.Hosts {
			found = found || (h.Host == unnamed.String() && !h.Inventory && h.Traffic.Last != nil)
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/v1/coverage does not list %v, a SYN destination inside coverage.networks: %+v", unnamed, rep.Hosts)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The metrics agree with the scenario.
	resp, err = client.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`knockwatch_alerts_total{confidence="high"} 1`,
		`knockwatch_alerts_total{confidence="medium"} 0`,
		`knockwatch_knocks_flagged_total 1`,
		`knockwatch_handshakes_reported_total 1`,
		`knockwatch_closed_port_touches_total{kind="REJ"} 4`, // the knock's 3 and the unnamed address's 1
		`knockwatch_events_received_total{outcome="accepted",transport="http"} 1`,
		`knockwatch_decoder_records_total{format="xml",outcome="emitted"} 1`,
		`knockwatch_ringbuf_lost_total 0`,
		`knockwatch_interface_attached{iface="` + topo.CaptureIface + `",mode="native"} 1`,
		`knockwatch_event_lag_seconds_count{format="xml",transport="http"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", testenv.GrepLines(text, "knockwatch_"))
	}
	// Prometheus's own linter on the live binary's scrape (XDP counters,
	// BPF map fill levels, interfaces, listeners, engine, process).
	promtool := exec.Command(testenv.RequireTool(t, "promtool", "prometheus"), "check", "metrics")
	promtool.Stdin = strings.NewReader(text)
	if out, err := promtool.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if !strings.Contains(text, "knockwatch_bpf_map_entries{") || !strings.Contains(text, "knockwatch_xdp_interface_bytes_total{") {
		t.Errorf("the scrape lacks the BPF map or interface byte metrics")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for extra := range alerts {
		t.Errorf("unexpected second alert: %s", extra)
	}
	<-logsDone
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, dump())
	}
	if xdpAttached(t, topo.Sensor, topo.CaptureIface) {
		t.Fatal("XDP program left attached")
	}
	return text
}
