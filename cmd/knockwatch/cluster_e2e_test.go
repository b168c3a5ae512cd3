//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	lumber "github.com/elastic/go-lumber/client/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/knockwatch/knockwatch/correlate"
	"github.com/knockwatch/knockwatch/evidence"
	"github.com/knockwatch/knockwatch/internal/clusterlab"
	"github.com/knockwatch/knockwatch/internal/kafkatest"
	"github.com/knockwatch/knockwatch/internal/netns"
	"github.com/knockwatch/knockwatch/internal/testsupport/testenv"
	"github.com/knockwatch/knockwatch/scaleout"
)

// helperCommand runs `knockwatch run ARGS` as this test binary in its
// helper mode, inside ns (nil: here).
func helperCommand(ctx context.Context, ns *netns.Namespace, args []string) *exec.Cmd {
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Command(ctx, os.Args[0], "-test.v=false")
	} else {
		cmd = exec.CommandContext(ctx, os.Args[0], "-test.v=false")
	}
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, "\x1f"))
	return cmd
}

// Case 1 of issue 14: the knock crosses tap A, the connection tap B, the
// host's event comes through a forwarder's raw topic (kcat produces the
// Winlogbeat record). Exactly one high alert comes out on the alert topic
// (read with kcat), and each tap reported only its part: A the knock, B
// the handshake, from the flag that travelled.
func TestClusterTwoTaps(t *testing.T) {
	testenv.RequirePrivileged(t)
	kcat := testenv.RequireTool(t, "kcat", "kcat")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := clusterlab.Config{Command: helperCommand, Kcat: kcat, Dir: t.TempDir(), Correlators: 2, Prefix: "kwclus"}
	if env := os.Getenv("KNOCKWATCH_KAFKA_BROKERS"); env != "" {
		cfg.Brokers, cfg.Suffix = strings.Split(env, ","), "."+strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	lab, err := clusterlab.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			for name, p := range lab.Procs {
				t.Logf("%s:\n%s", name, testenv.GrepLines(p.Logs(), `"level":"`))
			}
		}
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	}()
	r, err := lab.Attack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Alerts) != 1 {
		t.Fatalf("%d alert records, want 1: %+v", len(r.Alerts), r.Alerts)
	}
	a := r.Alerts[0]
	if a.Confidence != "high" || a.Source != clusterlab.AttackerIP || a.Destination != clusterlab.HostIP || a.Port != clusterlab.OpenedPort {
		t.Errorf("alert %+v, want high, %v -> %v:%d", a, clusterlab.AttackerIP, clusterlab.HostIP, clusterlab.OpenedPort)
	}
	for _, want := range []string{`"event_id":2004`, `"kind":"rule_added"`, `"host"`} {
		if !strings.Contains(a.JSON, want) {
			t.Errorf("alert lacks %s: %s", want, a.JSON)
		}
	}
	if r.KnocksA != 1 || r.HandshakesA != 0 || r.KnocksB != 0 || r.HandshakesB != 1 || r.RemoteFlagsB < 1 {
		t.Errorf("tap A: %v knocks %v handshakes; tap B: %v knocks %v handshakes, %v remote flags: the evidence did not split across the taps",
			r.KnocksA, r.HandshakesA, r.KnocksB, r.HandshakesB, r.RemoteFlagsB)
	}
	// The correlators' local copies: one line in all.
	n := 0
	for name, p := range lab.Procs {
		if strings.HasPrefix(name, "correlator") {
			n += len(p.Alerts())
		}
	}
	if n != 1 {
		t.Errorf("the correlators wrote %d local alert lines, want 1", n)
	}
}

// clusterAttack is one AN0842 instance fed to a cluster: its knock and
// handshake as a sensor publishes them, its host's Firewall 2004 as
// Winlogbeat JSON.
type clusterAttack struct {
	i        int
	src, dst netip.Addr
	port     uint16
	t0       time.Time
}

func newClusterAttack(i int, t0 time.Time) clusterAttack {
	return clusterAttack{i: i, src: netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)}),
		dst: netip.AddrFrom4([4]byte{10, 7, byte(i / 250), byte(1 + i%250)}), port: uint16(5000 + i), t0: t0}
}

func (a clusterAttack) computer() string { return fmt.Sprintf("WIN-%d.corp.example", a.i) }

func (a clusterAttack) id() string {
	return correlate.AlertID(a.src, a.dst, a.port, a.t0.Add(40*time.Second))
}

func (a clusterAttack) knock() evidence.Item {
	k := &correlate.Knock{Src: a.src, Dst: a.dst, DistinctClosed: 3, Attempted: 3, Epoch: 1}
	for j, p := range []uint16{7000, 8000, 9000} {
		k.Touches = append(k.Touches, correlate.Touch{Port: p, Time: a.t0.Add(time.Duration(j) * time.Second), Kind: correlate.TouchREJ})
	}
	return evidence.Item{Arrival: a.t0.Add(2 * time.Second), Knock: k}
}

func (a clusterAttack) change() evidence.Item {
	return evidence.Item{Arrival: a.t0.Add(12 * time.Second), Change: &correlate.ExposureChange{
		Time: a.t0.Add(10 * time.Second), Host: a.computer(), HostIPs: []netip.Addr{a.dst}, Kind: correlate.ChangeRuleAdded,
		Ports: correlate.Ports(a.port), Protocol: correlate.ProtocolTCP, Direction: correlate.DirectionInbound,
		Action: correlate.ActionAllow, Active: correlate.TriTrue, RuleName: "updater", EventID: 2004,
		Channel: "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", RecordID: uint64(1000 + a.i)}}
}

func (a clusterAttack) event(t *testing.T) []byte {
	t.Helper()
	b, err := clusterlab.WinlogbeatRuleAddedOn(a.computer(), a.t0.Add(10*time.Second), 1000+a.i, int(a.port))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (a clusterAttack) handshake() evidence.Item {
	ack := a.t0.Add(40 * time.Second)
	return evidence.Item{Arrival: ack.Add(time.Millisecond), Handshake: &correlate.Handshake{Src: a.src, Dst: a.dst,
		SrcPort: 50000, Port: a.port, SYN: ack.Add(-2 * time.Millisecond), SYNACK: ack.Add(-time.Millisecond), ACK: ack}}
}

// cluster is a fake Kafka cluster on loopback with knockwatch processes.
type cluster struct {
	t     *testing.T
	kafka *kafkatest.Cluster
	cfg   scaleout.Config
	procs []*clusterlab.Process
}

func newCluster(t *testing.T, dataDir string) *cluster {
	t.Helper()
	c := &cluster{t: t}
	var brokers []string
	if env := os.Getenv("KNOCKWATCH_KAFKA_BROKERS"); env != "" {
		brokers = strings.Split(env, ",")
	} else {
		k, err := kafkatest.Start(kafkatest.Config{Brokers: 3, DataDir: dataDir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		c.kafka, brokers = k, k.Addrs()
	}
	// A run of its own on a real cluster: its own topics and groups.
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	c.cfg = scaleout.Config{Brokers: brokers, Node: "test", SessionTimeout: 3 * time.Second, TransactionTimeout: 5 * time.Second,
		Topics: scaleout.Topics{Evidence: "kwtest.evidence." + suffix, Flags: "kwtest.flags." + suffix, Alerts: "kwtest.alerts." + suffix,
			Create: true, Partitions: 6, ReplicationFactor: -1}, Group: "kwtest-correlators-" + suffix, IntakeGroup: "kwtest-intake-" + suffix,
		BusyAfter: time.Second, SyncTimeout: 2 * time.Second, Insecure: true}
	c.cfg.Defaults()
	if err := scaleout.EnsureTopics(context.Background(), c.cfg, scaleout.Needs{Evidence: 21 * time.Minute, Flags: 7 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			_ = p.Stop(15 * time.Second)
		}
		if t.Failed() {
			for _, p := range c.procs {
				t.Logf("%s:\n%s", p.Name, testenv.GrepLines(p.Logs(), `"level":"`))
			}
		}
	})
	return c
}

// stopBrokers and startBrokers stop and start every broker: the fake
// cluster's, or a real one's with KNOCKWATCH_KAFKA_STOP/START.
func (c *cluster) stopBrokers() {
	c.t.Helper()
	if c.kafka != nil {
		c.kafka.Stop()
		return
	}
	if out, err := exec.Command("sh", "-c", os.Getenv("KNOCKWATCH_KAFKA_STOP")).CombinedOutput(); err != nil {
		c.t.Fatalf("KNOCKWATCH_KAFKA_STOP: %v: %s", err, out)
	}
}

func (c *cluster) startBrokers() {
	c.t.Helper()
	if c.kafka != nil {
		if err := c.kafka.Start(); err != nil {
			c.t.Fatal(err)
		}
		return
	}
	if out, err := exec.Command("sh", "-c", os.Getenv("KNOCKWATCH_KAFKA_START")).CombinedOutput(); err != nil {
		c.t.Fatalf("KNOCKWATCH_KAFKA_START: %v: %s", err, out)
	}
}

// args are the kafka flags of a role process.
func (c *cluster) args(role, node string, more ...string) []string {
	k := c.cfg
	return append([]string{"--role", role, "--kafka-brokers", strings.Join(k.Brokers, ","), "--metrics", "127.0.0.1:0",
		"--log-format", "json", "--set", "kafka.node=" + node, "--set", "kafka.session_timeout=3s",
		"--set", "kafka.transaction_timeout=5s", "--set", "kafka.insecure=true",
		"--set", "kafka.topics.evidence=" + k.Topics.Evidence, "--set", "kafka.topics.flags=" + k.Topics.Flags,
		"--set", "kafka.topics.alerts=" + k.Topics.Alerts, "--set", "kafka.group=" + k.Group,
		"--set", "kafka.intake_group=" + k.IntakeGroup, "--set", "kafka.busy_after=1s", "--set", "kafka.sync_timeout=2s"}, more...)
}

func (c *cluster) start(ctx context.Context, name string, args []string) *clusterlab.Process {
	c.t.Helper()
	p, err := clusterlab.StartProcess(name, helperCommand(ctx, nil, args), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.procs = append(c.procs, p)
	if err := p.WaitReady(ctx); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *cluster) correlator(ctx context.Context, name string, hosts string) *clusterlab.Process {
	return c.start(ctx, name, c.args("correlator", name, "--hosts", hosts, "--alerts", "-", "--alerts-pretty", "false",
		"--set", "kafka.transactional_id=kwtest-"+name+"-"+c.cfg.Group))
}

// alerts reads the alert topic (read_committed) until want records or the
// deadline, then a moment more so that a duplicate would show.
func (c *cluster) alerts(want int, timeout time.Duration) map[string][]clusterlab.Alert {
	c.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.cfg.Brokers...), kgo.ConsumeTopics(c.cfg.Topics.Alerts),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	got := map[string][]clusterlab.Alert{}
	n := 0
	deadline := time.Now().Add(timeout)
	extra := time.Time{}
	for time.Now().Before(deadline) && (extra.IsZero() || time.Now().Before(extra)) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			as, err := clusterlab.ParseAlerts(r.Value)
			if err != nil {
				c.t.Error(err)
				return
			}
			for _, a := range as {
				got[a.ID] = append(got[a.ID], a)
				n++
			}
		})
		if n >= want && extra.IsZero() {
			extra = time.Now().Add(3 * time.Second)
		}
	}
	return got
}

// kcatCount counts the alert topic's committed records with kcat
// (librdkafka), an independent client.
func (c *cluster) kcatCount(kcat string) map[string]int {
	c.t.Helper()
	out, err := exec.Command(kcat, "-b", strings.Join(c.cfg.Brokers, ","), "-C", "-t", c.cfg.Topics.Alerts, "-o", "beginning", "-e", "-q",
		"-X", "isolation.level=read_committed", "-f", "%k\n").CombinedOutput()
	if err != nil {
		c.t.Fatalf("kcat: %v: %s", err, out)
	}
	m := map[string]int{}
	for _, k := range strings.Fields(string(out)) {
		m[k]++
	}
	return m
}

func writeHosts(t *testing.T, attacks []clusterAttack) string {
	t.Helper()
	var b strings.Builder
	for _, a := range attacks {
		fmt.Fprintf(&b, "%s %s\n", a.dst, strings.ToLower(a.computer()))
	}
	p := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Case 2 of issue 14: three correlators share the evidence; one is killed
// with SIGKILL mid-stream (a transaction open, partitions holding knocks
// whose handshakes have not come yet) while the evidence keeps coming.
// Every expected alert is on the alert topic exactly once (read by kgo and
// by kcat, read_committed): the killed member's open transaction is
// aborted, its partitions move, and their new owner rebuilds them without
// sending again what was committed.
func TestClusterCorrelatorKill9(t *testing.T) {
	kcat := testenv.RequireTool(t, "kcat", "kcat")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, "")
	const rounds, per = 8, 30
	t0 := time.Now().Add(-3 * time.Minute).Truncate(time.Second)
	var attacks []clusterAttack
	for i := range rounds * per {
		attacks = append(attacks, newClusterAttack(i, t0.Add(time.Duration(i)*100*time.Millisecond)))
	}
	hosts := writeHosts(t, attacks)
	var corr []*clusterlab.Process
	for i := 1; i <= 3; i++ {
		corr = append(corr, c.correlator(ctx, "correlator-"+strconv.Itoa(i), hosts))
	}
	p, err := scaleout.NewProducer(ctx, c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(10 * time.Second)
	feed := func(items ...evidence.Item) {
		t.Helper()
		if err := p.Append(ctx, items); err != nil {
			t.Fatal(err)
		}
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Round r: the knocks and changes of batch r, the handshakes of batch
	// r-1, so every partition holds state waiting for its handshakes.
	victim := corr[1]
	for r := 0; r <= rounds; r++ {
		var items []evidence.Item
		if r < rounds {
			for _, a := range attacks[r*per : (r+1)*per] {
				items = append(items, a.knock(), a.change())
			}
		}
		if r > 0 {
			for _, a := range attacks[(r-1)*per : r*per] {
				items = append(items, a.handshake())
			}
		}
		feed(items...)
		if r == 2 {
			if _, err := victim.WaitMetric(ctx, 1, "knockwatch_correlator_transactions_total", `outcome="committed"`); err != nil {
				t.Fatal(err)
			}
			if _, err := victim.WaitMetric(ctx, 1, "knockwatch_correlator_alerts_total", `confidence="high"`); err != nil {
				t.Fatal(err)
			}
			victim.Kill()
			t.Logf("killed %s (pid %d) with SIGKILL after round %d", victim.Name, victim.Pid(), r)
		}
		time.Sleep(300 * time.Millisecond)
	}
	got := c.alerts(len(attacks), 2*time.Minute)
	missing, dup := 0, 0
	for _, a := range attacks {
		switch n := len(got[a.id()]); {
		case n == 0:
			missing++
		case n > 1:
			dup++
			t.Errorf("alert %s (attack %d) on the topic %d times", a.id(), a.i, n)
		default:
			if got[a.id()][0].Confidence != "high" {
				t.Errorf("attack %d: %+v", a.i, got[a.id()][0])
			}
		}
		delete(got, a.id())
	}
	if missing > 0 || dup > 0 || len(got) > 0 {
		t.Fatalf("%d of %d alerts missing, %d duplicated, %d unexpected", missing, len(attacks), dup, len(got))
	}
	byKcat := c.kcatCount(kcat)
	if len(byKcat) != len(attacks) {
		t.Errorf("kcat read %d distinct alert keys, want %d", len(byKcat), len(attacks))
	}
	for k, n := range byKcat {
		if n != 1 {
			t.Errorf("kcat read alert %s %d times", k, n)
		}
	}
	var rebuilt float64
	for _, s := range []*clusterlab.Process{corr[0], corr[2]} {
		v, err := s.Metric(ctx, "knockwatch_correlator_rebuild_total", `what="alerts"`)
		if err != nil {
			t.Fatal(err)
		}
		rebuilt += v
	}
	if rebuilt == 0 {
		t.Error("no survivor recomputed an alert the killed one had committed: its partitions did not move with their history")
	}
}

// Case 3 of issue 14: every broker stopped, then started again. While
// they are down the intake pushes back (HTTP 429 after a first 503, no
// Beats ACK) and nothing it acknowledged is lost; when they are back the
// forwarders' retries and the sensors' buffered records go through and
// every alert comes out once.
//
// Against a real cluster (KNOCKWATCH_KAFKA_BROKERS) the outage needs
// KNOCKWATCH_KAFKA_STOP and KNOCKWATCH_KAFKA_START, shell commands that
// stop and start every broker (e.g. "systemctl stop kafka"); without them
// the test is skipped there.
func TestClusterBrokerOutage(t *testing.T) {
	if os.Getenv("KNOCKWATCH_KAFKA_BROKERS") != "" && (os.Getenv("KNOCKWATCH_KAFKA_STOP") == "" || os.Getenv("KNOCKWATCH_KAFKA_START") == "") {
		t.Skip("a real cluster is stopped only with KNOCKWATCH_KAFKA_STOP and KNOCKWATCH_KAFKA_START")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, t.TempDir())
	t0 := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	attacks := []clusterAttack{newClusterAttack(1, t0), newClusterAttack(2, t0.Add(time.Second)), newClusterAttack(3, t0.Add(2*time.Second))}
	hosts := writeHosts(t, attacks)
	c.correlator(ctx, "correlator-1", hosts)
	in := c.start(ctx, "intake", c.args("intake", "intake", "--hosts", hosts, "--events-http", "127.0.0.1:0", "--events-beats", "127.0.0.1:0"))
	httpAddr := in.Find(regexp.MustCompile(`"msg":"http intake listening".*?"addr":"([0-9.:]+)"`))
	beatsAddr := in.Find(regexp.MustCompile(`"msg":"beats intake listening".*?"addr":"([0-9.:]+)"`))
	if httpAddr == nil || beatsAddr == nil {
		t.Fatalf("listener addresses not logged:\n%s", in.Logs())
	}
	p, err := scaleout.NewProducer(ctx, c.cfg) // the sensors' side
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(10 * time.Second)
	post := func(body []byte) int {
		resp, err := http.Post("http://"+httpAddr[1]+"/v1/events", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Attack 1 before the outage.
	if err := p.Append(ctx, []evidence.Item{attacks[0].knock()}); err != nil {
		t.Fatal(err)
	}
	if code := post(attacks[0].event(t)); code != http.StatusAccepted {
		t.Fatalf("POST before the outage: %d", code)
	}
	if err := p.Append(ctx, []evidence.Item{attacks[0].handshake()}); err != nil {
		t.Fatal(err)
	}
	if got := c.alerts(1, time.Minute); len(got[attacks[0].id()]) != 1 {
		t.Fatalf("before the outage: %v", got)
	}

	c.stopBrokers()
	t.Log("every broker stopped")
	// The sensors keep publishing (buffered); the forwarders keep sending.
	if err := p.Append(ctx, []evidence.Item{attacks[1].knock(), attacks[2].knock()}); err != nil {
		t.Fatal(err)
	}
	codes := map[int]int{}
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end) && codes[http.StatusTooManyRequests] < 2; {
		code := post(attacks[1].event(t))
		codes[code]++
		if code == http.StatusAccepted {
			t.Fatal("an event was acknowledged (202) while no broker could store it")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("HTTP answers during the outage %v: want 429 (backpressure)", codes)
	}
	beats, err := lumber.Dial(beatsAddr[1], lumber.JSONEncoder(func(v any) ([]byte, error) { return v.([]byte), nil }), lumber.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer beats.Close()
	if err := beats.Send([]any{attacks[2].event(t)}); err != nil {
		t.Fatal(err)
	}
	var acked uint32
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); {
		if n, err := beats.ReceiveACK(); err == nil && n > acked {
			acked = n
		}
	}
	if acked != 0 {
		t.Fatalf("Beats ACK %d while no broker could store the event", acked)
	}

	c.startBrokers()
	t.Log("brokers started again")
	// The Beats client waits for its ACK (keepalives meanwhile); the HTTP
	// forwarder retries until 202.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		end := time.Now().Add(time.Minute)
		for time.Now().Before(end) {
			if n, err := beats.ReceiveACK(); err == nil && n >= 1 {
				acked = n
				return
			}
		}
	}()
	for end := time.Now().Add(time.Minute); ; {
		if code := post(attacks[1].event(t)); code == http.StatusAccepted {
			break
		}
		if time.Now().After(end) {
			t.Fatal("HTTP never accepted after the brokers came back")
		}
		time.Sleep(300 * time.Millisecond)
	}
	wg.Wait()
	if acked != 1 {
		t.Fatalf("the Beats batch was never acknowledged after the brokers came back")
	}
	if err := p.Append(ctx, []evidence.Item{attacks[1].handshake(), attacks[2].handshake()}); err != nil {
		t.Fatal(err)
	}
	got := c.alerts(3, 2*time.Minute)
	for _, a := range attacks {
		if n := len(got[a.id()]); n != 1 {
			t.Errorf("attack %d: %d alert records, want 1", a.i, n)
		}
	}
	if len(got) != 3 {
		t.Errorf("%d distinct alerts, want 3", len(got))
	}
	if v, err := in.Metric(ctx, "knockwatch_kafka_refused_total", `reason="busy"`); err != nil || v == 0 {
		t.Errorf("busy refusals not counted: %v %v", v, err)
	}
}

// The raw topics: a forwarder's Kafka output (here kcat, librdkafka, as
// Winlogbeat output.kafka) writes Winlogbeat JSON; the intake role reads
// it, binds it to the topic's forwarder identity, and the alert follows.
// Records for a host the forwarder may not speak for are refused.
func TestClusterRawTopic(t *testing.T) {
	kcat := testenv.RequireTool(t, "kcat", "kcat")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, "")
	raw := "kwtest.winlogbeat." + c.cfg.Group[len("kwtest-correlators-"):]
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := kadm.NewClient(cl).CreateTopic(ctx, 3, -1, nil, raw); err != nil || r.Err != nil {
		t.Fatal(err, r.Err)
	}
	cl.Close()
	t0 := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	good, bound := newClusterAttack(7, t0), newClusterAttack(8, t0)
	hosts := writeHosts(t, []clusterAttack{good, bound})
	c.correlator(ctx, "correlator-1", hosts)
	c.start(ctx, "intake", c.args("intake", "intake", "--hosts", hosts,
		"--set", "kafka.topics.raw=[{topic: "+raw+", identity: wec01}]",
		"--set", "listeners.forwarders=[{name: wec01, token: wec01, hosts: ['"+strings.ToLower(good.computer())+"']}]"))
	p, err := scaleout.NewProducer(ctx, c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(10 * time.Second)
	if err := p.Append(ctx, []evidence.Item{good.knock(), bound.knock()}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kcat, "-b", strings.Join(c.cfg.Brokers, ","), "-P", "-t", raw)
	cmd.Stdin = bytes.NewReader(append(append(good.event(t), '\n'), append(bound.event(t), '\n')...))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v: %s", err, out)
	}
	if err := p.Append(ctx, []evidence.Item{good.handshake(), bound.handshake()}); err != nil {
		t.Fatal(err)
	}
	got := c.alerts(1, time.Minute)
	if len(got[good.id()]) != 1 || len(got) != 1 {
		t.Fatalf("alerts %v: want only attack %d's (the forwarder may not speak for %s)", got, good.i, bound.computer())
	}
}
